"""The durable run queue: which runs this server starts, and when.

The queue is the store's `runs` table itself — a run accepted anywhere is a `queued` row,
committed before its 202 — so nothing here holds runs in memory, and a `kill -9` loses none.
This module decides which of them this server claims:

- **A burst is never refused.** Admission (`ControlPlane.submit`) does not depend on capacity:
  a run beyond `max_concurrent_runs` waits in the store. Nothing answers 503 for lack of room.
- **Oldest first, spread by room.** `pump` claims queued runs oldest first (by acceptance, or
  by resume) while this server drives fewer than `max_concurrent_runs`; a run accepted by one
  server is started by whichever server has room first. The control plane pumps after every
  acceptance, resume and finished run, and on every scan (each lease-renewal interval), so runs
  accepted elsewhere are never left waiting.
- **One driver per run.** Claiming is one conditional UPDATE of the run's lease
  (`engine.scheduler.leases`); a run whose lease another server won is skipped. `take_over`
  claims `running` runs whose driver died — any server, or an `engine resume` — once their
  lease has run out, whatever their pid now names; they take no capacity check (they were
  already running). Runs of `engine run` (no deployed version) are never claimable by a server.

What starting a claimed run means (loading its version, resuming from checkpoints, failing it
when its code is gone) is the control plane's `start` callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from engine.scheduler.leases import Leases
from engine.statuses import RunStatus
from engine.store import RunRow, Store, StoreUnavailable

log = logging.getLogger("engine.server")

#: Running runs looked at per scan for a lapsed lease.
TAKE_OVER_BATCH = 1000


class RunQueue:
    def __init__(self, *, store: Store, leases: Leases, max_concurrent_runs: int, active: set[str],
                 start: Callable[[RunRow], None], open_: Callable[[], bool],
                 store_down: Callable[[StoreUnavailable], None]) -> None:
        self.store = store
        self.leases = leases
        self.max_concurrent_runs = max_concurrent_runs
        self.active = active          # runs this server drives (the control plane's set)
        self._start = start           # starts a run whose lease was just claimed
        self._open = open_            # False while closing, or while the store does not answer
        self._store_down = store_down
        self._pump_scheduled = False

    def take_over(self) -> int:
        """Claim and start running runs whose lease ran out; returns how many."""
        taken = 0
        for row in self.store.claimable_runs(TAKE_OVER_BATCH, status=RunStatus.RUNNING):
            if self.leases.claim(row.run_id, (RunStatus.RUNNING,)):
                log.info("run taken over", extra={"fields": {"run_id": row.run_id, "from": row.owner}})
                self._start(row)
                taken += 1
        if taken:
            self.store.commit()
        return taken

    def schedule_pump(self) -> None:
        """Pump soon, once for however many calls before then (a burst of acceptances)."""
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump_safely)

    def _pump_safely(self) -> None:
        try:
            self.pump()
        except StoreUnavailable as exc:
            self._store_down(exc)

    def pump(self) -> None:
        """Claim and start queued runs, oldest first, while fewer than `max_concurrent_runs`
        execute here. Raises `StoreUnavailable`."""
        self._pump_scheduled = False
        started = False
        while len(self.active) < self.max_concurrent_runs and self._open():
            room = self.max_concurrent_runs - len(self.active)
            rows = self.store.claimable_runs(room, status=RunStatus.QUEUED)
            if not rows:
                break
            for row in rows:
                if len(self.active) >= self.max_concurrent_runs:
                    break
                if self.leases.claim(row.run_id, (RunStatus.QUEUED,)):
                    self._start(row)
                    started = True
        if started:
            self.store.commit()
