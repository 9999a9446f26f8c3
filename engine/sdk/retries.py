"""`Retries`: how often a failed call runs again, and how long it waits between attempts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import SDKUsageError


class Retries(BaseModel):
    """Retry policy of a function (or of a whole application, as its functions' default).

    Attempt n (n = 1 for the first retry) waits `min(initial_delay * delay_multiplier**(n-1),
    max_delay)` seconds. `RequestError` is never retried; every other failure (the function
    raised, timed out, ran out of memory, lost its executor) is.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_retries: int = Field(default=0, ge=0, le=100)
    initial_delay: float = Field(default=1.0, ge=0)
    max_delay: float = Field(default=60.0, ge=0)
    delay_multiplier: float = Field(default=2.0, ge=1.0)

    def __init__(self, max_retries: int = 0, **kwargs: float) -> None:
        try:
            super().__init__(max_retries=max_retries, **kwargs)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "Retries"
            raise SDKUsageError(f"Retries({where}=...): {err['msg']}") from None

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        if retry_number < 1:
            return 0.0
        return min(self.initial_delay * self.delay_multiplier ** (retry_number - 1), self.max_delay)
