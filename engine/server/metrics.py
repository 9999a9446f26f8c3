"""`/metrics`, through `prometheus_client`: the server's own registry, in the Prometheus text
format.

Only what is really recorded: counters are incremented where the event happens (the
scheduler's event callback, the backend wrapper, the HTTP layer), histograms observe measured
durations, and gauges — and counters kept elsewhere, such as the Blobs service's totals — are
read from live state when `/metrics` is scraped (`Registry.gauge`, `Registry.counter_of`). Every
server has a registry of its own (not the library's global one), so nothing leaks between two
servers in one process, and `_created` series are left out: they say nothing a scrape needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

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
