"""The HTTP routes: JSON in, JSON out, one-line error messages. The exceptions are raw values: a
`File` input (a raw or multipart body, `engine/server/inputs.py`) and a `File` output
(`GET /v1/runs/{id}/output`, its bytes with its content type).

Which routes there are, and what each may answer, is the route table (`routes.py`); this module
binds each entry to the `API` method its `handler` names, on an aiohttp `web.Application`
(`web.py` serves it). Handlers return the pydantic models of `models.py`, answered as JSON.

Every error is `{"error": "<one line saying what is wrong and what to do>", "status": N}`:
400 malformed request (not JSON, JSON nested too deeply, not a zip, a bad query parameter), 401
missing or wrong token, 404 unknown application, run or path, 405 wrong method, 409 the run's
state does not allow it, 413 body too large, 415 a raw body for an application that takes JSON,
422 input that does not match the application's type hints (the message names the field), 503
the store does not answer (nothing was done), 500 a bug (logged with its traceback; the client
sees one line).

Authentication: with a token configured, every `/v1/...` route and `/metrics` need
`Authorization: Bearer <token>`, except starting a run of an application that allows
"unauthenticated_requests" and reading such a run's output. The dashboard's files, `/healthz` and
`/openapi.json` carry no data and are served to anyone; the dashboard asks for the token and
sends it with each call.
"""

from __future__ import annotations

import hmac
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from aiohttp import web
from pydantic import BaseModel, ValidationError

from engine.app import file_json, to_json
from engine.errors import ConfigError, InputError, RunNotFound, SDKUsageError
from engine.scheduler.budgets import parse_budget, stored_use
from engine.scheduler.signals import open_waits, signals_json, waiting
from engine.sdk.file import File
from engine.server import models as m
from engine.server.control import Conflict, ControlPlane, UnknownApplication
from engine.server.deployments import BadBundle, Deployment
from engine.server.inputs import body_input, json_value
from engine.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from engine.server.metrics import ServerMetrics
from engine.server.openapi import openapi_document
from engine.server.routes import ROUTES, SUBMISSION, Route
from engine.server.views import (
    DagBuilder,
    application_details,
    call_counts,
    failure_json,
    logs_json,
    run_summary,
)
from engine.server.web import HTTPError, counting, errors, json_response
from engine.server.webhooks import shown_url
from engine.statuses import RUN_FINAL, RunStatus
from engine.store import RunWebhook, StoreUnavailable

log = logging.getLogger("engine.server.api")

STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_LIST = 10_000
MAX_IDS = 500
NO_STORE = {"Cache-Control": "no-store"}

Q = TypeVar("Q", bound=BaseModel)
Result = m.Body | web.StreamResponse


