"""The request context on the scheduler's side: headers, durable state, progress and metrics.

A running call reaches these through the `SchedulerCallback` service (`RequestInfo`, `GetState`,
`SetState`, `Progress`; the SDK's `engine.sdk.context`); its metrics arrive with its outcome
(`RunResponse.metrics`).

- **Headers** are the submitting HTTP request's, stored with the run (`runs.headers`) and read
  once per run, when a call first asks.
- **State** is per run: one dict in memory, loaded from the store when a call first touches it,
  and written through to the store on every `set`. Writes apply in the order the scheduler
  receives them (the last one wins; there is no read-modify-write), and a call that starts after
  a `set` returned sees it. The store write joins the group commit, so it is committed no later
  than the outcome of the call that made it: a finished call's writes are never lost, and a call
  re-run after a crash may find its own earlier writes. Values are pickled by the writer and
  kept opaque here: inline when small, as blobs when large (`Store.keep`).
- **Progress** is each call's last report: kept on the call, streamed through the scheduler's
  event callback, and written to `calls.progress` once per loop turn however often it changes
  (the latest report wins).
- **Metrics** (counters and timers) are summed over a call's attempts into `calls.metrics`, and
  handed to `on_metrics` (the server's `/metrics`) as each attempt reports them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine import wire
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.scheduler.state import CallState, RunState
    from engine.store import Store

# Header names never shown to user code: credentials of the submitter, and what belongs to one
# HTTP connection rather than to the request.
HIDDEN_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "connection", "keep-alive",
    "te", "trailer", "transfer-encoding", "upgrade", "content-length", "expect",
    "proxy-connection",
})


def visible_headers(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers of a submission that its functions may read (see `HIDDEN_HEADERS`)."""
    return [(k, v) for k, v in pairs if k.lower() not in HIDDEN_HEADERS]


def headers_json(pairs: list[tuple[str, str]]) -> str | None:
    """The headers a run keeps, names in lower case (as HTTP/2 sends them), as JSON."""
    shown = visible_headers(pairs)
    return json.dumps([[k.lower(), v] for k, v in shown]) if shown else None


class RequestContexts:
    """What the scheduler keeps of its runs' request contexts (see the module doc)."""

    def __init__(self, store: Store, on_event: Callable[[CallState], None],
                 schedule_flush: Callable[[], None]) -> None:
        self.store = store
        self.on_event = on_event
        # Commit at the end of this loop turn (what the scheduler does after every change).
        self.schedule_flush = schedule_flush
        self.on_metrics: Callable[[RunState, CallState, pb.CallMetrics], None] | None = None
        self._progress_dirty: set[CallState] = set()

    # --- headers ---------------------------------------------------------------------------

    def headers_of(self, run: RunState) -> list[tuple[str, str]]:
        if run.headers is None:
            raw = self.store.get_run(run.run_id).headers
            run.headers = [(str(k), str(v)) for k, v in json.loads(raw)] if raw else []
        return run.headers

    # --- state -----------------------------------------------------------------------------

    def _state(self, run: RunState) -> dict[str, tuple[bytes | None, str | None]]:
        if run.state is None:
            run.state = self.store.load_state(run.run_id)
        return run.state

    def get(self, run: RunState, key: str) -> pb.GetStateResponse:
        found = self._state(run).get(key)
        if found is None:
            return pb.GetStateResponse(found=False)
        data, digest = found
        encoder = wire.PayloadEncoder(self.store)
        if data is not None:
            return pb.GetStateResponse(found=True, value=encoder.data(data))
        assert digest is not None
        return pb.GetStateResponse(found=True, value=encoder.reference(
            digest, self.store.blob_size(digest), lambda: self.store.get_blob(digest)))

    def set(self, call: CallState, key: str, value: pb.Payload) -> None:
        data: bytes | None
        digest: str | None
        if value.blob:
            if not self.store.has_blob(value.blob):
                raise wire.InvalidMessage(f"state value blob {value.blob[:12]} never reached the scheduler")
            data, digest = None, value.blob
        else:
            data, digest = self.store.keep(value.data)
        self._state(call.run)[key] = (data, digest)
        self.store.set_state(call.run.run_id, key, data, digest, call.id)
        self.schedule_flush()

    # --- progress --------------------------------------------------------------------------

    def progress(self, call: CallState, request: pb.ProgressRequest) -> None:
        for name, number in (("current", request.current), ("total", request.total)):
            if not math.isfinite(number):
                raise wire.InvalidMessage(f"progress {name} must be a finite number, got {number}")
        call.progress = {
            "current": _number(request.current),
            "total": _number(request.total),
            "message": request.message if request.HasField("message") else None,
            "attributes": dict(request.attributes) or None,
        }
        self._progress_dirty.add(call)
        self.on_event(call)
        self.schedule_flush()

    def clear_progress(self, call: CallState) -> None:
        """A new attempt starts from no progress."""
        if call.progress is not None:
            call.progress = None
            self._progress_dirty.add(call)

    def write_progress(self) -> None:
        """Write each changed call's last report (called before every commit)."""
        if not self._progress_dirty:
            return
        dirty, self._progress_dirty = self._progress_dirty, set()
        for call in dirty:
            text = json.dumps(call.progress) if call.progress is not None else None
            self.store.update_call(call.run.run_id, call.id, progress=text)

    # --- metrics ---------------------------------------------------------------------------

    def record_metrics(self, call: CallState, metrics: pb.CallMetrics) -> None:
        if not metrics.counters and not metrics.timers:
            return
        call.metrics = merge_metrics(call.metrics, metrics_json(metrics))
        self.store.update_call(call.run.run_id, call.id, metrics=json.dumps(call.metrics))
        if self.on_metrics is not None:
            self.on_metrics(call.run, call, metrics)


def metrics_json(metrics: pb.CallMetrics) -> dict[str, Any]:
    """One attempt's metrics in the JSON shape of `calls.metrics`."""
    return {"counters": dict(metrics.counters),
            "timers": {name: {"count": t.count, "sum": t.sum, "min": t.min, "max": t.max}
                       for name, t in metrics.timers.items()}}


def merge_metrics(into: dict[str, Any] | None, add: dict[str, Any]) -> dict[str, Any]:
    """`add` summed into `into` (both in the JSON shape of `calls.metrics`): a call's attempts
    into the call's totals, or calls into a run's."""
    out: dict[str, Any] = into or {"counters": {}, "timers": {}}
    counters, timers = out.setdefault("counters", {}), out.setdefault("timers", {})
    for name, value in add.get("counters", {}).items():
        counters[name] = counters.get(name, 0) + value
    for name, t in add.get("timers", {}).items():
        seen = timers.get(name)
        if seen is None:
            timers[name] = dict(t)
        else:
            seen["count"] += t["count"]
            seen["sum"] += t["sum"]
            seen["min"] = min(seen["min"], t["min"])
            seen["max"] = max(seen["max"], t["max"])
    return out


def _number(value: float) -> int | float:
    return int(value) if value.is_integer() else value
