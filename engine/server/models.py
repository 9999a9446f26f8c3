"""The bodies of the HTTP API as pydantic models: what handlers return, what query strings
carry, and — through `openapi.py` — the schemas of `/openapi.json`.

Handlers build a model from the plain JSON that `views.py` reads out of the store and answer
with `model_dump(mode="json", exclude_unset=True)`: a field the handler did not set (a run's
`result_file` when its result is not a `File`, `replayed` when no Idempotency-Key matched) is
left out of the body, as before models, rather than sent as null. Models of what `views.py`
builds accept fields they do not name (`extra="allow"`), so a field added there reaches the
client at once; name it here too, so that the document describes it.

Request bodies are not models: a run's input is whatever the application takes (its type hints
validate it, `engine.app.validate_input`), and a deployment is a zip archive. The exception is
the submission envelope (`Submission`, sent as `application/vnd.engine.submission+json`): the
input beside a webhook (`WebhookSpec`). Query strings are (`RunsQuery`, `SubmitQuery`,
`DeployQuery`, `LogsQuery`): validated, and documented, from one place.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.statuses import CallStatus, RunStatus

FailureKind = Literal["function_error", "request_error", "timeout", "out_of_memory", "executor_lost",
                      "dependency_failed", "cancelled", "internal", "budget_exceeded", "signal_timeout",
                      "unknown"]


class Body(BaseModel):
    """A response body."""

    model_config = ConfigDict(extra="forbid")

    def json_body(self) -> Any:
        return self.model_dump(mode="json", exclude_unset=True, by_alias=True)


class View(Body):
    """A response body built by `views.py`: fields it adds pass through."""

    model_config = ConfigDict(extra="allow")


# --- errors and acknowledgements -------------------------------------------------------------


class Error(Body):
    """Every error answer (4xx, 5xx)."""

    error: str = Field(description="one line: what is wrong and what to do")
    status: int = Field(description="the HTTP status, repeated")


#: The highest `priority` a submission may ask for (`SubmitQuery`).
MAX_PRIORITY = 100


class Accepted(Body):
    """A run accepted, cancelled or queued again."""

    run_id: str
    status: RunStatus | Literal["cancelling"] = Field(
        description="`cancelling`: the run is driven by another server, which cancels it at its next "
                    "lease renewal")
    replayed: bool = Field(False, description="true when an Idempotency-Key matched an existing run")


class Health(Body):
    ok: bool
    runs_queued: int = Field(description="runs waiting in the store, for any server")
    runs_running: int = Field(description="runs this server drives")
    owner: str = Field(description="this server's owner id, as runs' `owner` names it")


# --- applications ------------------------------------------------------------------------------


class Parameter(Body):
    name: str
    type: str | None = Field(description="the type hint, as written; null without one")
    required: bool


class DeploymentSummary(View):
    name: str
    version: int
    digest: str
    file: str
    deployed_at: float


class Application(View):
    name: str
    version: int
    versions: list[int] = Field(description="every deployed version, oldest first")
    digest: str = Field(description="sha256 of the deployed archive")
    file: str = Field(description="the application file inside the archive")
    deployed_at: float = Field(description="unix seconds")
    parameters: list[Parameter]
    description: str | None
    deployments: list[DeploymentSummary] = Field(description="every deployed version, newest first")
    input_schema: dict[str, Any] | None = Field(description=(
        "the JSON schema of the input, an object of the parameters; `x-body`: `value` when the one "
        "parameter's value is the whole body, `object` when the body is an object of them"))


class BrokenApplication(Body):
    """A deployed application whose latest version does not load on this server."""

    name: str
    error: str


class ApplicationList(Body):
    applications: list[Application | BrokenApplication]


class DeployedApplication(Application):
    new: bool = Field(description="false when the code is identical to the latest version")


class Deployed(Body):
    applications: list[DeployedApplication]


class DeployQuery(BaseModel):
    file: str = Field(min_length=1, description="path of the application file inside the archive")


# --- runs --------------------------------------------------------------------------------------


class Failure(View):
    kind: FailureKind
    type: str | None = Field(description="the exception's type name, when there is one")
    message: str
    function: str | None
    call_id: str | None
    traceback: str | None


class RunSummary(View):
    run_id: str
    application: str
    version: int | None = Field(description="the deployed version the run was accepted on")
    status: RunStatus
    created_at: float = Field(description="accepted, unix seconds")
    started_at: float | None
    ended_at: float | None
    queued_seconds: float | None = Field(description="from acceptance to start (or to now)")
    duration: float | None = Field(description="from start to end (or to now)")
    resumes: int
    owner: str | None = Field(description="the process driving the run under its lease (its owner id), "
                                          "while it is queued or running")
    priority: int = Field(1, description="its weight in the fair share of executors between runs")
    rerun_of: str | None = Field(None, description="for a rerun (`POST …/rerun`, `engine rerun`): the run "
                                                   "it came from")
    rerun_from: str | None = Field(None, description="for a rerun: the function it reran from")
    waiting: bool = Field(False, description="the run is running but only waits for signals: nothing of it "
                                             "executes and no executor is held (`status` stays `running`)")


class ResultFile(Body):
    content_type: str
    size: int
    url: str = Field(description="GET it for the bytes, with their content type")


class BudgetLimits(View):
    max_calls: int | None = Field(description="calls the run may create (every node of its call graph); "
                                               "null: no limit")
    max_depth: int | None = Field(description="depth of its call tree (the root is 0); null: no limit")
    max_duration: float | None = Field(description="seconds it may be driven, over all its tries; null: no "
                                                    "limit")


class BudgetUse(View):
    calls: int = Field(description="calls created so far")
    depth: int = Field(description="the deepest call so far")
    duration: float | None = Field(description="seconds driven so far, over all its tries")


class Budget(View):
    """A run's budget (docs/configuration.md#budgets): its limits and their use."""

    limits: BudgetLimits
    use: BudgetUse


