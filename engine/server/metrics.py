"""`/metrics`, through `prometheus_client`: the server's own registry, in the Prometheus text
format, and every series the server exports, named once (`ServerMetrics`).

Only what is really recorded: counters are incremented where the event happens (the
scheduler's event callback in `control.py`, the backend wrapper, the HTTP layer's middleware),
histograms observe measured durations, and gauges — and counters kept elsewhere, such as the
Blobs service's totals — are read from live state when `/metrics` is scraped
(`ServerMetrics.read_live`). Every server has a registry of its own (not the library's global
one), so nothing leaks between two servers in one process, and `_created` series are left out:
they say nothing a scrape needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from engine.wire.v1 import engine_pb2 as pb

try:  # prometheus_client >= 0.18
    from prometheus_client import disable_created_metrics

    disable_created_metrics()
except ImportError:  # pragma: no cover - older clients
    pass

#: What a live reading returns: one number, or {((label, value), ...): number}.
Reading = float | dict[tuple[tuple[str, str], ...], float]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Registry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counted:
        return Counted(Counter(name, help_text, list(labels), registry=self.registry))

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...],
                  labels: Sequence[str] = ()) -> Observed:
        return Observed(Histogram(name, help_text, list(labels), buckets=buckets, registry=self.registry))

    def gauge(self, name: str, help_text: str, read: Callable[[], Reading]) -> None:
        self.registry.register(_Read(name, help_text, read, GaugeMetricFamily))

    def counter_of(self, name: str, help_text: str, read: Callable[[], Reading]) -> None:
        """A counter kept elsewhere, read when scraped."""
        self.registry.register(_Read(name, help_text, read, CounterMetricFamily))

    def summary_of(self, name: str, help_text: str,
                   read: Callable[[], dict[tuple[tuple[str, str], ...], tuple[float, float]]]) -> None:
        """A summary (count and sum, no quantiles) kept elsewhere, read when scraped."""
        self.registry.register(_ReadSummary(name, help_text, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Counted:
    """`inc(amount, **labels)`: the labels by name, as the call site knows them."""

    def __init__(self, metric: Counter) -> None:
        self.metric = metric

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        (self.metric.labels(**labels) if labels else self.metric).inc(amount)


class Observed:
    def __init__(self, metric: Histogram) -> None:
        self.metric = metric

    def observe(self, value: float, **labels: Any) -> None:
        (self.metric.labels(**labels) if labels else self.metric).observe(value)


class _ReadSummary(Collector):
    def __init__(self, name: str, help_text: str,
                 read: Callable[[], dict[tuple[tuple[str, str], ...], tuple[float, float]]]) -> None:
        self.name, self.help, self.read = name, help_text, read

    def collect(self) -> Iterator[Metric]:
        value = self.read()
        names = sorted({label for key in value for label, _ in key})
        metric = SummaryMetricFamily(self.name, self.help, labels=names)
        for key, (count, total) in sorted(value.items()):
            given = dict(key)
            metric.add_metric([given.get(label, "") for label in names], count_value=int(count), sum_value=total)
        yield metric

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _Read(Collector):
    """A metric whose value lives elsewhere, read at each scrape."""

    def __init__(self, name: str, help_text: str, read: Callable[[], Reading], family: Any) -> None:
        self.name, self.help, self.read, self.family = name, help_text, read, family

    def collect(self) -> Iterator[Metric]:
        value = self.read()
        name = self.name[: -len("_total")] if self.family is CounterMetricFamily and self.name.endswith("_total") \
            else self.name
        if not isinstance(value, dict):
            yield self.family(name, self.help, value=value)
            return
        names = sorted({label for key in value for label, _ in key})
        metric = self.family(name, self.help, labels=names)
        for key, v in sorted(value.items()):
            given = dict(key)
            metric.add_metric([given.get(label, "") for label in names], v)
        yield metric

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ServerMetrics:
    """Every series `engine server` exports. The recorded ones are attributes, incremented or
    observed where the event happens; `read_live` registers those read at each scrape."""

    def __init__(self) -> None:
        self.registry = r = Registry()
        self.http_requests = r.counter("engine_http_requests_total", "HTTP requests answered, by method and status.",
                                       labels=("method", "status"))
        self.runs_accepted = r.counter("engine_runs_accepted_total", "Runs accepted (HTTP 202), by application.",
                                       labels=("application",))
        self.runs_finished = r.counter("engine_runs_finished_total", "Runs that ended, by status.",
                                       labels=("status",))
        self.calls_finished = r.counter("engine_calls_finished_total",
                                        "Calls that ended, by outcome (succeeded, failed, cancelled).",
                                        labels=("outcome",))
        self.dispatch_latency = r.histogram(
            "engine_call_dispatch_latency_seconds",
            "From a call being ready (queued) to its dispatch to an executor, first attempts only.",
            LATENCY_BUCKETS, labels=("backend",))
        self.run_queue_wait = r.histogram(
            "engine_run_queue_seconds", "From a run being accepted to its start.", LATENCY_BUCKETS)
        self.executor_starts = r.counter(
            "engine_executor_starts_total",
            "Executors started: containers on the docker backend, processes on the process backend.",
            labels=("backend", "function"))
        self.executor_start_failures = r.counter(
            "engine_executor_start_failures_total", "Executors that failed to start.",
            labels=("backend", "function"))
        # What calls recorded through RequestContext.metrics, by (application, function, name).
        # User code may add negative amounts to a counter, which a prometheus_client Counter
        # refuses: kept here and read at each scrape.
        self._user_counters: dict[tuple[tuple[str, str], ...], float] = {}
        self._user_timers: dict[tuple[tuple[str, str], ...], tuple[float, float]] = {}
        r.counter_of("engine_request_counter_total",
                     "Counters that functions add to through RequestContext.metrics.counter, by "
                     "application, function and counter name.", lambda: dict(self._user_counters))
        r.summary_of("engine_request_timer_seconds",
                     "Durations that functions record through RequestContext.metrics.timer, by "
                     "application, function and timer name.", lambda: dict(self._user_timers))

    def record_request_metrics(self, application: str, function: str, metrics: pb.CallMetrics) -> None:
        """One call attempt's RequestContext.metrics, added to the totals."""
        base = (("application", application), ("function", function))
        for name, value in metrics.counters.items():
            key = (*base, ("name", name))
            self._user_counters[key] = self._user_counters.get(key, 0) + value
        for name, t in metrics.timers.items():
            key = (*base, ("name", name))
            count, total = self._user_timers.get(key, (0, 0.0))
            self._user_timers[key] = (count + t.count, total + t.sum)

    def read_live(self, *, runs_queued: Callable[[], Reading], runs_running: Callable[[], Reading],
                  calls_queued: Callable[[], Reading], calls_running: Callable[[], Reading],
                  executors_live: Callable[[], Reading], blob_bytes: Callable[[], Reading],
                  blobs: Callable[[], Reading]) -> None:
        r = self.registry
        r.gauge("engine_runs_queued", "Runs accepted and waiting for capacity (the durable queue's depth).",
                runs_queued)
        r.gauge("engine_runs_running", "Runs executing now.", runs_running)
        r.gauge("engine_calls_queued",
                "Calls ready to run and waiting for an executor slot (including retry back-off).", calls_queued)
        r.gauge("engine_calls_running", "Calls executing now.", calls_running)
        r.gauge("engine_executors_live", "Executors started or starting, by backend.", executors_live)
        r.counter_of("engine_blob_bytes_total",
                     "Bytes of large values moved through the Blobs service, by direction (put: "
                     "executors to the store, get: the store to executors).", blob_bytes)
        r.counter_of("engine_blobs_total", "Large values moved through the Blobs service, by direction.", blobs)

    def render(self) -> bytes:
        return self.registry.render()
