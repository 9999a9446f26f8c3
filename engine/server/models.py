"""The bodies of the HTTP API as pydantic models: what handlers return, what query strings
carry, and — through `openapi.py` — the schemas of `/openapi.json`.

Handlers build a model from the plain JSON that `views.py` reads out of the store and answer
with `model_dump(mode="json", exclude_unset=True)`: a field the handler did not set (a run's
`result_file` when its result is not a `File`, `replayed` when no Idempotency-Key matched) is
left out of the body, as before models, rather than sent as null. Models of what `views.py`
builds accept fields they do not name (`extra="allow"`), so a field added there reaches the
client at once; name it here too, so that the document describes it.

Request bodies are not models: a run's input is whatever the application takes (its type hints
validate it, `engine.app.validate_input`), and a deployment is a zip archive. Query strings
are (`RunsQuery`, `DeployQuery`, `LogsQuery`): validated, and documented, from one place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.statuses import CallStatus, RunStatus

FailureKind = Literal["function_error", "request_error", "timeout", "out_of_memory", "executor_lost",
                      "dependency_failed", "cancelled", "internal", "unknown"]


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


class ResultFile(Body):
    content_type: str
    size: int
    url: str = Field(description="GET it for the bytes, with their content type")


class Run(RunSummary):
    result: Any = Field(description="the application's return value as JSON (succeeded runs); null when "
                                    "it is a File (see result_file)")
    result_file: ResultFile | None = Field(None, description="present when the application returned a File")
    result_error: str | None = Field(None, description="present when the result cannot be decoded on this "
                                                       "server")
    error: Failure | None
    calls: dict[str, int] = Field(description="calls by status, plus total and executions")


class RunList(Body):
    runs: list[RunSummary] = Field(description="newest first")
    total: int = Field(description="runs matching the filters")


class SubmitQuery(BaseModel):
    priority: int = Field(1, ge=1, le=MAX_PRIORITY,
                          description="the run's weight in the fair share of executors between runs: "
                                      "when runs wait for the same function's executors, a run of "
                                      "priority p is handed p calls for every one a run of priority 1 "
                                      "gets (1 to 100; docs/server.md, \"Fair share between runs\")")


class RunsQuery(BaseModel):
    application: str | None = None
    status: RunStatus | None = None
    limit: int = Field(100, description="at most this many runs (1 to 10,000; beyond is clamped)")


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
    kind: Literal["call", "map", "reduce"]
    status: CallStatus
    attempts: int
    executions: int = Field(description="times its code started, across attempts and resumes")
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


__all__ = ["Accepted", "Application", "ApplicationList", "Body", "BrokenApplication", "Dag", "DagRun",
           "DeployQuery", "Deployed", "DeployedApplication", "DeploymentSummary", "Edge", "Error",
           "CallMetrics", "FailedAttempt", "Failure", "FailureKind", "Progress", "TimerStats",
           "Health", "LogEntry", "Logs", "LogsQuery", "Node", "Parameter", "ResultFile", "Run", "RunList",
           "RunSummary", "RunsQuery", "SubmitQuery", "View"]
