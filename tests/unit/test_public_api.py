"""The public surface is pinned, and the SDK layer stays free of the runtime's layers."""

from __future__ import annotations

import subprocess
import sys

import pytest

import engine
import engine.errors

PUBLIC = [
    "RETURN_WHEN",
    "DependencyFailed",
    "EngineError",
    "ExecutorLost",
    "Function",
    "FunctionError",
    "FunctionTimeout",
    "Future",
    "Image",
    "InfrastructureError",
    "OutOfMemory",
    "Request",
    "RequestCancelled",
    "RequestError",
    "RequestFailed",
    "Retries",
    "SDKUsageError",
    "application",
    "function",
    "run_local_application",
    "run_remote_application",
]

ERRORS = [
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
    for failure in (e.FunctionError, e.RequestError, e.FunctionTimeout, e.OutOfMemory,
                    e.ExecutorLost, e.RequestCancelled, e.DependencyFailed):
        assert issubclass(failure, e.RequestFailed)
        assert not issubclass(failure, e.SDKUsageError)
    assert issubclass(e.RequestError, e.FunctionError)
    for infra in (e.DockerUnavailable, e.ImageMissing, e.ImageBuildError, e.PythonVersionMismatch):
        assert issubclass(infra, e.InfrastructureError)
    # The builtin is not shadowed: a user's `except TimeoutError` is not ours.
    assert not issubclass(e.FunctionTimeout, TimeoutError)
    assert "TimeoutError" not in engine.__all__


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
        "engine.sdk.image, engine.sdk",
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
