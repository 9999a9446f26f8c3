"""The route table: every route of the server, once, as data.

`api.py` binds each `Route` to the `API` method named by its `handler` and registers it with
aiohttp's router; `openapi.py` builds `/openapi.json` from the same list and the models of
`models.py`. A route therefore cannot be served without being documented, nor documented
without being served, and its documented statuses are the ones its handler answers: the
schemathesis test (`tests/integration/test_openapi_fuzz.py`) holds the server to them.

The answers every route of a kind gives are added here, not repeated per route: 401 where a
token is needed, 404 for an unknown path parameter, 503 while the store does not answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from engine.server import models as m

#: "token": needs the token when the server has one; "none": served to anyone; "allowed": needs
#: it unless the application allows "unauthenticated_requests".
Auth = Literal["token", "none", "allowed"]

BINARY = {"type": "string", "format": "binary"}
ANY_JSON: dict[str, Any] = {}
#: One server-sent event, as a client's parser sees it.
SSE_EVENT = {"type": "object", "required": ["event", "data"], "properties": {
    "event": {"enum": ["call", "run", "end"]},
    "data": {"type": "string", "contentMediaType": "application/json",
             "description": "call: a Node; run: a RunSummary; end: {run_id, status}"}}}


@dataclass(frozen=True)
class Answer:
    """One documented response: a JSON body of `model`, or bodies of other media types
    (`content`: media type → schema), or no body."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    content: tuple[tuple[str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Header:
    name: str
    description: str