class BudgetQuery(BaseModel):
    budget: str | None = Field(None, description="the run's budget, e.g. `calls=1000,depth=3,duration=600`: "
                                                 "replaces the limits it names (of the application's budget "
                                                 "when starting a run, of the run's when resuming it); "
                                                 "`none` lifts one. A malformed one is 422")


class SignalWait(View):
    """A signal future of the run still waiting for its signal."""

    name: str
    call_id: str
    since: float = Field(description="when the future was created, unix seconds")
    deadline: float | None = Field(description="when it fails with SignalTimeout; null: never")
    repeatable: bool


class SignalReceived(View):
    """A signal sent to the run (stored: it waits for a future of its name if none exists yet)."""

    name: str
    seq: int = Field(description="its place among the run's signals of that name, from 0")
    sent_at: float
    taken_by: str | None = Field(description="the repeatable signal future that took it")


class SignalSent(Body):
    """A signal stored for the run."""

    run_id: str
    name: str
    seq: int = Field(description="its place among the run's signals of that name, from 0")


class Run(RunSummary):
    result: Any = Field(description="the application's return value as JSON (succeeded runs); null when "
                                    "it is a File (see result_file)")
    result_file: ResultFile | None = Field(None, description="present when the application returned a File")
    result_error: str | None = Field(None, description="present when the result cannot be decoded on this "
                                                       "server")
    error: Failure | None
    calls: dict[str, int] = Field(description="calls by status, plus total, executions, and reused: "
                                              "checkpoints a rerun copied from the run it came from "
                                              "(not executed)")
    budget: Budget
    waits: list[SignalWait] = Field(default_factory=list, description="its signal futures still waiting")
    signals: list[SignalReceived] = Field(default_factory=list, description="signals sent to it")


