"""OpenTelemetry traces of real runs, received by a real OTLP receiver.

The receiver is the collector's gRPC `TraceService` (from opentelemetry-proto), served in this
process on a free port; the engine exports to it as it would to a collector, configured only by
`OTEL_*` variables. The application (`apps/app_tracing.py`) fans out to five children and a
combiner by tail call; one child makes a blocking call, one fails once and is retried, one makes
a span of its own, one maps over two items. Each test checks the tree of spans received against
the run's call graph as the store has it (`engine show --json`).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent import futures as cf
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import poll
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from serverlib import ServerProcess

from engine import tracing

APPS = Path(__file__).resolve().parent / "apps"
APP = f"{APPS / 'app_tracing.py'}:trace_root"
N = 5
SERVICE = "engine-tracing-test"


# --- the receiver ----------------------------------------------------------------------------


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent: str
    start: int
    end: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]
    error: bool
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        self.endpoint = ""

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the gRPC method
        received = []
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    received.append(Span(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent=s.parent_span_id.hex(), start=s.start_time_unix_nano,
                        end=s.end_time_unix_nano, attributes=_attributes(s.attributes),
                        events=[(e.name, _attributes(e.attributes)) for e in s.events],
                        links=[(ln.trace_id.hex(), ln.span_id.hex(), _attributes(ln.attributes))
                               for ln in s.links],
                        error=s.status.code == Status.STATUS_CODE_ERROR, resource=resource))
        with self.lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    found.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield found
    finally:
        server.stop(grace=0)


def otel_env(receiver: Receiver, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "TRACEPARENT"}
    env.update(OTEL_TRACES_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
               OTEL_SERVICE_NAME=SERVICE, **extra)
    return env


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


# --- the check -------------------------------------------------------------------------------


def expected_span_count(user_span: bool) -> int:
    # run + root + N children (+1 retry) + combine + 3 leaves (+ the user's span)
    return 1 + 1 + N + 1 + 1 + 3 + (1 if user_span else 0)


def check_tree(spans: list[Span], info: dict[str, Any], trace_id: str, parent_span_id: str, *,
               user_span: bool) -> None:
    """The spans of one run form the tree of its call graph, under `parent_span_id`."""
    assert {s.trace_id for s in spans} == {trace_id}
    runs = [s for s in spans if s.name == "run trace_root"]
    assert len(runs) == 1, [s.name for s in spans]
    run = runs[0]
    assert run.parent == parent_span_id
    assert run.attributes["engine.run_id"] == info["run_id"]
    assert run.attributes["engine.outcome"] == "succeeded"
    assert not run.error
    assert run.resource["service.name"] == SERVICE

    calls = {c["id"]: c for c in info["call_list"]}
    attempts: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        if s.name.startswith("call "):
            attempts[s.attributes["engine.call_id"]].append(s)
    for found in attempts.values():
        found.sort(key=lambda s: s.attributes["engine.attempt"])

    def creator_spans(call: dict[str, Any]) -> list[str]:
        """The span ids a call's attempts may be under: its creator's attempts, the run's for
        the root; a map's items go under the map's creator (a map never runs)."""
        parent = calls.get(call["parent"] or "")
        if parent is None:
            return [run.span_id]
        if parent["kind"] != "call":
            return creator_spans(parent)
        return [s.span_id for s in attempts[parent["id"]]]

    for call in calls.values():
        mine = attempts.get(call["id"], [])
        if call["kind"] != "call":
            assert not mine, f"a {call['kind']} node never runs, so has no span"
            continue
        assert len(mine) == call["executions"], (call, mine)
        for number, span in enumerate(mine, start=1):
            assert span.name == f"call {call['function']}"
            assert span.attributes["engine.function"] == call["function"]
            assert span.attributes["engine.attempt"] == number
            assert span.attributes["engine.run_id"] == info["run_id"]
            assert span.attributes["engine.executor"] and span.attributes["engine.executor.address"]
            assert span.parent in creator_spans(call), (call, span)
            assert run.start <= span.start <= span.end
    assert set(attempts) <= set(calls)

    by_function: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls.values():
        if call["kind"] == "call":
            by_function[call["function"]].append(call)
    # The root handed off by tail call to the combiner, which is under the root's span.
    (root,) = attempts[info["call_list"][0]["id"]]
    assert root.attributes["engine.outcome"] == "tail"
    (combine,) = by_function["combine"]
    assert root.attributes["engine.tail_call"] == combine["id"]
    assert attempts[combine["id"]][0].parent == root.span_id
    assert attempts[combine["id"]][0].attributes["engine.outcome"] == "succeeded"

    # The retried child: a failed attempt (an error, with its exception and a retry event), then
    # a second attempt beside it, linked to it, after the backoff.
    retried = [attempts[c["id"]] for c in by_function["child"] if len(attempts[c["id"]]) > 1]
    assert len(retried) == 1
    first, second = retried[0]
    assert first.error and first.attributes["engine.outcome"] == "failed"
    assert first.attributes["engine.failure_kind"] == "function_error"
    events = dict(first.events)
    assert "child 1 fails on its first attempt" in events["exception"]["exception.message"]
    assert events["exception"]["exception.type"] == "ValueError"
    assert events["retry"]["engine.retry.next_attempt"] == 2
    assert 0 < events["retry"]["engine.retry.delay_s"] <= 0.2
    assert second.attributes["engine.outcome"] == "succeeded" and not second.error
    assert second.parent == first.parent
    assert (first.trace_id, first.span_id, {"engine.link": "previous attempt"}) in second.links
    assert second.start >= first.end
    assert sum(len(attempts[c["id"]]) for c in by_function["child"]) == N + 1

    # Leaves: one under child 0's attempt (a blocking call), two under child 3's (a map).
    leaf_parents = sorted(attempts[c["id"]][0].parent for c in by_function["leaf"])
    child_spans = {s.span_id for c in by_function["child"] for s in attempts[c["id"]]}
    assert len(leaf_parents) == 3 and set(leaf_parents) <= child_spans
    assert len(set(leaf_parents)) == 2

    users = [s for s in spans if s.name == "user work"]
    if not user_span:
        assert not users
    else:
        (user,) = users
        assert user.parent in child_spans
        assert user.attributes["app.child"] == 2
        assert user.resource["service.name"] == SERVICE
        assert user.resource["engine.function"] == "child"
    assert len(spans) == expected_span_count(user_span), sorted(s.name for s in spans)


def engine_run(tmp_path: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", APP, "--json", "--input", str(N), *extra],
        env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "succeeded" and out["result"] == 0 + 100 + 1 + 2 + (1 + 2) + 4, out
    return out  # type: ignore[no-any-return]


def details(run_id: str, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "show", run_id, "--json"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


# --- the tests -------------------------------------------------------------------------------


def test_engine_run_traces_every_call_under_its_creator(receiver, state_dir, tmp_path) -> None:
    traceparent, trace_id, parent = new_traceparent()
    # The batching processor's default delay (5 s) is longer than the run: every span the
    # scheduler made reaches the receiver only because the engine flushes them as it exits.
    env = otel_env(receiver, TRACEPARENT=traceparent)
    out = engine_run(tmp_path, env, "--backend", "process")
    info = details(out["run_id"], env)
    spans = poll(lambda: len(receiver.of_trace(trace_id)) >= expected_span_count(True)
                 and receiver.of_trace(trace_id), timeout=10, what="every span")
    check_tree(spans, info, trace_id, parent, user_span=True)
    assert len(receiver.spans) == len(spans)  # nothing outside the TRACEPARENT's trace


def test_server_run_joins_the_submissions_trace(receiver, tmp_path) -> None:
    traceparent, trace_id, parent = new_traceparent()
    env = otel_env(receiver, OTEL_BSP_SCHEDULE_DELAY="100")
    server = ServerProcess(tmp_path / "state", env=env).start()
    try:
        server.deploy(APPS / "app_tracing.py")
        run_id = server.submit("trace_root", N, headers={"traceparent": traceparent})
        assert server.wait(run_id)["status"] == "succeeded"
        # Another run without a traceparent: a trace of its own, never the first one's.
        other = server.submit("trace_root", N)
        assert server.wait(other)["status"] == "succeeded"
        spans = poll(lambda: len(receiver.of_trace(trace_id)) >= expected_span_count(True)
                     and receiver.of_trace(trace_id), timeout=15, what="every span")
        info = details(run_id, {**env, "ENGINE_STATE_DIR": str(tmp_path / "state")})
        check_tree(spans, info, trace_id, parent, user_span=True)
        runs = poll(lambda: [s for s in receiver.spans if s.name == "run trace_root"
                             and s.attributes["engine.run_id"] == other], timeout=15, what="the other run")
        assert runs[0].trace_id != trace_id and runs[0].parent == ""
    finally:
        server.stop()


def test_a_failed_run(receiver, state_dir, tmp_path) -> None:
    """A RequestError ends the run while a sibling still runs: the attempt that raised it is a
    failure (not cancelled by the run's end, which its own outcome caused), the sibling is
    cancelled, the run failed."""
    traceparent, trace_id, parent = new_traceparent()
    env = otel_env(receiver, TRACEPARENT=traceparent)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", f"{APPS / 'app_tracing.py'}:trace_fails", "--json"],
        env=env, capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "failed", out
    spans = poll(lambda: len(receiver.of_trace(trace_id)) >= 4 and receiver.of_trace(trace_id),
                 timeout=10, what="every span")
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["call refuse", "call slow", "call trace_fails", "run trace_fails"]
    run, root = by_name["run trace_fails"], by_name["call trace_fails"]
    assert run.parent == parent and run.error and run.attributes["engine.outcome"] == "failed"
    assert dict(run.events)["exception"]["exception.message"] == "refused"
    assert root.parent == run.span_id and root.attributes["engine.outcome"] == "tail"
    refuse = by_name["call refuse"]
    assert refuse.parent == root.span_id and refuse.error
    assert refuse.attributes["engine.outcome"] == "failed"
    assert refuse.attributes["engine.failure_kind"] == "request_error"
    slow = by_name["call slow"]
    assert slow.attributes["engine.outcome"] == "cancelled" and not slow.error

    # Resumed (with the same TRACEPARENT): a second run span in the trace; the calls that run
    # again have no creator's attempt in this process (the root finished by tail call), so
    # they go under the new run span.
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "resume", out["run_id"], "--json"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "failed", proc.stderr
    # `slow` has an attempt span only if it was dispatched before `refuse` ended the run again
    # (both are ready at once): which comes first is a race of executor start-ups.
    spans = poll(lambda: len(receiver.of_trace(trace_id)) >= 6 and receiver.of_trace(trace_id),
                 timeout=10, what="the resumed run's spans")
    (again,) = [s for s in spans if s.name == "run trace_fails" and s.attributes["engine.resumed"]]
    assert again.parent == parent and again.span_id != run.span_id
    rerun = sorted(s.name for s in spans if s.parent == again.span_id)
    assert rerun in (["call refuse"], ["call refuse", "call slow"]), rerun


def test_a_refused_tail_call_is_a_failed_attempt(receiver, state_dir, tmp_path) -> None:
    """The root's tail call crosses the run's budget (`--budget depth=0`): the root fails with
    BudgetExceeded, and its attempt's span says so — not that it handed off by tail call."""
    traceparent, trace_id, _ = new_traceparent()
    env = otel_env(receiver, TRACEPARENT=traceparent)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "run", f"{APPS / 'app_tracing.py'}:trace_fails", "--json",
         "--budget", "depth=0"], env=env, capture_output=True, text=True, timeout=120)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["status"] == "failed", out
    spans = poll(lambda: len(receiver.of_trace(trace_id)) >= 2 and receiver.of_trace(trace_id),
                 timeout=10, what="the run's spans")
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["call trace_fails", "run trace_fails"], sorted(by_name)
    root = by_name["call trace_fails"]
    assert root.error and root.attributes["engine.outcome"] == "failed", root.attributes
    assert root.attributes["engine.failure_kind"] == "budget_exceeded", root.attributes
    assert "engine.tail_call" not in root.attributes


