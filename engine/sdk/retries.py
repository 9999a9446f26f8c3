"""`Retries`: how often a failed call runs again, and how long it waits between attempts."""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import SDKUsageError


@dataclass(frozen=True)
class Retries:
    """Retry policy of a function (or of a whole application, as its functions' default).

    Attempt n (n = 1 for the first retry) waits `min(initial_delay * delay_multiplier**(n-1),
    max_delay)` seconds. `RequestError` is never retried; every other failure (the function
    raised, timed out, ran out of memory, lost its executor) is. Raises `SDKUsageError` for
    values out of range.
    """

    max_retries: int = 0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    delay_multiplier: float = 2.0

    def __post_init__(self) -> None:
        check_int("Retries", "max_retries", self.max_retries, 0, 100)
        check_number("Retries", "initial_delay", self.initial_delay, minimum=0)
        check_number("Retries", "max_delay", self.max_delay, minimum=0)
        check_number("Retries", "delay_multiplier", self.delay_multiplier, minimum=1.0)

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        if retry_number < 1:
            return 0.0
        return min(self.initial_delay * self.delay_multiplier ** (retry_number - 1), self.max_delay)


def check_int(owner: str, name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SDKUsageError(f"{owner}: {name} must be a whole number, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise SDKUsageError(f"{owner}: {name} must be {bound}, got {value}")


def check_number(owner: str, name: str, value: object, *, minimum: float | None = None,
                 above: float | None = None, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SDKUsageError(f"{owner}: {name} must be a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise SDKUsageError(f"{owner}: {name} must be at least {minimum:g}, got {value:g}")
    if above is not None and value <= above:
        raise SDKUsageError(f"{owner}: {name} must be greater than {above:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise SDKUsageError(f"{owner}: {name} must be at most {maximum:g}, got {value:g}")
