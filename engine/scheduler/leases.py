"""Which process drives a run: leases in the store, renewed while this process lives.

Every process that drives runs — an `engine server`, an `engine run`, an `engine resume` — has an
owner id unique to that process start (host, pid and a random part: a pid alone is not an owner,
it outlives its process as a zombie and is reused). To drive a run it must hold the run's lease:

- **Claim** (`claim`): one conditional UPDATE takes a run nobody holds, or whose lease expired,
  and bumps its epoch. Exactly one claimant wins; the epoch is its fencing token.
- **Renew** (`_renew`, every `renew_every` s): extends every lease this process holds, by `ttl`
  seconds of the database's clock. A process that is killed stops renewing; its runs are
  claimable `ttl` seconds after its last renewal.
- **Fence** (`engine.store.base.Store.commit`): every write of a held run commits only while the
  row still names this owner and epoch. A process that was paused or cut off past its lease and
  taken over loses its writes for that run and is told (`on_lost`): it stops driving it, and says
  so in its log.
- **Release** (`release`): a run that ended, or whose driver stops cleanly, is given up at once,
  so another process need not wait for the lease to run out.

The rules and what each protects are in docs/state-machine.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Callable

from engine.store import Store
from engine.store.base import UNFINISHED

log = logging.getLogger("engine.leases")

DEFAULT_TTL = 10.0


def lease_ttl() -> float:
    """Seconds a lease lasts without renewal (`ENGINE_LEASE_TTL`, default 10)."""
    try:
        value = float(os.environ.get("ENGINE_LEASE_TTL") or DEFAULT_TTL)
    except ValueError:
        value = DEFAULT_TTL
    return max(value, 0.5)


def new_owner_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class Leases:
    def __init__(self, store: Store, *, ttl: float | None = None, owner: str | None = None) -> None:
        self.store = store
        self.ttl = ttl or lease_ttl()
        self.renew_every = self.ttl / 5
        self.owner = owner or new_owner_id()
        # Told about runs this process lost to another owner, and runs another process asked to
        # cancel. Set by the scheduler (lost) and the control plane (cancel).
        self.on_lost: Callable[[set[str]], None] | None = None
        self.on_cancel: Callable[[set[str]], None] | None = None
        self._task: asyncio.Task[None] | None = None

    def claim(self, run_id: str, statuses: tuple[str, ...] = UNFINISHED) -> bool:
        """Take the run's lease if nobody else holds a live one (committed). True if taken."""
        return self.store.claim_run(run_id, self.owner, self.ttl, statuses=statuses) is not None

    def release(self, run_id: str) -> None:
        self.store.release_run(run_id)

    def held(self) -> list[str]:
        return [r for r, fence in self.store.fences.items() if fence is not None]

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._keep())

    async def stop(self) -> None:
        """Stop renewing and give up every lease held (the runs wait for the next driver)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for run_id in self.held():
            try:
                self.store.release_run(run_id)
            except Exception as exc:  # noqa: BLE001 - their leases then simply run out
                log.warning("could not release run %s: %s", run_id, exc)
                return

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the store is away: the fence decides later
                log.warning("could not renew leases: %s", exc)

    def renew(self) -> None:
        lost, cancel = self.store.renew_leases(self.owner, self.ttl)
        if lost:
            log.warning("lost the lease of %s to another owner: no longer driving it",
                        ", ".join(sorted(lost)))
            if self.on_lost is not None:
                self.on_lost(lost)
        if cancel and self.on_cancel is not None:
            self.on_cancel(cancel)
