"""Every error the engine raises, under one root: `EngineError`.

Three branches, by who must act:

- `SDKUsageError` — the user's code or input is wrong (bad decorator arguments, an application
  input that does not match the type hints, a malformed config). Raised early; the CLI prints
  one line and exits 2.
- `RequestFailed` — a run did not succeed: a function raised (`FunctionError`), ran past its
  timeout (`FunctionTimeout`), was killed for memory (`OutOfMemory`), was cancelled
  (`RequestCancelled`), or a dependency failed. `RequestFailed` carries the run id and the
  failing call. The CLI exits 1.
- `InfrastructureError` — the engine could not do its job (Docker unreachable, image missing,
  an executor that would not start). Says what to do about it.

Names shared with the Tensorlake SDK (`RequestFailed`, `RequestError`, `FunctionError`,
`SDKUsageError`, `TimeoutError` is deliberately *not* shadowed: ours is `FunctionTimeout`)
mean the same thing here, so ported code's `except` clauses keep working.
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of every error raised by the engine."""


# --- usage -----------------------------------------------------------------------------------


class SDKUsageError(EngineError):
    """The engine was used wrongly: fix the code, the input or the config."""


class ConfigError(SDKUsageError):
    """The YAML config is malformed. The message names the file, the key and what was expected."""


class InputError(SDKUsageError):
    """An application's input does not match its type hints."""


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


class RequestError(FunctionError):
    """Raised by user code to fail the whole request on purpose, with no retries."""


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


class RunNotFound(SDKUsageError):
    """No run with that id in the state directory."""


__all__ = [
    "ConfigError",
    "DependencyFailed",
    "DockerUnavailable",
    "EngineError",
    "ExecutorLost",
    "FunctionError",
    "FunctionTimeout",
    "ImageBuildError",
    "ImageMissing",
    "InfrastructureError",
    "InputError",
    "OutOfMemory",
    "PythonVersionMismatch",
    "RequestCancelled",
    "RequestError",
    "RequestFailed",
    "RunNotFound",
    "SDKUsageError",
]
