"""OpenTelemetry traces of runs and calls: the one module that knows about OpenTelemetry.

Off unless the standard environment turns it on, and then only if the `tracing` extra is
installed (`pip install 'engine[tracing]'`: opentelemetry-sdk and the OTLP/gRPC exporter):

- `OTEL_SDK_DISABLED=true` turns it off, whatever else is set;
- `OTEL_TRACES_EXPORTER` names the exporters (`otlp`, `console`, comma-separated; `none`
  exports nothing); when it is not set, tracing is on as soon as an OTLP endpoint is
  (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). An SDK would
  default to `otlp` with no variable set at all; the engine does not, so that a machine
  without a collector never pays for tracing nor logs failed exports.
- everything else is the SDK's and the exporter's own: `OTEL_SERVICE_NAME` (default here:
  `engine`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_*` (headers, TLS, timeout),
  `OTEL_BSP_*`. Only OTLP over gRPC is installed by the extra;
  `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` is honoured when
  opentelemetry-exporter-otlp-proto-http is installed too.

When off, `tracer()` returns `Tracer`, whose hooks do nothing, and nothing imports
opentelemetry: the scheduler's cost is one empty method call per hook.

What is traced (docs/observability.md shows it as a trace viewer draws it):

- **a span per run** (`run <application>`), from the moment this process starts driving it to
  its end. Its parent is the submission's W3C `traceparent` (and `tracestate`) header, stored
  with the run (`runs.headers`); for `engine run` and `engine resume`, the `TRACEPARENT`
  environment variable (OpenTelemetry's convention for environment carriers) when the run has
  no such header. A resumed run (or one taken over from a dead server) gets a new run span in
  the same trace, with `engine.resumed`. The engine reads and writes W3C Trace Context only,
  whatever `OTEL_PROPAGATORS` says (that applies to what user code propagates); baggage is not
  carried.
- **a span per call attempt** (`call <function>`), from its dispatch to an executor to its
  outcome, under the span of the attempt that created the call (a child's under its
  creator's, a tail call's under the caller that returned it, the root call's under the run's;
  the items of a map or reduce under the span of the attempt that created the map, which never
  runs itself). A retry is a new attempt span beside the failed one (same parent), linked to
  it; the failed one is marked as an error, carries the exception as an `exception` event and
  a `retry` event with the backoff delay. Separate spans, rather than events on one span per
  call, because each attempt runs on its own executor, for its own time, and the spans its code
  made belong to that attempt: a viewer draws the failed attempt, the gap of the backoff, and
  the next attempt as bars one after the other, each with its own children.
- **into the executor:** each attempt's span context travels in `RunRequest.trace_context`;
  the executor makes it current around the user's function (`enter_call`), so spans that
  user code or its libraries make (the `openai` client's instrumentation, say) are children of
  their attempt's span. The executor exports them itself, with a provider of its own set up
  from the same environment (`executor_ready`) unless the user's code set one up first, and
  flushes them before it answers the call (an executor may be killed the moment it is no longer
  needed; it waits `EXECUTOR_FLUSH_WAIT_S` at most). An executor without opentelemetry installed (the runtime image has none) does none
  of this; one with the API only makes the context current, without exporting anything.

The scheduler's process uses a tracer provider of its own (never the global one: the engine
may run inside an application that configured its own), flushed and shut down when the
scheduler closes, so that `engine run` and `engine server` lose no span when they exit
(waiting `SHUTDOWN_WAIT_S` at most for a collector that does not answer).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.scheduler.pools import ExecutorState
    from engine.scheduler.state import CallState, RunState
    from engine.wire.v1 import engine_pb2 as pb

log = logging.getLogger("engine.tracing")

# W3C Trace Context, the one format the engine reads and writes whatever OTEL_PROPAGATORS says:
# what a carrier holds, as header names (lower case) and as the environment variables of
# OpenTelemetry's environment-carrier convention (upper case).
CARRIER_KEYS = ("traceparent", "tracestate")
DEFAULT_SERVICE_NAME = "engine"
EXPORTERS = ("otlp", "console")
# The longest an executor holds a call's answer, and an engine its exit, to export spans: an
# exporter whose collector does not answer retries for OTEL_EXPORTER_OTLP_TIMEOUT (10 s), and a
# collector that is down must not slow the runs it would have traced. Spans not exported by
# then are lost (a warning says so).
EXECUTOR_FLUSH_WAIT_S = 2.0
SHUTDOWN_WAIT_S = 5.0


def _exporters(environ: Mapping[str, str]) -> list[str]:
    """The exporters the environment asks for; empty when tracing is off (see the module doc)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER")
    if named is None or not named.strip():
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    wanted = [n.strip().lower() for n in named.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in EXPORTERS and n != "none"]
    if unknown:
        log.warning("OTEL_TRACES_EXPORTER: %s not supported (use %s or none); ignored",
                    ", ".join(unknown), " or ".join(EXPORTERS))
    return [n for n in wanted if n in EXPORTERS]


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    return bool(_exporters(os.environ if environ is None else environ))