class RunList(Body):
    runs: list[RunSummary] = Field(description="newest first; with `ids`, in the order asked")
    total: int = Field(description="runs matching the filters")
    unknown: list[str] | None = Field(default=None, description="with `ids` only: the ids no run has")


# --- webhooks ----------------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
#: Headers a webhook may not set: the delivery's own.
RESERVED_HEADERS = {"content-type", "content-length", "host", "transfer-encoding", "connection",
                    "engine-signature", "engine-delivery", "engine-event"}


class WebhookSpec(BaseModel):
    """Where to POST the run's end (a submission's `webhook`, or `webhook:` in engine.yaml)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description="an http:// or https:// URL")
    secret: str | None = Field(None, min_length=1, max_length=1024, description=(
        "signs each delivery: `Engine-Signature: t=TIMESTAMP,v1=HEX`, HEX the HMAC-SHA256 of "
        "`TIMESTAMP.BODY` under this secret. Never shown by the API, never logged"))
    headers: dict[str, str] = Field(default_factory=dict, max_length=50,
                                    description="extra request headers (values never shown by the API)")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(c.isspace() for c in url) or (port is not None and not 0 < port < 65536):
            raise ValueError("not a valid URL")
        return url

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.match(name) or name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name[:100]!r} is not a header name a webhook may set")
            if any(c in value for c in "\r\n\0") or len(value) > 8192:
                raise ValueError(f"the value of header {name!r} is not a valid header value")
        return headers


class RerunRequest(BaseModel):
    """`POST /v1/runs/{run_id}/rerun`: the function to rerun the run from, and the code."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", min_length=1, max_length=200,
                       description="a function of the run's application: its calls, what they created, "
                                   "what takes their values and what waited for them execute again; "
                                   "every other checkpoint of the run is reused")
    version: int | None = Field(None, ge=1, description="the deployed version of the run's application to "
                                                        "rerun with; default: the latest")


class Submission(BaseModel):
    """The submission envelope: `Content-Type: application/vnd.engine.submission+json`."""

    model_config = ConfigDict(extra="forbid")

    input: Any = Field(None, description="the application's input, as the plain JSON body would be; "
                                         "absent: no input")
    webhook: WebhookSpec | None = Field(None, description="POST the run's end there (instead of the "
                                                          "application's webhook in engine.yaml)")


class WebhookTarget(Body):
    url: str = Field(description="the URL, without any user:password part")
    signed: bool = Field(description="deliveries carry Engine-Signature (a secret is set)")
    headers: list[str] = Field(description="names of the extra headers sent (their values are not shown)")


class WebhookAttempt(Body):
    attempt: int
    at: float = Field(description="when it started, unix seconds")
    duration: float = Field(description="seconds")
    http_status: int | None = Field(description="the receiver's answer; null when there was none")
    error: str | None = Field(description="why it did not count as delivered, when it did not")


class WebhookDelivery(Body):
    delivery_id: str = Field(description="the `Engine-Delivery` header of every attempt: deduplicate on it")
    status: RunStatus = Field(description="the run's end it reports")
    state: Literal["pending", "delivered", "failed"] = Field(
        description="pending: (re)tried when due; failed: given up after the retry period")
    created_at: float
    next_at: float | None = Field(description="when a pending delivery is tried next")
    ended_at: float | None
    attempts: list[WebhookAttempt]


class Webhooks(Body):
    run_id: str
    webhook: WebhookTarget | None = Field(description="null: the run has no webhook")
    deliveries: list[WebhookDelivery] = Field(description="one per time the run ended, oldest first")


class RunsQuery(BaseModel):
    application: str | None = None
    status: RunStatus | None = None
    limit: int = Field(100, description="at most this many runs (1 to 10,000; beyond is clamped)")
    ids: str | None = Field(None, description=(
        "comma-separated run ids (at most 500): those runs, in the order asked; ids no run has are "
        "listed in `unknown`. Not combined with application, status or limit"))


#: The longest `wait` a submission may ask for, in seconds.
MAX_WAIT = 300.0