@pytest.mark.docker
def test_docker_run_traces_the_scheduler_side(receiver, docker_client, state_dir, tmp_path) -> None:
    """In containers: the same tree but for the user's span. The runtime image has no
    opentelemetry, so the executor makes nothing current and exports nothing (and the call
    that would make a span runs without one)."""
    traceparent, trace_id, parent = new_traceparent()
    env = otel_env(receiver, TRACEPARENT=traceparent)
    out = engine_run(tmp_path, env, "--backend", "docker")
    info = details(out["run_id"], env)
    spans = poll(lambda: len(receiver.of_trace(trace_id)) >= expected_span_count(False)
                 and receiver.of_trace(trace_id), timeout=10, what="every span")
    check_tree(spans, info, trace_id, parent, user_span=False)


def test_off_unless_the_environment_asks() -> None:
    assert not tracing.enabled({})
    assert not tracing.enabled({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_EXPORTER": "none"})
    assert tracing.enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"})
    assert not tracing.enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.enabled({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"})
    assert tracing.env_carrier({"TRACEPARENT": "00-a-b-01", "PATH": "/bin"}) == {"traceparent": "00-a-b-01"}


def test_off_imports_no_opentelemetry(tmp_path) -> None:
    """Without OTEL_* variables, neither the scheduler nor the executor imports opentelemetry."""
    code = (
        "import sys; from engine import tracing; import engine.runner, engine.executor.server\n"
        "from engine.scheduler.scheduler import Scheduler\n"
        "t = tracing.tracer(parent_from_env=True)\n"
        "assert type(t) is tracing.Tracer, t\n"
        "assert tracing.enter_call({}) is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