def env_carrier(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trace context of the environment (`TRACEPARENT`, `TRACESTATE`)."""
    environ = os.environ if environ is None else environ
    return {k: environ[k.upper()] for k in CARRIER_KEYS if environ.get(k.upper())}


def executor_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `OTEL_*` variables an executor needs to export its code's spans as the engine does
    (a container does not inherit the engine's environment; a local process does anyway)."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k.startswith("OTEL_")}


# =============================================================================================
# the scheduler's side


class Tracer:
    """The scheduler's hooks. This base class is the tracer when tracing is off: every hook
    does nothing. `tracer()` returns an `_OtelTracer` when it is on."""

    def executor_env(self) -> dict[str, str]:
        return {}

    def run_started(self, run: RunState, headers_of: Callable[[RunState], list[tuple[str, str]]], *,
                    resumed: bool = False) -> None:
        """`run` is being driven by this process from now on; `headers_of(run)` reads the
        headers its submission came with."""

    def call_added(self, call: CallState) -> None:
        """`call` was just created (by the call running as its parent, or as the root)."""

    def attempt_started(self, call: CallState, ex: ExecutorState) -> dict[str, str] | None:
        """`call` was dispatched to `ex`: its attempt's trace context, for the `RunRequest`."""
        return None

    def attempt_ended(self, call: CallState, response: pb.RunResponse | None, failure: pb.Failure | None,
                      dropped: bool) -> None:
        """The attempt answered with `response`, or failed without one (`failure`: a timeout,
        a lost executor), or its outcome was `dropped` (the call or its run was cancelled, or
        the scheduler is closing). Called after the scheduler acted on the outcome, so that
        `call.status` tells whether a retry follows."""

    def run_ended(self, run: RunState) -> None:
        """This process stops driving `run`: it finished, or its lease was lost."""

    async def close(self) -> None:
        """End what is still open and flush every span to the exporter."""


_NO_TRACER = Tracer()


def tracer(*, parent_from_env: bool = False) -> Tracer:
    """The tracer the environment asks for (see the module doc). `parent_from_env`: runs without
    a `traceparent` header of their own become children of the environment's `TRACEPARENT`
    (`engine run`, `engine resume`; not a server, whose runs are not its process's children)."""
    exporters = _exporters(os.environ)
    if not exporters:
        return _NO_TRACER
    try:
        return _OtelTracer(exporters, env_carrier() if parent_from_env else {})
    except ImportError as exc:
        log.warning("tracing is asked for by OTEL_* variables, but OpenTelemetry is not installed (%s): "
                    "pip install 'engine[tracing]'; running without traces", exc)
        return _NO_TRACER


def _provider(exporters: list[str], extra_resource: dict[str, str] | None = None) -> tuple[Any, list[Any]]:
    """A TracerProvider exporting to `exporters` through batching processors, configured by the
    environment, and those processors. Raises ImportError when the SDK or an exporter is not
    installed."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create(extra_resource or {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # Shut down by its owner (`_OtelTracer.close`); an executor ends with os._exit anyway.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    processors = [_own_process_only()(BatchSpanProcessor(_otlp_exporter() if name == "otlp" else ConsoleSpanExporter()))
                  for name in exporters]
    for processor in processors:
        provider.add_span_processor(processor)
    return provider, processors


def _otlp_exporter() -> Any:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc").strip().lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPExporter

        return HTTPExporter()
    if protocol != "grpc":
        log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported: exporting over gRPC", protocol)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


@functools.cache
def _own_process_only() -> Any:
    """The class of a span processor that passes on only the spans of the process that made it,
    and notes that there are spans to flush. A process forked by a call inherits the executor's
    provider, and with it a copy of the exporter's gRPC channel that it must never use (see
    "Forking inside a call" in `engine.executor.server`): its spans are dropped. (Made on first
    use: it subclasses the SDK's `SpanProcessor`, which is imported only when tracing is on.)"""
    from opentelemetry.sdk.trace import SpanProcessor

    class OwnProcessOnly(SpanProcessor):
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.pid = os.getpid()
            self.dirty = False

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            if os.getpid() == self.pid:
                self.inner.on_start(span, parent_context=parent_context)

        def on_end(self, span: Any) -> None:
            if os.getpid() == self.pid:
                self.dirty = True
                self.inner.on_end(span)

        def shutdown(self) -> None:
            if os.getpid() == self.pid:
                self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            if os.getpid() != self.pid:
                return True
            self.dirty = False
            return bool(self.inner.force_flush(timeout_millis))

    return OwnProcessOnly


class _RunTrace:
    """What the tracer keeps of one run while it drives it."""

    __slots__ = ("run", "span", "attempts", "creators")

    def __init__(self, run: RunState, span: Any) -> None:
        self.run = run
        self.span = span
        # The latest attempt's span of each call (ended or not): the parent of the calls it
        # creates, and the link of its next attempt.
        self.attempts: dict[str, Any] = {}
        # The span each call was created under (see `_OtelTracer.call_added`).
        self.creators: dict[str, Any] = {}


class _OtelTracer(Tracer):
    def __init__(self, exporters: list[str], default_parent: dict[str, str]) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Link, SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        from engine import wire
        from engine.scheduler import state
        from engine.wire.v1 import engine_pb2 as pb

        self._trace, self._w3c = trace, TraceContextTextMapPropagator()
        self._Link, self._Status, self._StatusCode = Link, Status, StatusCode
        self._internal = SpanKind.INTERNAL
        self._wire, self._state, self._pb = wire, state, pb
        self.provider, _ = _provider(exporters)
        self.tracer = self.provider.get_tracer("engine")
        self.default_parent = default_parent
        self.runs: dict[str, _RunTrace] = {}
        # Attempt spans not ended yet, by call: an attempt may end after its run did (the
        # RequestError that ends the run is the outcome of an attempt still being handled).
        self.open: dict[CallState, Any] = {}

    def executor_env(self) -> dict[str, str]:
        return executor_environment()

    def run_started(self, run: RunState, headers_of: Callable[[RunState], list[tuple[str, str]]], *,
                    resumed: bool = False) -> None:
        carrier = {k: v for k, v in headers_of(run) if k in CARRIER_KEYS}
        if "traceparent" not in carrier:
            carrier = self.default_parent
        span = self.tracer.start_span(
            f"run {run.app.name}", context=self._w3c.extract(carrier), kind=self._internal,
            attributes={"engine.run_id": run.run_id, "engine.application": run.app.name,
                        "engine.resumed": resumed},
        )
        old = self.runs.pop(run.run_id, None)
        if old is not None:
            self._end_run(old.run, old)
        self.runs[run.run_id] = _RunTrace(run, span)

    def call_added(self, call: CallState) -> None:
        # Recorded now rather than at dispatch: the creator may have failed and be on its next
        # attempt by the time this call runs, and the call belongs under the one that made it.
        trace = self.runs.get(call.run.run_id)
        if trace is not None:
            trace.creators[call.id] = self._creator(trace, call)

    def _creator(self, trace: _RunTrace, call: CallState) -> Any:
        """The span a call goes under: its parent's latest attempt; for the items of a map or
        reduce (whose parent never runs), the span the map went under; for the root, the run.
        After a resume, a parent that does not run again in this process has no span here: the
        nearest ancestor that has one, or the run."""
        parent_id = call.parent_id
        while parent_id is not None:
            span = trace.attempts.get(parent_id) or trace.creators.get(parent_id)
            if span is not None:
                return span
            parent = call.run.calls.get(parent_id)
            parent_id = parent.parent_id if parent is not None else None
        return trace.span

    def attempt_started(self, call: CallState, ex: ExecutorState) -> dict[str, str] | None:
        trace = self.runs.get(call.run.run_id)
        if trace is None:
            return None
        parent = trace.creators.get(call.id) or self._creator(trace, call)
        previous = trace.attempts.get(call.id)
        links = ([self._Link(previous.get_span_context(), {"engine.link": "previous attempt"})]
                 if previous is not None else None)
        start = int(call.started_at * 1e9) if call.started_at is not None else None
        span = self.tracer.start_span(
            f"call {call.function}", context=self._trace.set_span_in_context(parent),
            kind=self._internal, links=links, start_time=start,
            attributes={"engine.run_id": call.run.run_id, "engine.call_id": call.id,
                        "engine.function": call.function, "engine.attempt": call.attempts,
                        "engine.executor": ex.handle.id, "engine.executor.address": ex.handle.address},
        )
        trace.attempts[call.id] = self.open[call] = span
        # Written here rather than by a propagator (`propagate.inject` goes through a composite
        # of them): this is on the path of every call.
        ctx = span.get_span_context()
        carrier = {"traceparent": f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"}
        if ctx.trace_state:
            carrier["tracestate"] = ctx.trace_state.to_header()
        return carrier

    def attempt_ended(self, call: CallState, response: pb.RunResponse | None, failure: pb.Failure | None,
                      dropped: bool) -> None:
        span = self.open.pop(call, None)
        if span is None:
            return
        pb, status = self._pb, self._state
        returned = response.WhichOneof("outcome") if response is not None else None
        if dropped:
            outcome = "cancelled"
        elif returned == "value" and call.status in (status.SUCCEEDED, status.TAIL):
            outcome = "succeeded"
        elif returned == "tail_call" and call.status != status.FAILED:  # (refused: failed)
            outcome = "tail"
            span.set_attribute("engine.tail_call", response.tail_call.root_id)  # type: ignore[union-attr]
        else:
            outcome = "failed"
            if response is not None and returned == "failure":
                failure = response.failure
            failure = failure or call.failure or self._wire.make_failure(
                pb.FAILURE_KIND_EXECUTOR_LOST, "the call's value never reached the scheduler",
                function=call.function, call_id=call.id)
        span.set_attribute("engine.outcome", outcome)
        if outcome == "failed" and failure is not None:
            self._record_failure(span, failure)
            if call.status == status.QUEUED:  # retried (`Scheduler._attempt_failed`)
                attributes: dict[str, Any] = {"engine.retry.next_attempt": call.attempts + 1}
                if call.retry_handle is not None:
                    loop_time = call.retry_handle.when() - _loop_time()
                    attributes["engine.retry.delay_s"] = round(max(0.0, loop_time), 3)
                span.add_event("retry", attributes)
        span.end()

    def _record_failure(self, span: Any, failure: pb.Failure) -> None:
        kind = self._wire.failure_kind_name(failure.kind)
        span.set_attribute("engine.failure_kind", kind)
        span.add_event("exception", {
            "exception.type": failure.type_name or kind, "exception.message": failure.message,
            "exception.stacktrace": failure.traceback,
        })
        span.set_status(self._Status(self._StatusCode.ERROR, self._wire.describe(failure)))

    def run_ended(self, run: RunState) -> None:
        trace = self.runs.pop(run.run_id, None)
        if trace is None:
            return
        self._end_run(run, trace)
        # Its running attempts were cancelled and end as such (`attempt_ended`, dropped), but
        # one of them may be the attempt whose outcome ended the run, still being handled: any
        # left open once this loop turn is over ended without an outcome.
        try:
            asyncio.get_running_loop().call_soon(self._end_open, run)
        except RuntimeError:
            self._end_open(run)

    def _end_open(self, run: RunState | None) -> None:
        for call in [c for c in self.open if run is None or c.run is run]:
            span = self.open.pop(call)
            span.set_attribute("engine.outcome", "cancelled")
            span.end()

    def _end_run(self, run: RunState, trace: _RunTrace) -> None:
        span = trace.span
        # "released": still running when this process stopped driving it (a server shutting
        # down, a Ctrl-C not yet turned into a cancellation); "lost": its lease went elsewhere.
        outcome = "lost" if run.lost else "released" if run.status == self._state.RUNNING else run.status
        span.set_attribute("engine.outcome", outcome)
        span.set_attribute("engine.calls", len(run.calls))
        span.set_attribute("engine.reused", run.reused)
        if run.failure is not None and outcome in ("failed", "cancelled"):
            self._record_failure(span, run.failure)
        span.end()

    async def close(self) -> None:
        traces, self.runs = list(self.runs.values()), {}
        for trace in traces:  # runs still in flight: released to whoever drives them next
            self._end_run(trace.run, trace)
        self._end_open(None)
        # Off the loop, and on a daemon thread that the process does not wait for past
        # SHUTDOWN_WAIT_S: an exporter that cannot reach its collector retries until its timeout.
        if not await asyncio.to_thread(_in_background(self.provider.shutdown).wait, SHUTDOWN_WAIT_S):
            log.warning("the trace exporter did not finish within %g s: the spans it still held are lost",
                        SHUTDOWN_WAIT_S)


def _in_background(work: Callable[[], object]) -> threading.Event:
    """Run `work` on a daemon thread; the event is set when it returns or raises."""
    finished = threading.Event()

    def target() -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 - exporting is best effort
            log.warning("exporting spans failed", exc_info=True)
        finally:
            finished.set()

    threading.Thread(target=target, name="engine-trace-export", daemon=True).start()
    return finished


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


# =============================================================================================
# the executor's side


class _ExecutorTracing:
    """The executor's OpenTelemetry, once it is known to be installed."""

    def __init__(self) -> None:
        from opentelemetry import context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.context, self.w3c = context, TraceContextTextMapPropagator()
        self.flush: Callable[[], None] | None = None


_executor: _ExecutorTracing | None = None
_executor_checked = False
_executor_lock = threading.Lock()


def _executor_tracing() -> _ExecutorTracing | None:
    global _executor, _executor_checked
    if not _executor_checked:
        with _executor_lock:
            if not _executor_checked:
                try:
                    _executor = _ExecutorTracing()
                except ImportError:
                    _executor = None  # no opentelemetry in this image: nothing to do
                _executor_checked = True
    return _executor


def executor_ready(function: str) -> None:
    """The executor imported the user's code: if the environment turns tracing on and neither
    that code nor anything else set up a tracer provider, set up one that exports (as the
    scheduler's does) the spans user code makes. Without the SDK, spans stay non-recording."""
    exporters = _exporters(os.environ)
    if not exporters:
        return
    found = _executor_tracing()
    if found is None or found.flush is not None:
        return
    try:
        from opentelemetry import trace

        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return  # the user's code set up its own: its spans go where it says
        provider, processors = _provider(exporters, {"engine.function": function})
    except ImportError:
        return
    trace.set_tracer_provider(provider)

    stuck: list[threading.Event] = []

    def flush() -> None:
        if not any(p.dirty for p in processors):
            return
        if stuck and not stuck[0].is_set():
            return  # an earlier flush still waits for the collector: this call's spans queue behind it
        stuck.clear()
        finished = _in_background(provider.force_flush)
        if not finished.wait(EXECUTOR_FLUSH_WAIT_S):
            stuck.append(finished)
            log.warning("the trace exporter did not finish within %g s; answering calls without waiting "
                        "for it until it does (spans it holds are lost if this executor stops)",
                        EXECUTOR_FLUSH_WAIT_S)

    found.flush = flush


def enter_call(carrier: Mapping[str, str]) -> object | None:
    """Make the call's trace context (`RunRequest.trace_context`) current on this thread.
    Returns what `leave_call` needs; None (and nothing done) without a context or without
    opentelemetry."""
    if not carrier:
        return None
    found = _executor_tracing()
    if found is None:
        return None
    return found.context.attach(found.w3c.extract(dict(carrier)))


def leave_call(token: object | None) -> None:
    """Undo `enter_call`, and export the spans the call made before it is answered: the
    scheduler may stop this executor as soon as it is."""
    if token is None:
        return
    found = _executor
    if found is None:
        return
    found.context.detach(token)  # type: ignore[arg-type]
    if found.flush is not None:
        found.flush()


__all__ = [
    "Tracer", "enabled", "enter_call", "env_carrier", "executor_environment", "executor_ready",
    "leave_call", "tracer",
]
