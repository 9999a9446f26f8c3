"""Every error the engine raises, under one root: `EngineError`.

Three branches, by who must act:

- `SDKUsageError` — the user's code or input is wrong (bad decorator arguments, an application
  input that does not match the type hints, a malformed config). Raised early; the CLI prints
  one line and exits 2.
- `RequestFailed` — a run did not succeed: a function raised (`FunctionError`), ran past its
  timeout (`FunctionTimeout`), was killed for memory (`OutOfMemory`), was cancelled
  (`RequestCancelled`), reached a limit of its budget (`BudgetExceeded`), or a dependency
  failed. `RequestFailed` carries the run id and the failing call. The CLI exits 1.
- `InfrastructureError` — the engine could not do its job (Docker unreachable, image missing,
  an executor that would not start). Says what to do about it.

Every exception name of the Tensorlake Applications SDK exists here, with its constructor, so
that ported code's `except` clauses and `raise` statements keep working (docs/tensorlake.md):
`TensorlakeError` and `TensorlakeException` are `EngineError` itself; `RequestFailed`,
`RequestError`, `FunctionError` and `SDKUsageError` mean what they mean there; `TimeoutError`
(an operation's own timeout, e.g. `Future.result(timeout=)`) subclasses the builtin
`TimeoutError` as well, so `except TimeoutError` catches it either way. Modules of the engine
import it as `EngineTimeoutError` and never shadow the builtin; a call that ran past its
function's `timeout` is a different failure, `FunctionTimeout`.
"""

from __future__ import annotations

import builtins


class EngineError(Exception):
    """Root of every error raised by the engine."""


# Tensorlake's two root names. One class: `except TensorlakeError` catches every engine error.
TensorlakeError = EngineError
TensorlakeException = EngineError


class TimeoutError(EngineError, builtins.TimeoutError):  # noqa: A001 - Tensorlake's name, on purpose
    """An operation's own timeout passed first (`Future.result(timeout=)`); the work goes on.

    Also a builtin `TimeoutError`. Constructed with no argument, as in Tensorlake, it says
    "Timed out.".
    """

    def __init__(self, message: str = "Timed out.") -> None:
        super().__init__(message)


class RequestNotFinished(EngineError):
    """A request's output was asked for before the request finished."""

    def __init__(self, message: str = "Request is still in progress, its output is not ready yet.") -> None:
        super().__init__(message)


# --- usage -----------------------------------------------------------------------------------


class SDKUsageError(EngineError):
    """The engine was used wrongly: fix the code, the input or the config."""


class AccessDenied(SDKUsageError):
    """A function asked the engine for something outside its own run: another run's calls,
    state or values, or futures it did not create. Each executor may reach only the calls it is
    running, their children and the values they were given; the scheduler refused the rest
    (and logged it)."""


class ConfigError(SDKUsageError):
    """The YAML config is malformed. The message names the file, the key and what was expected."""


class SerializationError(SDKUsageError):
    """A value (an argument, a result, a request's input or output) could not be serialised."""


class InputError(SerializationError):
    """An application's input does not match its type hints.

    A `SerializationError`, as in Tensorlake, where an input that does not fit its type hint is
    one that could not be serialised as that type: `except SerializationError` around
    `run_local_application` catches it in both.
    """


class DeserializationError(SDKUsageError):
    """A value (an argument, a result, a request's input or output) could not be deserialised."""


# --- run failures ----------------------------------------------------------------------------


class RequestFailed(EngineError):
    """A run (a request) finished without a result.

    `run_id` names the run; `function` and `call_id` the call whose failure ended it, when
    known; `traceback` is the remote traceback text of a function error.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        function: str | None = None,
        call_id: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.function = function
        self.call_id = call_id
        self.traceback = traceback

    def __reduce__(self):  # keep keyword fields across pickling (executor <-> scheduler)
        return (
            _rebuild,
            (
                type(self),
                self.message,
                {
                    "run_id": self.run_id,
                    "function": self.function,
                    "call_id": self.call_id,
                    "traceback": self.traceback,
                },
            ),
        )


def _rebuild(cls, message, fields):
    return cls(message, **fields)


class FunctionError(RequestFailed):
    """A function raised an exception. `traceback` holds the remote traceback."""


class ModelOutputError(FunctionError):
    """A model's reply could not be used (`engine.ai`): empty, or not a valid instance of the
    schema asked for. Raised inside the calling function, which fails and is retried under its
    `Retries` like any other exception: sampling makes the next answer different."""


class RequestError(RequestFailed):
    """Raised by user code to fail the whole request on purpose, with no retries.

    Not a `FunctionError`, as in Tensorlake: a caller's `except FunctionError` does not swallow a
    callee's decision to fail the request (it can still `except RequestError`).
    """


class FunctionTimeout(RequestFailed):
    """A call ran longer than its function's `timeout`; its executor was replaced."""


