"""Starting applications from Python: `run_local_application` and the `Request` it returns.

`run_local_application(app, *args, **kwargs)` runs a whole request on this machine — the
scheduler in this process, every function in executors of its own — and returns when it ends.
The backend and state directory come from `ENGINE_BACKEND` / `ENGINE_STATE_DIR`, else
`engine.yaml`, else the defaults (docker when a Docker engine answers, `.engine/`).
"""

from __future__ import annotations

from typing import Any

from engine.errors import SDKUsageError
from engine.sdk.function import Function, registered


class Request:
    """A finished request: its `id`, and `output()` — the value, or the typed failure raised."""

    def __init__(self, request_id: str, status: str, output: Any, error: Exception | None) -> None:
        self._id = request_id
        self.status = status
        self._output = output
        self._error = error

    @property
    def id(self) -> str:
        return self._id

    def output(self) -> Any:
        """The application's return value. Raises `RequestFailed` (its subclass says why:
        `FunctionError`, `FunctionTimeout`, `OutOfMemory`, `RequestError`, ...) on failure."""
        if self._error is not None:
            raise self._error
        return self._output

    def __repr__(self) -> str:
        return f"<Request {self._id} {self.status}>"


def run_local_application(application: Function[..., Any] | str, *args: Any, **kwargs: Any) -> Request:
    """Run `application` with the given input to completion and return its `Request`.

    Raises `SDKUsageError` when `application` is not an `@application()` or the input does not
    match its type hints; a failed run does not raise here but from `Request.output()`.
    """
    from engine.app import app_spec_from_function, validate_input
    from engine.runner import execute

    fn = registered(application) if isinstance(application, str) else application
    if not isinstance(fn, Function):
        raise SDKUsageError(f"no @function() named {application!r}")
    if not fn.is_application:
        raise SDKUsageError(f"{fn.name} is not an application: put @application() above @function()")
    bound = validate_input(fn, args, kwargs)
    app = app_spec_from_function(fn)
    outcome = execute(app, kwargs=bound)
    return Request(outcome.run_id, outcome.status, outcome.result, outcome.error())