class API:
    """The routes of one server. `app` is the aiohttp application to serve; `max_body` bounds
    every request body (a deployment's archive is the largest)."""

    def __init__(self, control: ControlPlane, metrics: ServerMetrics, token: str | None, *,
                 max_body: int) -> None:
        self.control = control
        self.prometheus = metrics
        self.token = token
        self.max_body = max_body
        self.dag = DagBuilder()
        self.app = web.Application(client_max_size=max_body, middlewares=[
            counting(lambda method, status: metrics.http_requests.inc(method=method, status=status)),
            errors])
        for route in ROUTES:
            handler = self._bind(route)
            self.app.router.add_route(route.method, route.path, handler)
            if route.path != "/":  # a trailing slash names the same resource
                self.app.router.add_route(route.method, route.path + "/", handler)

    # --- dispatch ------------------------------------------------------------------------------

    def _bind(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        method: Callable[[web.Request], Awaitable[Result]] = getattr(self, route.handler)
        authenticate = route.auth == "token"

        async def handle(request: web.Request) -> web.StreamResponse:
            if authenticate:
                self._authenticate(request)
            try:
                result = await method(request)
            except UnknownApplication as exc:
                raise HTTPError(404, str(exc)) from None
            except RunNotFound:
                raise HTTPError(404, f"no run {request.match_info.get('run_id')!r}: see GET /v1/runs") from None
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
            if isinstance(result, web.StreamResponse):
                return result
            return json_response(200, result.json_body(), NO_STORE)

        return handle

    def _authenticate(self, request: web.Request) -> None:
        if self.token is None:
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPError(401, "missing or wrong token: send `Authorization: Bearer <token>` "
                                 "(the server's --token or ENGINE_TOKEN)",
                            {"WWW-Authenticate": 'Bearer realm="engine"'})

    async def _body(self, request: web.Request) -> bytes:
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise HTTPError(413, f"request body over {self.max_body >> 20} MiB") from None

    @staticmethod
    def _query(request: web.Request, model: type[Q]) -> Q:
        """The query string as `model`; an empty parameter counts as absent. 400 for a bad one."""
        given = {key: value for key, value in request.query.items() if value != ""}
        try:
            return model.model_validate(given)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(part) for part in first["loc"]) or "query"
            raise HTTPError(400, f"bad query parameter {name}: {first['msg']}") from None

    @staticmethod
    def _json(body: bytes) -> Any:
        """A request body as JSON; an empty one is null. 400 when it is not JSON."""
        try:
            return json_value(body) if body.strip() else None
        except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError, too deep
            raise HTTPError(400, f"the request body is not valid JSON: {exc}") from None

    @staticmethod
    def _validated(model: type[Q], data: Any, what: str, hint: str = "") -> Q:
        """`data` as `model`; an InputError (422) naming the first thing wrong, then `hint`."""
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InputError(f"{what} {where}: {first['msg']}{hint}") from None

    def _budget(self, request: web.Request) -> dict[str, int | float | None] | None:
        """`?budget=calls=1000,depth=3`: beside the input, whatever the body's shape. A malformed
        one raises SDKUsageError (422)."""
        query = self._query(request, m.BudgetQuery)
        return parse_budget(query.budget) if query.budget is not None else None

    # --- dashboard and service routes ------------------------------------------------------------

    async def dashboard(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["file"])

    def _file(self, name: str) -> web.Response:
        path = STATIC / name
        if not path.is_file():
            raise HTTPError(404, f"no such file {name}")
        return web.Response(body=path.read_bytes(), headers={
            "Content-Type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
            "Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> m.Health:
        return m.Health(ok=True, runs_queued=self.control.reader.count_runs(status=RunStatus.QUEUED),
                        runs_running=len(self.control.active), owner=self.control.leases.owner)

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(200, openapi_document(), NO_STORE)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.prometheus.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    # --- applications ----------------------------------------------------------------------------

    async def deploy(self, request: web.Request) -> web.Response:
        if not request.query.get("file"):
            raise HTTPError(400, "say which file defines the applications: POST /v1/deployments?file=app.py")
        query = self._query(request, m.DeployQuery)
        body = await self._body(request)
        if not body:
            raise HTTPError(400, "the request body must be the zipped project")
        results = self.control.deployments.deploy(body, query.file)
        out = []
        for dep, new in results:
            await self.control.prepare(dep)
            out.append(m.DeployedApplication.model_validate({**self._application(dep), "new": new}))
            log.info("deployed", extra={"fields": {"application": dep.name, "version": dep.version,
                                                   "new": new, "digest": dep.digest[:12]}})
        status = 201 if any(new for _, new in results) else 200
        return json_response(status, m.Deployed(applications=out).json_body())

    async def list_applications(self, request: web.Request) -> m.ApplicationList:
        apps: list[m.Application | m.BrokenApplication] = []
        for name in self.control.deployments.names():
            try:
                apps.append(m.Application.model_validate(self._application(self.control.deployments.get(name))))
            except SDKUsageError as exc:
                apps.append(m.BrokenApplication(name=name, error=str(exc)))
        return m.ApplicationList(applications=apps)

    async def get_application(self, request: web.Request) -> m.Application:
        return m.Application.model_validate(
            self._application(self.control.deployment(request.match_info["name"])))

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

    async def submit(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        dep = self._deployment_or_none(name)
        self._authenticate_unless_allowed(request, dep)
        if dep is None:
            self.control.deployment(name)  # 404, whatever the body
        query = self._query(request, m.SubmitQuery)
        body = await self._body(request)
        if len(body) > MAX_INPUT_BYTES:
            raise HTTPError(413, f"input over {MAX_INPUT_BYTES >> 20} MiB")
        parsed = None
        webhook = None
        media = (request.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if media == SUBMISSION:
            parsed, webhook = self._envelope(body)
        elif dep is not None and dep.function is not None:
            # A raw body or a multipart one becomes File arguments (engine/server/inputs.py).
            self.control.deployments.activate(dep)
            parsed = body_input(dep.function, body, request.headers.get("Content-Type"))
        if parsed is not None:
            data, present = parsed
        else:
            present = bool(body.strip())
            data = self._json(body)
        status, accepted = self.control.submit(name, data, present,
                                               request.headers.get("Idempotency-Key") or None,
                                               [(str(k), v) for k, v in request.headers.items()],
                                               webhook, budget=self._budget(request),
                                               priority=query.priority)
        location = {"Location": f"/v1/runs/{accepted['run_id']}"}
        if query.wait and await self.control.wait_finished(accepted["run_id"], query.wait):
            run = self._run(accepted["run_id"])
            return json_response(200, run.json_body(), {**location, **NO_STORE})
        return json_response(status, m.Accepted.model_validate(accepted).json_body(), location)

    @staticmethod
    def _envelope(body: bytes) -> tuple[tuple[Any, bool], RunWebhook | None]:
        """`{"input": ..., "webhook": {...}}` (`SUBMISSION`) → ((input, present), webhook)."""
        envelope = API._json(body)
        submission = API._validated(m.Submission, {} if envelope is None else envelope, "submission")
        hook = submission.webhook
        webhook = RunWebhook(hook.url, hook.secret, dict(hook.headers)) if hook is not None else None
        return (submission.input, "input" in submission.model_fields_set), webhook

    def _deployment_or_none(self, name: str) -> Deployment | None:
        try:
            return self.control.deployment(name)
        except UnknownApplication:
            return None  # answered 404 after authentication

    def _authenticate_unless_allowed(self, request: web.Request, dep: Deployment | None) -> None:
        """`@application(allow=["unauthenticated_requests"])` (Tensorlake's capability): its
        runs may be started, and their output read, without the token. Everything else about
        them (the run, its calls, logs, cancel) still needs it."""
        app = dep.function.application if dep is not None and dep.function is not None else None
        if app is None or "unauthenticated_requests" not in app.allow:
            self._authenticate(request)

    async def list_runs(self, request: web.Request) -> m.RunList:
        query = self._query(request, m.RunsQuery)
        if query.ids is not None:
            return self._runs_by_id(request, query.ids)
        limit = max(1, min(query.limit, MAX_LIST))
        reader = self.control.reader
        rows = reader.list_runs(limit, application=query.application, status=query.status)
        return m.RunList(runs=self._summaries(rows),
                         total=reader.count_runs(application=query.application, status=query.status))

    def _summaries(self, rows: list[Any]) -> list[m.RunSummary]:
        """Runs' summaries, each with `waiting` (read from the calls of the few running runs that
        have a signal future still waiting)."""
        reader = self.control.reader
        maybe = reader.runs_with_open_signals([r.run_id for r in rows if r.status == RunStatus.RUNNING])
        return [m.RunSummary.model_validate({
            **run_summary(r, r.version),
            "waiting": r.run_id in maybe and waiting(r, reader.load_calls(r.run_id))}) for r in rows]

    def _runs_by_id(self, request: web.Request, ids: str) -> m.RunList:
        """`GET /v1/runs?ids=a,b,c`: many runs' summaries in one read."""
        if any(request.query.get(k) for k in ("application", "status", "limit")):
            raise HTTPError(400, "bad query parameter ids: not combined with application, status or limit")
        wanted = list(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip()))
        if not wanted:
            raise HTTPError(400, "bad query parameter ids: no run id given (ids=ID,ID,...)")
        if len(wanted) > MAX_IDS:
            raise HTTPError(400, f"bad query parameter ids: {len(wanted)} ids, at most {MAX_IDS} per call")
        found = {r.run_id: r for r in self.control.reader.get_runs(wanted)}
        runs = self._summaries([found[i] for i in wanted if i in found])
        return m.RunList(runs=runs, total=len(runs), unknown=[i for i in wanted if i not in found])

    async def get_run(self, request: web.Request) -> m.Run:
        return self._run(request.match_info["run_id"])

    def _run(self, run_id: str) -> m.Run:
        reader = self.control.reader
        row = reader.get_run(run_id)
        out = run_summary(row, row.version)
        out["result"] = None
        data = reader.run_result(row) if row.status == RunStatus.SUCCEEDED else None
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
        calls = reader.load_calls(row.run_id)
        out["calls"] = call_counts(calls, row.status in RUN_FINAL, self.control.queued_calls(row.run_id))
        out["budget"] = stored_use(row, calls)
        out["waiting"] = waiting(row, calls)
        out["waits"] = open_waits(calls)
        out["signals"] = signals_json(reader, row.run_id)
        return m.Run.model_validate(out)

    def _load_result(self, row: Any, data: bytes) -> Any:
        return self.control.load_result(row, data)

    async def output(self, request: web.Request) -> web.Response:
        """A succeeded run's result: a `File`'s bytes with its content type, anything else as
        JSON (what `result` in the run says)."""
        run_id = request.match_info["run_id"]
        reader = self.control.reader
        try:
            row = reader.get_run(run_id)
        except RunNotFound:
            self._authenticate(request)  # no hint to the unauthenticated that a run exists
            raise
        self._authenticate_unless_allowed(request, self.control.deployments.for_run(row))
        data = reader.run_result(row) if row.status == RunStatus.SUCCEEDED else None
        if data is None:
            raise HTTPError(409, f"run {run_id} is {row.status}: it has an output once it succeeded "
                                 f"(see GET /v1/runs/{run_id})")
        try:
            value = self._load_result(row, data)
        except Exception as exc:  # noqa: BLE001 - the value's classes may not load here
            raise HTTPError(500, f"the result cannot be decoded here: {type(exc).__name__}: {exc}") from None
        if isinstance(value, File):
            return web.Response(body=value.content, headers={"Content-Type": value.content_type, **NO_STORE})
        return json_response(200, to_json(value), NO_STORE)

    async def get_dag(self, request: web.Request) -> m.Dag:
        reader = self.control.reader
        row = reader.get_run(request.match_info["run_id"])
        calls = reader.load_calls(row.run_id)
        dag = self.dag.build(calls, row.status in RUN_FINAL,
                             self.control.queued_calls(row.run_id), reader.failed_attempts(row.run_id))
        return m.Dag.model_validate({"run": {**run_summary(row, row.version), "error": failure_json(row.failure),
                                             "budget": stored_use(row, calls),
                                             "waiting": waiting(row, calls), "waits": open_waits(calls)},
                                     "root": row.root_call_id, **dag, "generated_at": time.time()})

    async def events(self, request: web.Request) -> web.StreamResponse:
        run_id = request.match_info["run_id"]
        self.control.reader.get_run(run_id)  # 404 before the stream starts
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        stream = self.control.hub.stream(run_id)
        try:
            async for chunk in stream:
                await response.write(chunk)
        except (ConnectionError, StoreUnavailable):
            pass  # the client went away, or the store did: the stream ends (EventSource reconnects)
        finally:
            await stream.aclose()
        return response

    async def logs(self, request: web.Request) -> m.Logs:
        run_id = request.match_info["run_id"]
        query = self._query(request, m.LogsQuery)
        self.control.reader.get_run(run_id)
        return m.Logs.model_validate(
            {"logs": logs_json(self.control.reader, run_id, query.call, query.function)})

    async def webhooks(self, request: web.Request) -> m.Webhooks:
        """A run's webhook (without its secret or header values) and every delivery's attempts."""
        reader = self.control.reader
        run_id = reader.get_run(request.match_info["run_id"]).run_id
        hook = reader.run_webhook(run_id)
        target = None if hook is None else m.WebhookTarget(
            url=shown_url(hook.url), signed=bool(hook.secret), headers=sorted(hook.headers))
        deliveries = [m.WebhookDelivery(
            delivery_id=d.delivery_id, status=RunStatus(d.status), state=d.state,  # type: ignore[arg-type]
            created_at=d.created_at, next_at=d.next_at if d.state == "pending" else None,
            ended_at=d.ended_at,
            attempts=[m.WebhookAttempt(attempt=a.attempt, at=a.started_at, duration=a.duration,
                                       http_status=a.http_status, error=a.error) for a in attempts])
            for d, attempts in reader.deliveries(run_id)]
        return m.Webhooks(run_id=run_id, webhook=target, deliveries=deliveries)

    async def cancel(self, request: web.Request) -> m.Accepted:
        return m.Accepted.model_validate(self.control.cancel(request.match_info["run_id"]))

    async def signal(self, request: web.Request) -> m.SignalSent:
        name = request.match_info["signal"]
        if name in (".", "..") or len(name) > 128:
            raise HTTPError(404, f"{name[:130]!r} is not a signal name (1-128 of A-Za-z0-9_.-)")
        body = await self._body(request)
        if len(body) > MAX_INPUT_BYTES:
            raise HTTPError(413, f"signal payload over {MAX_INPUT_BYTES >> 20} MiB")
        value = self._json(body)
        return m.SignalSent.model_validate(self.control.signal(request.match_info["run_id"], name, value))

    async def rerun(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        body = await self._body(request)
        asked = self._validated(m.RerunRequest, self._json(body), "rerun", ' (send {"from": FUNCTION})')
        accepted = m.Accepted.model_validate(self.control.rerun(run_id, asked.from_, asked.version))
        return json_response(202, accepted.json_body(), {"Location": f"/v1/runs/{accepted.run_id}"})

    async def resume(self, request: web.Request) -> web.Response:
        accepted = m.Accepted.model_validate(self.control.resume(request.match_info["run_id"],
                                                                 budget=self._budget(request)))
        return json_response(202, accepted.json_body())


def _type_name(hint: Any) -> str:
    name = getattr(hint, "__name__", None)
    if name and not getattr(hint, "__args__", None):
        return str(name)
    return str(hint).replace("typing.", "")
