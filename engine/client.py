"""Starting applications from Python: `run_local_application`, `run_remote_application` and the
`Request` they return.

`run_local_application(app, *args, **kwargs)` runs a whole request on this machine — the
scheduler in this process, every function in executors of its own — and returns when it ends.
The backend and state directory come from `ENGINE_BACKEND` / `ENGINE_STATE_DIR`, else
`engine.yaml`, else the defaults (docker when a Docker engine answers, `.engine/`). What the
calls printed is written to this process's stdout once the request ends, as Tensorlake's local
runner shows it (`engine logs RUN_ID` keeps it too).

`run_remote_application(app, *args, **kwargs)` submits the request to an `engine server`
(`ENGINE_SERVER`, token `ENGINE_TOKEN`) where the application is deployed, and polls it until
it ends. Only the standard library's HTTP client is involved: nothing of the runtime is loaded.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from engine.errors import SDKUsageError
from engine.sdk.function import Function, PendingApplication, registered


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


def _drop_unknown_input(fn: Function[..., Any], args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Drop positional arguments beyond `fn`'s parameters and keywords naming none of them.

    Tensorlake's semantics: a request's payload may run ahead of the code (a client already
    sends a field the deployed application does not take yet), so extra input is ignored rather
    than refused. Unlike Tensorlake, one line on stderr says what was ignored, so that a typo in
    a keyword is not silent.
    """
    params = list(inspect.signature(fn.fn).parameters.values())
    kinds = {p.kind for p in params}
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    dropped: list[str] = []
    if inspect.Parameter.VAR_POSITIONAL not in kinds and len(args) > len(positional):
        dropped.append(f"{len(args) - len(positional)} extra positional argument(s)")
        args = args[: len(positional)]
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        unknown = [k for k in kwargs if k not in named]
        if unknown:
            dropped.append("keyword(s) " + ", ".join(map(repr, unknown)))
            kwargs = {k: v for k, v in kwargs.items() if k in named}
    if dropped:
        print(f"engine: {fn.name} ignores {' and '.join(dropped)} (it takes: "
              f"{', '.join(p.name for p in params) or 'no parameters'})", file=sys.stderr)
    return args, kwargs


def run_local_application(application: Function[..., Any] | str, *args: Any, **kwargs: Any) -> Request:
    """Run `application` with the given input to completion and return its `Request`.

    Input beyond the application's parameters is ignored, as in Tensorlake (stderr says so).
    When the request ends, what its calls printed (their `print()`s and `Logger` lines) is
    written to `sys.stdout`, call by call in the order they finished. Raises `SDKUsageError` when `application` is not an `@application()`, and `InputError` (a
    `SerializationError`) when the input does not match its type hints; a failed run does not
    raise here but from `Request.output()`.
    """
    from engine.app import app_spec_from_function, validate_input
    from engine.runner import execute

    fn = registered(application) if isinstance(application, str) else application
    if isinstance(fn, PendingApplication):
        raise SDKUsageError(f"{fn.fn.__qualname__} has @application() but no @function(): add it")
    if not isinstance(fn, Function):
        raise SDKUsageError(f"no @function() named {application!r}")
    if not fn.is_application:
        raise SDKUsageError(f"{fn.name} is not an application: add @application() to it")
    args, kwargs = _drop_unknown_input(fn, args, kwargs)
    bound = validate_input(fn, args, kwargs)
    app = app_spec_from_function(fn)
    outcome = execute(app, kwargs=bound)
    _echo_call_output(outcome.run_id)
    return Request(outcome.run_id, outcome.status, outcome.result, outcome.error())


def _echo_call_output(run_id: str) -> None:
    """Write what the run's calls printed to `sys.stdout`.

    Tensorlake's local runner runs functions where their output reaches the terminal, so a
    ported application's `print()` debugging and `Logger` lines show where its author looks.
    Here each call's output arrives with its result and is kept in the run's store, so it is
    copied from there once the request has ended (it is not streamed while calls run). Never
    raises: the output is a convenience, the run's result is what the caller asked for.
    """
    from engine.paths import default_state_dir
    from engine.store import open_store, store_url

    try:
        store = open_store(store_url(default_state_dir()))
        try:
            entries = store.logs(run_id)
        finally:
            store.close()
        for _call_id, _function, _attempt, text in entries:
            if text:
                sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - see the docstring
        return


