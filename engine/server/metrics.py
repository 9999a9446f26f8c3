"""Metrics in the Prometheus text format (version 0.0.4), with no client library.

Only what is really recorded: counters are incremented where the event happens (the
scheduler's event callback, the backend wrapper, the HTTP layer), gauges are read from the
scheduler's live state when `/metrics` is scraped, histograms observe measured durations.
Everything runs on the event loop's thread, so nothing here locks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Labels = tuple[tuple[str, str], ...]


def _labels(values: dict[str, Any]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in values.items()))


def _fmt_labels(labels: Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = labels + extra
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name, self.help = name, help_text
        self.values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        key = _labels(labels)
        self.values[key] = self.values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for key, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_fmt_labels(key)} {_num(value)}")
        return lines


class Gauge:
    """Read when scraped: `read()` returns a number, or {labels dict as tuple: number}."""

    def __init__(self, name: str, help_text: str, read: Callable[[], float | dict[Labels, float]],
                 type_name: str = "gauge") -> None:
        self.name, self.help, self.read, self.type_name = name, help_text, read, type_name

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.type_name}"]
        value = self.read()
        if isinstance(value, dict):
            for key, v in sorted(value.items()):
                lines.append(f"{self.name}{_fmt_labels(key)} {_num(v)}")
        else:
            lines.append(f"{self.name} {_num(value)}")
        return lines


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]) -> None:
        self.name, self.help = name, help_text
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self.series: dict[Labels, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: Any) -> None:
        key = _labels(labels)
        counts, total = self.series.setdefault(key, ([0] * len(self.buckets), [0.0]))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        total[0] += value

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for key, (counts, total) in sorted(self.series.items()):
            for bound, count in zip(self.buckets, counts, strict=True):
                lines.append(f"{self.name}_bucket{_fmt_labels(key, (('le', _num(bound)),))} {count}")
            lines.append(f"{self.name}_sum{_fmt_labels(key)} {_num(total[0])}")
            lines.append(f"{self.name}_count{_fmt_labels(key)} {counts[-1]}")
        return lines


class Registry:
    def __init__(self) -> None:
        self.metrics: list[Counter | Gauge | Histogram] = []

    def counter(self, name: str, help_text: str) -> Counter:
        metric = Counter(name, help_text)
        self.metrics.append(metric)
        return metric

    def gauge(self, name: str, help_text: str, read: Callable[[], Any]) -> Gauge:
        metric = Gauge(name, help_text, read)
        self.metrics.append(metric)
        return metric

    def counter_of(self, name: str, help_text: str, read: Callable[[], Any]) -> Gauge:
        """A counter kept elsewhere (read when scraped), such as the Blobs service's totals."""
        metric = Gauge(name, help_text, read, type_name="counter")
        self.metrics.append(metric)
        return metric

    def histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
        metric = Histogram(name, help_text, buckets)
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
