"""The event hub: server-sent events of runs, woken by the control plane.

The control plane calls `notify(run_id)` on every transition it sees (a call's, through the
scheduler's event callback; a run's, when it is accepted, started, cancelled, resumed or
finished). Each subscriber (`stream`, one coroutine per `GET /v1/runs/{id}/events`) then reads
the run from the store's *read* connection — committed state only, so an event never shows
what a crash could take back — and sends what changed since its last read:

    event: call   a node of the DAG (`views.node`), when its status or attempts change
    event: run    the run's summary (`views.run_summary`), when its status changes
    event: end    {"run_id", "status"}, once the run is finished; the stream then ends

The first events describe the current state. A notification only wakes subscribers; a burst of
transitions costs one read per subscriber (it waits 50 ms after waking), and a subscriber
reads again every second anyway — a run driven by another server on the same store sends no
notification here. A comment line every 15 s keeps proxies from closing an idle stream.
`close` ends every stream, so that the server's shutdown does not wait for its subscribers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from engine.server.views import node, run_summary
from engine.statuses import RUN_FINAL
from engine.store import Store
from engine.timeouts import within

KEEP_ALIVE_SECONDS = 15.0


def sse_event(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class EventHub:
    def __init__(self, reader: Store, queued_calls: Callable[[str], frozenset[str]]) -> None:
        self.reader = reader
        self.queued_calls = queued_calls  # calls the scheduler holds queued, in memory only
        self._watchers: dict[str, set[asyncio.Event]] = {}
        self._closing = False

    def notify(self, run_id: str) -> None:
        for event in self._watchers.get(run_id, ()):
            event.set()

    def close(self) -> None:
        self._closing = True
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    async def finished(self, run_id: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the run's committed status to be final (`POST
        …/runs?wait=`); True if it is. Woken as streams are, and reads at least every second
        (a run another server drives sends no notification here)."""
        wake = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(wake)
        deadline = time.monotonic() + timeout
        try:
            while not self._closing:
                wake.clear()
                if self.reader.get_run(run_id).status in RUN_FINAL:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    await within(min(left, 1.0), wake.wait())
                except TimeoutError:
                    pass
            return False
        finally:
            watchers = self._watchers.get(run_id)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[run_id]

    async def stream(self, run_id: str) -> AsyncGenerator[bytes, None]:
        """The run's events, formatted; raises `RunNotFound` (before the first) for no such run."""
        wake = asyncio.Event()
        self._watchers.setdefault(run_id, set()).add(wake)
        sent_calls: dict[str, tuple[str, int, str | None, str | None]] = {}
        sent_status = None
        last_beat = time.monotonic()
        try:
            while not self._closing:
                wake.clear()
                row = self.reader.get_run(run_id)
                final = row.status in RUN_FINAL
                queued = self.queued_calls(run_id)
                for c in self.reader.load_calls(run_id):
                    shown = node(c, final, queued)
                    key = (shown["status"], c.attempts, c.progress, c.metrics)
                    if sent_calls.get(c.call_id) != key:
                        sent_calls[c.call_id] = key
                        yield sse_event("call", shown)
                if row.status != sent_status:
                    sent_status = row.status
                    yield sse_event("run", run_summary(row, row.version))
                if final:
                    yield sse_event("end", {"run_id": run_id, "status": row.status})
                    return
                try:
                    await within(1.0, wake.wait())
                    await asyncio.sleep(0.05)  # one read for a burst of transitions
                except TimeoutError:
                    pass
                if time.monotonic() - last_beat > KEEP_ALIVE_SECONDS:
                    last_beat = time.monotonic()
                    yield b": keep-alive\n\n"
        finally:
            watchers = self._watchers.get(run_id)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self._watchers[run_id]