class OutOfMemory(RequestFailed):
    """A call's executor was killed for exceeding its function's memory limit."""


class ExecutorLost(RequestFailed):
    """A call's executor died mid-call (killed, crashed) for a reason other than memory."""


class RequestCancelled(RequestFailed):
    """The run was cancelled."""


class DependencyFailed(RequestFailed):
    """A call never ran because a future it depended on failed."""


class SignalTimeout(RequestFailed):
    """A signal future (`engine.signal(name, timeout=...)`) waited `timeout` seconds from its
    creation and no signal of its name arrived. Never retried; `function` is the signal's name.
    Resuming the run waits again, from the same start, so resume once the signal is sent."""


class BudgetExceeded(RequestFailed):
    """The run reached a limit of its budget and failed (docs/configuration.md#budgets).

    `limit` names it (`"max_calls"`, `"max_depth"` or `"max_duration"`), `value` is its value
    in the run's budget; `function` and `call_id` name the call that crossed it: the call whose
    new future would have exceeded `max_calls` or `max_depth` (that future was refused and
    never started), or the run's root call for `max_duration`. No call of the run starts after
    it; `engine resume RUN_ID --budget ...` with a raised limit continues the run.
    """

    def __init__(
        self,
        message: str,
        *,
        limit: str = "",
        value: float | None = None,
        run_id: str | None = None,
        function: str | None = None,
        call_id: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, function=function, call_id=call_id, traceback=traceback)
        self.limit = limit
        self.value = value

    def __reduce__(self):  # keep limit and value across pickling, as the other fields
        rebuild, (cls, message, fields) = super().__reduce__()
        return rebuild, (cls, message, {**fields, "limit": self.limit, "value": self.value})


# --- infrastructure --------------------------------------------------------------------------


class InfrastructureError(EngineError):
    """The engine could not do its job. The message says what to do."""


class DockerUnavailable(InfrastructureError):
    """No Docker engine answers."""


class ImageMissing(InfrastructureError):
    """A function's image is not built. Run `engine image build FILE.py`."""


class ImageBuildError(InfrastructureError):
    """An image build failed. The message holds the failing step's output."""


class PythonVersionMismatch(InfrastructureError):
    """The runtime image's Python minor version differs from the engine's (cloudpickle needs both
    sides to match)."""


class InternalError(InfrastructureError):
    """The engine itself went wrong (a bug, or a state it cannot explain)."""


class RemoteAPIError(InfrastructureError):
    """An engine server answered an API call with an error. `status_code` is its HTTP status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code

    def __str__(self) -> str:
        return f"{super().__str__()} (Status Code: {self.status_code})"

    def __reduce__(self):  # two positional arguments: pickle them both
        return (type(self), (self.status_code, self.args[0] if self.args else ""))


class RunNotFound(SDKUsageError):
    """No run with that id in the state directory."""


__all__ = [
    "AccessDenied",
    "BudgetExceeded",
    "ConfigError",
    "DependencyFailed",
    "DeserializationError",
    "DockerUnavailable",
    "EngineError",
    "ExecutorLost",
    "FunctionError",
    "FunctionTimeout",
    "ImageBuildError",
    "ImageMissing",
    "InfrastructureError",
    "InputError",
    "InternalError",
    "ModelOutputError",
    "OutOfMemory",
    "PythonVersionMismatch",
    "RemoteAPIError",
    "RequestCancelled",
    "RequestError",
    "RequestFailed",
    "RequestNotFinished",
    "RunNotFound",
    "SDKUsageError",
    "SerializationError",
    "SignalTimeout",
    "TensorlakeError",
    "TensorlakeException",
    "TimeoutError",
]
