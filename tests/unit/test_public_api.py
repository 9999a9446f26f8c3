"""The public surface is pinned, and the SDK layer stays free of the runtime's layers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import engine
import engine.errors

PUBLIC = [
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

ERRORS = [
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

# The exception names of Tensorlake's `tensorlake.applications` interface (0.5.x), every one of
# which a ported application may import from `engine`.
TENSORLAKE_EXCEPTIONS = [
    "DeserializationError", "FunctionError", "InternalError", "RemoteAPIError", "RequestError",
    "RequestFailed", "RequestNotFinished", "SDKUsageError", "SerializationError",
    "TensorlakeError", "TensorlakeException", "TimeoutError",
]

RUNTIME_LAYERS = ("engine.scheduler", "engine.store", "engine.backends", "engine.wire",
                  "engine.executor", "engine.runner", "grpc")


def test_engine_all_is_pinned() -> None:
    assert sorted(engine.__all__) == sorted(PUBLIC)
    assert len(engine.__all__) == len(set(engine.__all__))
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_engine_errors_all_is_pinned_and_rooted() -> None:
    assert sorted(engine.errors.__all__) == sorted(ERRORS)
    for name in engine.errors.__all__:
        cls = getattr(engine.errors, name)
        assert issubclass(cls, engine.errors.EngineError), name
    # engine re-exports the very same classes
    for name in PUBLIC:
        if name in ERRORS:
            assert getattr(engine, name) is getattr(engine.errors, name)


def test_error_branches() -> None:
    e = engine.errors
    for usage in (e.ConfigError, e.InputError, e.RunNotFound):
        assert issubclass(usage, e.SDKUsageError)
    # A model's unusable reply is a function's failure: retried under its Retries.
    assert issubclass(e.ModelOutputError, e.FunctionError)
    for failure in (e.FunctionError, e.RequestError, e.FunctionTimeout, e.OutOfMemory,
                    e.ExecutorLost, e.RequestCancelled, e.DependencyFailed, e.SignalTimeout):
        assert issubclass(failure, e.RequestFailed)
        assert not issubclass(failure, e.SDKUsageError)
    for infra in (e.DockerUnavailable, e.ImageMissing, e.ImageBuildError, e.PythonVersionMismatch,
                  e.InternalError, e.RemoteAPIError):
        assert issubclass(infra, e.InfrastructureError)
    for usage in (e.SerializationError, e.DeserializationError):
        assert issubclass(usage, e.SDKUsageError)


def test_tensorlake_hierarchy_where_the_meaning_is_the_same() -> None:
    e = engine.errors
    assert set(TENSORLAKE_EXCEPTIONS) <= set(engine.__all__)
    # One root under both of Tensorlake's names.
    assert e.TensorlakeError is e.EngineError and e.TensorlakeException is e.EngineError
    for name in TENSORLAKE_EXCEPTIONS:
        assert issubclass(getattr(engine, name), e.TensorlakeError), name
    # RequestError fails the request: a RequestFailed, not a FunctionError, so that a caller's
    # `except FunctionError` does not swallow it.
    assert issubclass(e.RequestError, e.RequestFailed)
    assert not issubclass(e.RequestError, e.FunctionError)
    assert not issubclass(e.FunctionError, e.RequestError)


def test_timeout_error_is_ours_and_the_builtin() -> None:
    import builtins

    assert engine.TimeoutError is engine.errors.TimeoutError
    assert engine.TimeoutError is not builtins.TimeoutError
    assert issubclass(engine.TimeoutError, builtins.TimeoutError)
    assert issubclass(engine.TimeoutError, engine.EngineError)
    # A call past its function's timeout is a run failure, not an operation's timeout.
    assert not issubclass(engine.FunctionTimeout, builtins.TimeoutError)
    # Our own modules never shadow the builtin (they import it as EngineTimeoutError).
    import engine.sdk.future as future_module

    assert "TimeoutError" not in vars(future_module)


def test_tensorlake_constructors_and_attributes() -> None:
    import pickle

    t = engine.TimeoutError()  # Tensorlake's takes no argument
    assert str(t) == "Timed out." and isinstance(t, TimeoutError)
    assert str(engine.RequestNotFinished()) == "Request is still in progress, its output is not ready yet."
    r = engine.RemoteAPIError(404, "no such application")
    assert r.status_code == 404 and str(r) == "no such application (Status Code: 404)"
    back = pickle.loads(pickle.dumps(r))
    assert (type(back), back.status_code, str(back)) == (engine.RemoteAPIError, 404, str(r))
    for name in ("RequestFailed", "RequestError", "FunctionError", "SDKUsageError", "InternalError",
                 "SerializationError", "DeserializationError", "TensorlakeError",
                 "TensorlakeException"):
        exc = getattr(engine, name)("went wrong")
        assert str(exc) == "went wrong", name
    err = engine.RequestError("bad input")
    assert err.message == "bad input" and err.args[0] == "bad input"
    with pytest.raises(engine.RequestFailed):
        raise err
    with pytest.raises(engine.TensorlakeError):
        raise engine.TimeoutError()


def test_request_failed_keeps_its_fields_across_pickling() -> None:
    import pickle

    exc = engine.FunctionTimeout("too slow", run_id="r1", function="f", call_id="c1",
                                 traceback="tb")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is engine.FunctionTimeout
    assert (back.message, back.run_id, back.function, back.call_id, back.traceback) == (
        "too slow", "r1", "f", "c1", "tb")


def _loaded_modules(imports: str) -> list[str]:
    code = (
        f"import {imports}; import sys; "
        f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({RUNTIME_LAYERS!r}))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize(
    "imports",
    [
        "engine.sdk.function, engine.sdk.future, engine.sdk.runtime, engine.sdk.retries, "
        "engine.sdk.image, engine.sdk.file, engine.sdk.http, engine.sdk.logger, engine.sdk.ai, engine.sdk",
        "engine",
        "engine.errors",
    ],
)
def test_sdk_does_not_import_the_runtime(imports: str) -> None:
    assert _loaded_modules(imports) == []


def test_probe_detects_runtime_imports() -> None:
    # The check above would be worthless if it could not see these modules at all.
    assert "engine.wire.v1" in _loaded_modules("engine.wire")
    assert "engine.scheduler" in _loaded_modules("engine.scheduler")
