"""The HTTP routes: JSON in, JSON out, one-line error messages. The exceptions are raw values: a
`File` input (a raw or multipart body, `engine/server/inputs.py`) and a `File` output
(`GET /v1/runs/{id}/output`, its bytes with its content type).

Every error is `{"error": "<one line saying what is wrong and what to do>", "status": N}`:
400 malformed request (not JSON, not a zip), 401 missing or wrong token, 404 unknown
application, run or path, 405 wrong method, 409 the run's state does not allow it, 413 body too
large, 415 a raw body for an application that takes JSON, 422 input that does not match the
application's type hints (the message names the field), 500 a bug (logged with its traceback;
the client sees one line).

Authentication: with a token configured, every `/v1/...` route and `/metrics` need
`Authorization: Bearer <token>`, except starting a run of an application that allows
"unauthenticated_requests" and reading such a run's output. The dashboard's files, `/healthz` and `/openapi.json` carry no
data and are served to anyone; the dashboard asks for the token and sends it with each call.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, get_type_hints

from engine import wire
from engine.app import file_json, to_json
from engine.errors import ConfigError, InputError, RunNotFound, SDKUsageError
from engine.sdk.file import File
from engine.server.control import Conflict, ControlPlane, UnknownApplication
from engine.server.deployments import BadBundle, Deployment
from engine.server.http import EventStream, HTTPError, Request, Response
from engine.server.inputs import body_input
from engine.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine.server.metrics import Registry
from engine.server.openapi import openapi_document
from engine.server.views import (
    RUN_FINAL,
    DagBuilder,
    application_details,
    call_counts,
    failure_json,
    logs_json,
    run_summary,
)
from engine.store import StoreUnavailable

log = logging.getLogger("engine.server.api")

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_LIST = 10_000

Route = tuple[str, re.Pattern[str], Callable[[Request], Awaitable[Any]], bool]


class API:
    def __init__(self, control: ControlPlane, registry: Registry, token: str | None) -> None:
        self.control = control
        self.registry = registry
        self.token = token
        self.dag = DagBuilder()
        self.routes: list[Route] = []
        add = self._add
        add("GET", r"/", self.dashboard, auth=False)
        add("GET", r"/static/(?P<file>[A-Za-z0-9_.-]+)", self.static, auth=False)
        add("GET", r"/healthz", self.healthz, auth=False)
        add("GET", r"/openapi.json", self.openapi, auth=False)
        add("GET", r"/metrics", self.metrics)
        add("POST", r"/v1/deployments", self.deploy)
        add("GET", r"/v1/applications", self.list_applications)
        add("GET", r"/v1/applications/(?P<name>[^/]+)", self.get_application)
        # Authenticated in the handler: an application may allow unauthenticated requests.
        add("POST", r"/v1/applications/(?P<name>[^/]+)/runs", self.submit, auth=False)
        add("GET", r"/v1/runs", self.list_runs)
        add("GET", r"/v1/runs/(?P<run_id>[^/]+)", self.get_run)
        add("GET", r"/v1/runs/(?P<run_id>[^/]+)/dag", self.get_dag)
        add("GET", r"/v1/runs/(?P<run_id>[^/]+)/events", self.events)
        add("GET", r"/v1/runs/(?P<run_id>[^/]+)/logs", self.logs)
        add("GET", r"/v1/runs/(?P<run_id>[^/]+)/output", self.output, auth=False)
        add("POST", r"/v1/runs/(?P<run_id>[^/]+)/cancel", self.cancel)
        add("POST", r"/v1/runs/(?P<run_id>[^/]+)/resume", self.resume)

    def _add(self, method: str, pattern: str, handler: Callable[[Request], Awaitable[Any]],
             auth: bool = True) -> None:
        self.routes.append((method, re.compile(pattern + r"/?\Z"), handler, auth))

    # --- dispatch ------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response | EventStream:
        allowed = []
        for method, pattern, handler, auth in self.routes:
            match = pattern.match(request.path)
            if match is None:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            if auth:
                self._authenticate(request)
            request.params = match.groupdict()
            try:
                result = await handler(request)
            except UnknownApplication as exc:
                raise HTTPError(404, str(exc)) from None
            except RunNotFound:
                raise HTTPError(404, f"no run {request.params.get('run_id')!r}: see GET /v1/runs") from None
            except Conflict as exc:
                raise HTTPError(409, str(exc)) from None
            except BadBundle as exc:
                raise HTTPError(400, str(exc)) from None
            except (InputError, ConfigError, SDKUsageError) as exc:
                raise HTTPError(422, str(exc)) from None
            except StoreUnavailable as exc:
                # Nothing was accepted: the client retries (with its Idempotency-Key) here or
                # at another server.
                self.control.reader.rollback()
                raise HTTPError(503, f"{exc}; try again shortly") from None
            if isinstance(result, (Response, EventStream)):
                return result
            return Response.json(200, result, {"Cache-Control": "no-store"})
        if allowed:
            error = HTTPError(405, f"{request.method} is not allowed on {request.path} (use {', '.join(allowed)})")
            error.headers["Allow"] = ", ".join(allowed)
            raise error
        raise HTTPError(404, f"no such path {request.path}: see /openapi.json")

    def _authenticate(self, request: Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            error = HTTPError(401, "missing or wrong token: send `Authorization: Bearer <token>` "
                                   "(the server's --token or ENGINE_TOKEN)")
            error.headers["WWW-Authenticate"] = 'Bearer realm="engine"'
            raise error

    # --- dashboard and service routes ------------------------------------------------------------

    async def dashboard(self, request: Request) -> Response:
        return self._file("index.html")

    async def static(self, request: Request) -> Response:
        return self._file(request.params["file"])

    def _file(self, name: str) -> Response:
        path = STATIC / name
        if not path.is_file():
            raise HTTPError(404, f"no such file {name}")
        return Response(200, path.read_bytes(), CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
                        {"Cache-Control": "no-cache"})

    async def healthz(self, request: Request) -> dict[str, Any]:
        try:
            queued = self.control.reader.count_runs(status="queued")
        except StoreUnavailable as exc:
            raise HTTPError(503, str(exc)) from None
        return {"ok": True, "runs_queued": queued, "runs_running": len(self.control.active),
                "owner": self.control.leases.owner}

    async def openapi(self, request: Request) -> dict[str, Any]:
        return openapi_document()

    async def metrics(self, request: Request) -> Response:
        return Response(200, self.registry.render(), METRICS_CONTENT_TYPE)

    # --- applications ----------------------------------------------------------------------------

    async def deploy(self, request: Request) -> Response:
        file = request.query.get("file")
        if not file:
            raise HTTPError(400, "say which file defines the applications: POST /v1/deployments?file=app.py")
        if not request.body:
            raise HTTPError(400, "the request body must be the zipped project")
        results = self.control.deployments.deploy(request.body, file)
        out = []
        for dep, new in results:
            await self.control.prepare(dep)
            out.append({**self._application(dep), "new": new})
            log.info("deployed", extra={"fields": {"application": dep.name, "version": dep.version,
                                                   "new": new, "digest": dep.digest[:12]}})
        return Response.json(201 if any(new for _, new in results) else 200, {"applications": out})

    async def list_applications(self, request: Request) -> dict[str, Any]:
        apps = []
        for name in self.control.deployments.names():
            try:
                apps.append(self._application(self.control.deployments.get(name)))
            except SDKUsageError as exc:
                apps.append({"name": name, "error": str(exc)})
        return {"applications": apps}

    async def get_application(self, request: Request) -> dict[str, Any]:
        return self._application(self.control.deployment(request.params["name"]))

    def _application(self, dep: Deployment) -> dict[str, Any]:
        fn = dep.function
        params = []
        if fn is not None:
            try:
                hints = get_type_hints(fn.fn)
            except Exception:  # noqa: BLE001 - unresolvable hints: show none
                hints = {}
            for p in inspect.signature(fn.fn).parameters.values():
                hint = hints.get(p.name)
                params.append({"name": p.name, "type": _type_name(hint) if hint is not None else None,
                               "required": p.default is inspect.Parameter.empty})
        versions = self.control.deployments.versions(dep.name)
        return {**dep.summary(), "versions": [d.version for d in versions],
                "parameters": params, "description": (fn.config.description if fn else "") or None,
                **application_details(dep, versions)}

    # --- runs ------------------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        name = request.params["name"]
        dep = self._deployment_or_none(name)
        self._authenticate_unless_allowed(request, dep)
        if len(request.body) > MAX_INPUT_BYTES:
            raise HTTPError(413, f"input over {MAX_INPUT_BYTES >> 20} MiB")
        parsed = None
        if dep is not None and dep.function is not None:
            # A raw body or a multipart one becomes File arguments (engine/server/inputs.py).
            self.control.deployments.activate(dep)
            parsed = body_input(dep.function, request.body, request.headers.get("content-type"))
        if parsed is not None:
            data, present = parsed
        else:
            present = bool(request.body.strip())
            try:
                data = json.loads(request.body) if present else None
            except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
                raise HTTPError(400, f"the request body is not valid JSON: {exc}") from None
        status, body = self.control.submit(name, data, present,
                                           request.headers.get("idempotency-key") or None)
        return Response.json(status, body, {"Location": f"/v1/runs/{body['run_id']}"})

    def _deployment_or_none(self, name: str) -> Deployment | None:
        try:
            return self.control.deployment(name)
        except UnknownApplication:
            return None  # answered 404 by the control plane's submit, after authentication

    def _authenticate_unless_allowed(self, request: Request, dep: Deployment | None) -> None:
        """`@application(allow=["unauthenticated_requests"])` (Tensorlake's capability): its
        runs may be started, and their output read, without the token. Everything else about
        them (the run, its calls, logs, cancel) still needs it."""
        app = dep.function.application if dep is not None and dep.function is not None else None
        if app is None or "unauthenticated_requests" not in app.allow:
            self._authenticate(request)

    async def list_runs(self, request: Request) -> dict[str, Any]:
        q = request.query
        try:
            limit = max(1, min(int(q.get("limit") or 100), MAX_LIST))
        except ValueError:
            raise HTTPError(400, "limit must be a number") from None
        reader = self.control.reader
        rows = reader.list_runs(limit, application=q.get("application") or None, status=q.get("status") or None)
        return {"runs": [run_summary(r, r.version) for r in rows],
                "total": reader.count_runs(application=q.get("application") or None,
                                           status=q.get("status") or None)}

    async def get_run(self, request: Request) -> dict[str, Any]:
        reader = self.control.reader
        row = reader.get_run(request.params["run_id"])
        out = run_summary(row, row.version)
        out["result"] = None
        data = reader.run_result(row) if row.status == "succeeded" else None
        if data is not None:
            try:
                value = self._load_result(row, data)
            except Exception as exc:  # noqa: BLE001 - the value's classes may not load here
                out["result_error"] = f"the result cannot be decoded here: {type(exc).__name__}: {exc}"
            else:
                if isinstance(value, File):
                    # No JSON form: the bytes are at the output route, with their content type.
                    out["result_file"] = {**file_json(value), "url": f"/v1/runs/{row.run_id}/output"}
                else:
                    out["result"] = to_json(value)
        out["error"] = failure_json(row.failure)
        out["calls"] = call_counts(reader.load_calls(row.run_id), row.status in RUN_FINAL,
                                   self.control.queued_calls(row.run_id))
        return out

    def _load_result(self, row: Any, data: bytes) -> Any:
        dep = self.control.deployments.for_run(row)
        if dep is not None:
            self.control.deployments.activate(dep)
        return wire.loads(data)

    async def output(self, request: Request) -> Response:
        """A succeeded run's result: a `File`'s bytes with its content type, anything else as
        JSON (what `result` in the run says)."""
        run_id = request.params["run_id"]
        reader = self.control.reader
        try:
            row = reader.get_run(run_id)
        except RunNotFound:
            self._authenticate(request)  # no hint to the unauthenticated that a run exists
            raise
        self._authenticate_unless_allowed(request, self.control.deployments.for_run(row))
        data = reader.run_result(row) if row.status == "succeeded" else None
        if data is None:
            raise HTTPError(409, f"run {run_id} is {row.status}: it has an output once it succeeded "
                                 f"(see GET /v1/runs/{run_id})")
        try:
            value = self._load_result(row, data)
        except Exception as exc:  # noqa: BLE001 - the value's classes may not load here
            raise HTTPError(500, f"the result cannot be decoded here: {type(exc).__name__}: {exc}") from None
        headers = {"Cache-Control": "no-store"}
        if isinstance(value, File):
            return Response(200, value.content, value.content_type, headers)
        return Response.json(200, to_json(value), headers)

    async def get_dag(self, request: Request) -> dict[str, Any]:
        reader = self.control.reader
        row = reader.get_run(request.params["run_id"])
        dag = self.dag.build(reader.load_calls(row.run_id), row.status in RUN_FINAL,
                             self.control.queued_calls(row.run_id), reader.failed_attempts(row.run_id))
        return {"run": {**run_summary(row, row.version), "error": failure_json(row.failure)},
                "root": row.root_call_id, **dag, "generated_at": time.time()}

    async def events(self, request: Request) -> EventStream:
        run_id = request.params["run_id"]
        self.control.reader.get_run(run_id)  # 404 before the stream starts
        return EventStream(self.control.events(run_id))

    async def logs(self, request: Request) -> dict[str, Any]:
        run_id = request.params["run_id"]
        self.control.reader.get_run(run_id)
        return {"logs": logs_json(self.control.reader, run_id, request.query.get("call") or None,
                                  request.query.get("function") or None)}

    async def cancel(self, request: Request) -> dict[str, Any]:
        return self.control.cancel(request.params["run_id"])

    async def resume(self, request: Request) -> Response:
        return Response.json(202, self.control.resume(request.params["run_id"]))


def _type_name(hint: Any) -> str:
    name = getattr(hint, "__name__", None)
    if name and not getattr(hint, "__args__", None):
        return str(name)
    return str(hint).replace("typing.", "")
