"""`RequestContext`: what a function knows of the request it serves, with Tensorlake's interface.

    ctx = RequestContext.get()
    ctx.request_id                      # the run's id
    ctx.headers["x-user"]               # the submitting HTTP request's headers (Headers)
    ctx.state.set("seen", 3)            # durable key/value shared by the request's functions
    ctx.state.get("seen", default=0)
    ctx.progress.update(3, 10, "parsed page 3")
    ctx.metrics.counter("pages")        # counters add up; timers record durations (seconds)
    ctx.metrics.timer("ocr", 1.25)

Inside a call, everything goes to the scheduler through the current runtime (`engine.sdk.
runtime`; in an executor, `engine.executor.runtime`): state and progress are unary calls answered
from the scheduler's memory and written through to its store; metrics are kept in the call and
sent with its outcome. What the scheduler guarantees — ordering of concurrent writers,
durability, what `engine resume` keeps — is written in `engine.scheduler.context`.

Where this differs from Tensorlake (docs/tensorlake.md): `RequestContext.get()` also works in a
thread the function starts while it is the only call running in its executor (Tensorlake refuses
every thread it did not start); a process forked or spawned inside a call gets `SDKUsageError`
(the executor's connection is not the child's to use). Mistakes in arguments raise
`SDKUsageError` as there: a key that is not a string, a progress figure that is not a finite
number of at least zero, a counter that is not an int.
"""

from __future__ import annotations

import math
import os
from typing import Any

from engine.errors import SDKUsageError
from engine.sdk import runtime as sdk_runtime
from engine.sdk.http import Headers


class RequestState:
    """The request's key/value state (`RequestContext.state`). Values are any picklable objects."""

    def __init__(self, ctx: sdk_runtime.CallContext) -> None:
        self._ctx = ctx

    def set(self, key: str, value: Any) -> None:
        """Set `key` to `value`. Raises `SerializationError` when the value does not pickle."""
        _check_key(key)
        self._ctx.runtime.set_state(key, value)

    def get(self, key: str, default: Any | None = None) -> Any | None:
        """The value of `key`, or `default` when it was never set. Raises
        `DeserializationError` when the stored value does not unpickle here."""
        _check_key(key)
        found, value = self._ctx.runtime.get_state(key)
        return value if found else default

    def __reduce__(self) -> Any:
        raise SDKUsageError(_NO_PICKLE.format("RequestState"))


class FunctionProgress:
    """Progress of the current call (`RequestContext.progress`): shown on the call in the
    dashboard and `engine show`, and streamed on the run's events."""

    def __init__(self, ctx: sdk_runtime.CallContext) -> None:
        self._ctx = ctx

    def update(self, current: int | float, total: int | float, message: str | None = None,
               attributes: dict[str, str] | None = None) -> None:
        # Tensorlake's messages, word for word: ported code may match on them.
        if not _non_negative_number(current):
            raise SDKUsageError(f"'current' needs to be a number, got: {current}")
        if not _non_negative_number(total):
            raise SDKUsageError(f"'total' needs to be a number, got: {total}")
        if message is not None and not isinstance(message, str):
            raise SDKUsageError(f"'message' needs to be a string, got: {message}")
        if attributes is not None:
            if not isinstance(attributes, dict):
                raise SDKUsageError(
                    f"'attributes' needs to be a dictionary of string key/value pairs, got: {attributes}")
            for key, value in attributes.items():
                if not isinstance(key, str):
                    raise SDKUsageError(f"'attributes' key {key} needs to be a string")
                if not isinstance(value, str):
                    raise SDKUsageError(f"'attributes' value {value} for key '{key}' needs to be a string")
        self._ctx.runtime.progress(float(current), float(total), message, attributes)

    def __reduce__(self) -> Any:
        raise SDKUsageError(_NO_PICKLE.format("FunctionProgress"))


class RequestMetrics:
    """Counters and timers of the current call (`RequestContext.metrics`), summed per call and
    shown in `engine show --json`, the dashboard and the server's `/metrics`."""

    def __init__(self, ctx: sdk_runtime.CallContext) -> None:
        self._ctx = ctx

    def timer(self, name: str, value: int | float) -> None:
        """Record one duration of `value` seconds under `name`."""
        if not isinstance(name, str):
            raise SDKUsageError(f"Timer name must be a string, got: {name}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SDKUsageError(f"Timer value must be a finite number, got: {value}")
        self._ctx.metrics.timer(name, float(value))

    def counter(self, name: str, value: int = 1) -> None:
        """Add `value` to the counter `name` (created at 0)."""
        if not isinstance(name, str):
            raise SDKUsageError(f"Counter name must be a string, got: {name}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise SDKUsageError(f"Counter value must be an int, got: {value}")
        self._ctx.metrics.counter(name, value)

    def __reduce__(self) -> Any:
        raise SDKUsageError(_NO_PICKLE.format("RequestMetrics"))


class RequestContext:
    """The context of the request the current call serves. Get it with `RequestContext.get()`."""

    def __init__(self, ctx: sdk_runtime.CallContext) -> None:
        self._ctx = ctx
        self._headers: Headers | None = None

    @classmethod
    def get(cls) -> RequestContext:
        """The running request's context. Raises `SDKUsageError` outside a call."""
        ctx = sdk_runtime.current_context()
        if ctx is None:
            raise SDKUsageError(
                "RequestContext.get() works only inside a function's call (or a thread it "
                "started): there is no request here")
        if ctx.pid != os.getpid():
            raise SDKUsageError(
                "RequestContext.get() cannot be used in a process forked inside a call (a "
                "multiprocessing worker, os.fork): read what the child needs in the function "
                "and pass it to the child")
        return cls(ctx)

    @property
    def request_id(self) -> str:
        return self._ctx.run_id

    @property
    def headers(self) -> Headers:
        """The submitting HTTP request's headers, without credentials (`Authorization`,
        `Cookie`) and connection headers; empty when the run was not submitted over HTTP."""
        if self._headers is None:
            self._headers = Headers(self._ctx.runtime.headers())
        return self._headers

    @property
    def state(self) -> RequestState:
        return RequestState(self._ctx)

    @property
    def progress(self) -> FunctionProgress:
        return FunctionProgress(self._ctx)

    @property
    def metrics(self) -> RequestMetrics:
        return RequestMetrics(self._ctx)

    def __reduce__(self) -> Any:
        raise SDKUsageError(_NO_PICKLE.format("RequestContext"))

    def __repr__(self) -> str:
        return f"<RequestContext {self._ctx.run_id} call {self._ctx.call_id}>"


_NO_PICKLE = ("a {} belongs to one call and cannot be pickled or sent to another process: "
              "call RequestContext.get() where it is needed")


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise SDKUsageError(f"State key must be a string, got: {key}")


def _non_negative_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        return False


__all__ = ["FunctionProgress", "RequestContext", "RequestMetrics", "RequestState"]