@dataclass(frozen=True)
class Route:
    method: str
    path: str                       # aiohttp's template; `{name:regex}` narrows a parameter
    handler: str                    # the `API` method that answers it
    summary: str
    answers: tuple[Answer, ...]
    auth: Auth = "token"
    query: type[BaseModel] | None = None
    headers: tuple[Header, ...] = ()
    body: tuple[tuple[str, dict[str, Any] | type[BaseModel]], ...] = ()   # media type → schema or model
    body_required: bool = False
    body_description: str = ""
    documented: bool = True         # the dashboard's files are not part of the API

    @property
    def template(self) -> str:
        """The OpenAPI path template: `{name}` without aiohttp's regex."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


#: Descriptions of path parameters, and what a 404 for an unknown one means.
PATH_PARAMETERS = {
    "name": ("the application's name (its function's name)", "no such application"),
    "run_id": ("a run's id, as `POST …/runs` answered it", "no such run"),
    "signal": ("a signal's name: 1-128 of A-Za-z0-9_.- (what `engine.signal(name)` waits for)",
               "not a signal name"),
}

#: The submission envelope's media type (`models.Submission`): the input beside a webhook.
SUBMISSION = "application/vnd.engine.submission+json"

RUN_INPUT = (
    "the application's input as JSON: the value of its one parameter, or an object of its "
    "parameters. An application with a parameter annotated File (or HttpBody) takes the raw body as "
    "that argument, with the request's Content-Type, or multipart/form-data: one part per parameter, "
    "named after it (File parameters take the part's bytes and content type, the others its JSON). "
    f"As {SUBMISSION}: the envelope {{\"input\": ..., \"webhook\": {{\"url\", \"secret\", \"headers\"}}}}, "
    "the input beside where to POST the run's end")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/", "dashboard", "The dashboard", (Answer(200, "the page"),), auth="none",
          documented=False),
    Route("GET", "/static/{file:[A-Za-z0-9_.-]+}", "static", "The dashboard's files",
          (Answer(200, "the file"), Answer(404, "no such file", m.Error)), auth="none", documented=False),
    Route("GET", "/healthz", "healthz", "Liveness, and how many runs wait and run",
          (Answer(200, "the server is up", m.Health),), auth="none"),
    Route("GET", "/openapi.json", "openapi", "This document",
          (Answer(200, "OpenAPI 3.1", content=(("application/json", {"type": "object"}),)),), auth="none"),
    Route("GET", "/metrics", "metrics", "Prometheus metrics",
          (Answer(200, "text exposition format 0.0.4", content=(("text/plain", {"type": "string"}),)),)),
    Route("POST", "/v1/deployments", "deploy",
          "Deploy the applications a file defines (what `engine deploy` sends)",
          (Answer(201, "deployed; a new version of every application whose code changed", m.Deployed),
           Answer(200, "the code is identical to the latest version: nothing new", m.Deployed),
           Answer(400, "not a zip archive, no such file in it, or no `file` query parameter", m.Error),
           Answer(413, "the archive is too large", m.Error),
           Answer(422, "the code does not import, or defines no @application()", m.Error)),
          query=m.DeployQuery, body=(("application/zip", BINARY),), body_required=True),
    Route("GET", "/v1/applications", "list_applications", "Deployed applications, latest version of each",
          (Answer(200, "the applications", m.ApplicationList),)),
    Route("GET", "/v1/applications/{name}", "get_application", "One application",
          (Answer(200, "the application", m.Application),)),
    Route("POST", "/v1/applications/{name}/runs", "submit",
          "Start a run: accepted at once and queued durably; never refused for lack of capacity. "
          "No token needed for an application with allow=[\"unauthenticated_requests\"]",
          (Answer(200, "with `wait`: the run ended within it; the run, as GET /v1/runs/{run_id} shows it",
                  m.Run),
           Answer(202, "accepted and queued (with `wait`: still unfinished when it ran out)", m.Accepted),
           Answer(400, "the body is not valid JSON (or not parseable multipart), or a bad `wait` or `priority`", m.Error),
           Answer(409, "the Idempotency-Key was used for another application", m.Error),
           Answer(413, "the input is too large", m.Error),
           Answer(415, "a raw body for an application that takes JSON (no File parameter), or one that "
                       "needs other input too (send multipart)", m.Error),
           Answer(422, "the input does not match the type hints (the message names the field), or the "
                       "submission envelope, its webhook or the budget query parameter is malformed", m.Error)),
          auth="allowed", query=m.SubmitQuery,
          headers=(Header("Idempotency-Key", "a retried POST with the same key returns the same run"),),
          body=(("application/json", ANY_JSON),
                (SUBMISSION, m.Submission),
                ("multipart/form-data", {"type": "object", "additionalProperties": {}}),
                ("*/*", BINARY)),
          body_description=RUN_INPUT),
    Route("GET", "/v1/runs", "list_runs", "Runs, newest first; or, with `ids`, those runs",
          (Answer(200, "the runs", m.RunList),
           Answer(400, "a query parameter is malformed, or `ids` names more than 500 runs", m.Error)),
          query=m.RunsQuery),
    Route("GET", "/v1/runs/{run_id}", "get_run", "A run: status, result, error, timings and call counts",
          (Answer(200, "the run", m.Run),)),
    Route("GET", "/v1/runs/{run_id}/dag", "get_dag",
          "The run's call graph: every call a node; parent, dependency and tail-call edges",
          (Answer(200, "the graph", m.Dag),)),
    Route("GET", "/v1/runs/{run_id}/events", "events",
          "Server-sent events: `call` (a Node) and `run` (a RunSummary) on every change, the current "
          "state first, then `end` when the run is finished",
          (Answer(200, "the event stream", content=(("text/event-stream", SSE_EVENT),)),)),
    Route("GET", "/v1/runs/{run_id}/logs", "logs", "What the run's calls printed",
          (Answer(200, "the log entries, oldest first", m.Logs),), query=m.LogsQuery),
    Route("GET", "/v1/runs/{run_id}/output", "output",
          "A succeeded run's result: a File's bytes with its Content-Type, any other value as JSON. "
          "No token needed for an application with allow=[\"unauthenticated_requests\"]",
          (Answer(200, "the result", content=(("application/json", ANY_JSON), ("*/*", BINARY))),
           Answer(409, "the run has not succeeded (yet): no output", m.Error),
           Answer(500, "the result cannot be decoded on this server", m.Error)),
          auth="allowed"),
    Route("GET", "/v1/runs/{run_id}/webhooks", "webhooks",
          "The run's completion webhook (its URL; never its secret) and every delivery with its attempts",
          (Answer(200, "the deliveries", m.Webhooks),)),
    Route("POST", "/v1/runs/{run_id}/cancel", "cancel",
          "Cancel a queued or running run: its calls stop and its executors are stopped",
          (Answer(200, "cancelled (or, driven by another server, cancelling)", m.Accepted),
           Answer(409, "the run is already finished", m.Error))),
    Route("POST", "/v1/runs/{run_id}/signals/{signal:[A-Za-z0-9_.-]+}", "signal",
          "Send a signal to a run: stored at once, it completes the run's `engine.signal(name)` futures "
          "(now, or once one exists)",
          (Answer(200, "stored", m.SignalSent),
           Answer(400, "the body is not valid JSON", m.Error),
           Answer(409, "the run has finished, or already has the one signal of this name (a name takes "
                       "several only when its futures are declared repeatable)", m.Error),
           Answer(413, "the payload is too large", m.Error)),
          body=(("application/json", ANY_JSON),),
          body_description="the signal's value, as JSON (an empty body is null): the value of the futures "
                           "that take it"),
    Route("POST", "/v1/runs/{run_id}/resume", "resume",
          "Queue a failed or cancelled run again; finished calls are reused, only the rest run",
          (Answer(202, "queued again", m.Accepted),
           Answer(409, "the run is not failed or cancelled", m.Error),
           Answer(422, "the budget query parameter is malformed", m.Error)),
          query=m.BudgetQuery),
    Route("POST", "/v1/runs/{run_id}/rerun", "rerun",
          "Start a new run with this run's input that reruns it from one function with the deployed code: "
          "the function's calls, what they created, what takes their values and what waited for them "
          "execute; every other checkpoint is reused",
          (Answer(202, "accepted and queued: the new run", m.Accepted),
           Answer(400, "the body is not valid JSON", m.Error),
           Answer(409, "the run is still queued or running: wait for it to end, or cancel it", m.Error),
           Answer(422, "the body is malformed, the application defines no such function or version, or "
                       "the run made no call of it", m.Error)),
          body=(("application/json", m.RerunRequest),), body_required=True,
          body_description="`{\"from\": FUNCTION}`, optionally with `\"version\"`"),
)


def path_parameters(route: Route) -> list[str]:
    """The names of a route's path parameters, in order."""
    return re.findall(r"\{(\w+)\}", route.template)


def answers(route: Route) -> list[Answer]:
    """Everything a route may answer: its own answers and those of its kind."""
    out = list(route.answers)
    if route.auth != "none":
        out.append(Answer(401, "missing or wrong token", m.Error))
    for name in path_parameters(route):
        if name in PATH_PARAMETERS:
            out.append(Answer(404, PATH_PARAMETERS[name][1], m.Error))
    if route.handler not in ("openapi", "dashboard", "static"):
        out.append(Answer(503, "the store does not answer: nothing was done, try again shortly", m.Error))
    return sorted(out, key=lambda a: a.status)
