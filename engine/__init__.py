"""engine: a durable workflow engine for multi-agent and data-parallel Python.

Decorate functions with `@function()`, mark an entry point with `@application()`, create
futures with `fn.future(...)` and return them as tail calls. Each function runs in executors of
its own (Docker containers, or local processes), every finished call is checkpointed, and a
failed or interrupted run resumes without redoing finished work.

The public surface is this module and `engine.errors`; everything else is implementation. The
names match the Tensorlake Applications SDK where they overlap (docs/tensorlake.md lists each).
"""

from typing import TYPE_CHECKING

from engine.errors import (
    BudgetExceeded,
    DependencyFailed,
    DeserializationError,
    EngineError,
    ExecutorLost,
    FunctionError,
    FunctionTimeout,
    InfrastructureError,
    InternalError,
    ModelOutputError,
    OutOfMemory,
    RemoteAPIError,
    RequestCancelled,
    RequestError,
    RequestFailed,
    RequestNotFinished,
    SDKUsageError,
    SerializationError,
    SignalTimeout,
    TensorlakeError,
    TensorlakeException,
    TimeoutError,  # noqa: A004 - Tensorlake's name; also a builtin TimeoutError (engine.errors)
)

if TYPE_CHECKING:  # what type checkers see; at run time each name is imported on first use
    from engine.client import Request, run_local_application, run_remote_application
    from engine.sdk.ai import ai, ai_model
    from engine.sdk.context import FunctionProgress, RequestContext, RequestState
    from engine.sdk.file import File
    from engine.sdk.function import ApplicationCapability, Function, application, function
    from engine.sdk.future import RETURN_WHEN, Future
    from engine.sdk.http import Headers, HttpBody
    from engine.sdk.image import Image
    from engine.sdk.logger import Logger
    from engine.sdk.retries import Retries
    from engine.sdk.signal import signal
    from engine.sdk.stateful import cls

# The SDK's names, by module: imported when first used (`from engine import function` does), so
# that `import engine.cli` (whose `engine run` starts its first executor before it loads the
# application) and `import engine.executor` do not pay for all of them first.
_LAZY = {
    "Request": "engine.client", "run_local_application": "engine.client",
    "run_remote_application": "engine.client",
    "ai": "engine.sdk.ai", "ai_model": "engine.sdk.ai",
    "FunctionProgress": "engine.sdk.context", "RequestContext": "engine.sdk.context",
    "RequestState": "engine.sdk.context",
    "File": "engine.sdk.file",
    "ApplicationCapability": "engine.sdk.function", "Function": "engine.sdk.function",
    "application": "engine.sdk.function", "function": "engine.sdk.function",
    "RETURN_WHEN": "engine.sdk.future", "Future": "engine.sdk.future",
    "Headers": "engine.sdk.http", "HttpBody": "engine.sdk.http",
    "Image": "engine.sdk.image",
    "Logger": "engine.sdk.logger",
    "Retries": "engine.sdk.retries",
    "signal": "engine.sdk.signal",
    "cls": "engine.sdk.stateful",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "RETURN_WHEN",
    "ApplicationCapability",
    "BudgetExceeded",
    "DependencyFailed",
    "DeserializationError",
    "EngineError",
    "ExecutorLost",
    "File",
    "Function",
    "FunctionError",
    "FunctionProgress",
    "FunctionTimeout",
    "Future",
    "Headers",
    "HttpBody",
    "Image",
    "InfrastructureError",
    "InternalError",
    "Logger",
    "ModelOutputError",
    "OutOfMemory",
    "RemoteAPIError",
    "Request",
    "RequestCancelled",
    "RequestContext",
    "RequestError",
    "RequestFailed",
    "RequestNotFinished",
    "RequestState",
    "Retries",
    "SDKUsageError",
    "SerializationError",
    "SignalTimeout",
    "TensorlakeError",
    "TensorlakeException",
    "TimeoutError",
    "ai",
    "ai_model",
    "application",
    "cls",
    "function",
    "run_local_application",
    "run_remote_application",
    "signal",
]