class SubmitQuery(BudgetQuery):
    priority: int = Field(1, ge=1, le=MAX_PRIORITY,
                          description="the run's weight in the fair share of executors between runs: "
                                      "when runs wait for the same function's executors, a run of "
                                      "priority p is handed p calls for every one a run of priority 1 "
                                      "gets (1 to 100; docs/server.md, \"Fair share between runs\")")
    wait: float | None = Field(None, ge=0, le=MAX_WAIT, allow_inf_nan=False, description=(
        "wait up to this many seconds (0 to 300) for the run to end: 200 with the run (its result or "
        "error) if it ends in time, else the usual 202"))


class FailedAttempt(View):
    attempt: int
    start: float | None
    end: float | None
    error_kind: str | None
    error: str | None


class Progress(View):
    current: float
    total: float
    message: str | None
    attributes: dict[str, str] | None


class TimerStats(View):
    count: int
    sum: float = Field(description="seconds")
    min: float
    max: float


class CallMetrics(View):
    counters: dict[str, int]
    timers: dict[str, TimerStats]


class Node(View):
    id: str
    function: str
    kind: Literal["call", "map", "reduce", "application", "signal"] = Field(
        description="application: a call of another application's entry point, inside this run; "
                    "signal: a wait for the signal named `function` (engine.signal), run by no executor")
    status: CallStatus
    attempts: int
    executions: int = Field(description="times its code started, across attempts and resumes")
    reused: bool = Field(False, description="a rerun's call whose checkpoint was copied from the run it "
                                            "came from: it did not execute")
    created: float | None = Field(description="when the call was made (it waits for its dependencies "
                                              "and a slot until start)")
    start: float | None
    end: float | None
    duration: float | None
    parent: str | None
    error: str | None
    error_kind: str | None
    failed_attempts: list[FailedAttempt] = Field(description="every attempt that failed, oldest first "
                                                             "(a call that failed in the end includes its "
                                                             "last attempt)")
    progress: Progress | None = Field(None, description="its last RequestContext.progress report")
    metrics: CallMetrics | None = Field(None, description="what it recorded through "
                                                          "RequestContext.metrics, over its attempts")


class Edge(View):
    from_: str = Field(alias="from")
    to: str
    kind: Literal["parent", "dependency", "tail"]


class DagRun(RunSummary):
    error: Failure | None
    budget: Budget | None = Field(None, description="its limits and their use (as in GET /v1/runs/{run_id})")
    waiting: bool = Field(False, description="it only waits for signals (as in GET /v1/runs/{run_id})")
    waits: list[SignalWait] = Field(default_factory=list, description="its signal futures still waiting")


class Dag(View):
    run: DagRun
    root: str = Field(description="the root call's id")
    nodes: list[Node]
    edges: list[Edge]
    generated_at: float


class LogEntry(View):
    call_id: str
    function: str
    attempt: int
    text: str


class Logs(Body):
    logs: list[LogEntry] = Field(description="oldest first")


class LogsQuery(BaseModel):
    call: str | None = Field(None, description="only this call's lines")
    function: str | None = Field(None, description="only this function's lines")


__all__ = ["Accepted", "Application", "ApplicationList", "Body", "BrokenApplication", "Budget",
           "BudgetLimits", "BudgetQuery", "BudgetUse", "Dag", "DagRun",
           "DeployQuery", "Deployed", "DeployedApplication", "DeploymentSummary", "Edge", "Error",
           "CallMetrics", "FailedAttempt", "Failure", "FailureKind", "Progress", "TimerStats",
           "Health", "LogEntry", "Logs", "LogsQuery", "Node", "Parameter", "ResultFile", "Run", "RunList",
           "RunSummary", "RunsQuery", "Submission", "SubmitQuery", "View", "WebhookAttempt", "WebhookDelivery",
           "WebhookSpec", "WebhookTarget", "Webhooks"]