class _ApplicationTarget:
    """What a future of another application calls: its name (its code is not this executor's)."""

    def __init__(self, name: str) -> None:
        self.name = name


def _call_application(application: Function[..., Any] | str, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Request:
    """`run_remote_application` inside a function: a call of the run (see there)."""
    from engine.errors import RequestFailed
    from engine.sdk.future import Future

    if isinstance(application, Function):
        if not application.is_application:
            raise SDKUsageError(f"{application.name} is not an application: add @application() to it")
        name = application.name
        args, kwargs = _drop_unknown_input(application, args, kwargs)
    elif isinstance(application, str):
        name = application
    else:
        raise SDKUsageError(f"expected an @application() or its name, got {type(application).__name__}")
    future: Future[Any] = Future("application", _ApplicationTarget(name), tuple(args), dict(kwargs))  # type: ignore[arg-type]
    try:
        value = future.result()
    except RequestFailed as exc:
        return Request(future.id, "failed", None, exc)
    return Request(future.id, "succeeded", value, None)


def run_remote_application(application: Function[..., Any] | str, *args: Any, **kwargs: Any) -> Request:
    """Run `application` (a deployed `@application()`, or its name) on the server at
    `ENGINE_SERVER` and wait for it; returns its `Request`.

    Inside a function, it is a call of the run instead (`_call_application`): a child of the
    calling call, in the run's graph, with a deterministic id (a retried or resumed caller gets
    the same child, and its checkpoint once it finished), on the application's deployed version
    under `engine server` (or its code in this project under `engine run`), within the run's
    budget. `Request.id` is then that call's id.

    The input travels as JSON: with a `Function`, it is first validated against the type hints
    here. `Request.output()` returns the result as the server's JSON shows it (a pydantic model
    comes back as a dict). Raises `SDKUsageError` for a bad input or an application the server
    does not know, `InfrastructureError` when the server cannot be reached; a failed run raises
    from `Request.output()`.
    """
    import json
    import uuid
    from urllib.parse import quote

    from engine.sdk import runtime as sdk_runtime

    if sdk_runtime.current_context() is not None:
        return _call_application(application, args, kwargs)

    from engine.server.client import ServerClient, exception_for

    client = ServerClient()
    try:
        if isinstance(application, Function):
            if not application.is_application:
                raise SDKUsageError(f"{application.name} is not an application: add @application() to it")
            from engine.app import to_json, validate_input

            name = application.name
            args, kwargs = _drop_unknown_input(application, args, kwargs)
            bound = {k: to_json(v) for k, v in validate_input(application, args, kwargs).items()}
            params = list(inspect.signature(application.fn).parameters)
        elif isinstance(application, str):
            name = application
            info = client.call("GET", f"/v1/applications/{quote(name, safe='')}")
            params = [p["name"] for p in info["parameters"]]
            if len(args) > len(params):
                raise SDKUsageError(f"{name} takes {len(params)} argument(s), got {len(args)}")
            bound = dict(zip(params, args, strict=False))
            for key, value in kwargs.items():
                if key in bound:
                    raise SDKUsageError(f"{name}: {key!r} given twice")
                bound[key] = value
        else:
            raise SDKUsageError(f"expected an @application() or its name, got {type(application).__name__}")
        if not params:
            body = b""
        elif len(params) == 1:
            body = json.dumps(bound.get(params[0])).encode() if params[0] in bound else b""
        else:
            body = json.dumps(bound).encode()
        # The client retries a request whose connection broke; the key makes that safe.
        accepted = client.call("POST", f"/v1/applications/{quote(name, safe='')}/runs", body,
                               headers={"Idempotency-Key": f"sdk-{uuid.uuid4().hex}"})
        run_id = accepted["run_id"]
        final = client.wait(run_id)
    finally:
        client.close()
    return Request(run_id, final["status"], final.get("result"), exception_for(final.get("error"), run_id))
