"""What every store does, in SQL both SQLite and PostgreSQL speak: runs, calls, logs,
deployments, and the leases that say which process drives a run.

A store is one connection. Its subclasses (`engine.store.sqlite`, `engine.store.postgres`) only
connect, translate placeholders, migrate and keep blobs; everything a run's durability rests on
is here, in one place.

**Group commit.** Writes are buffered and sent together — at the next read on this connection or
at `commit()` — in one transaction (SQLite: `BEGIN IMMEDIATE`, so the write lock is taken before
anything is checked; PostgreSQL: one message, one round trip). The scheduler calls `commit()` once
per turn of its event loop and only then acts on what it wrote: "checkpointed before anyone
depends on it" is that ordering.

**Leases and fencing.** A run is driven by one process at a time: the one named in `runs.owner`
whose lease (`lease_expires`, in the database's own clock, so the servers' clocks need not agree)
has not expired. Taking a run (`claim_run`) is one conditional UPDATE that also bumps the run's
`lease_epoch`; exactly one claimant matches. Every write of a run this store holds is *fenced*:
the transaction that carries it first locks the run's row and checks that the owner and epoch are
still this store's (`_finish`). A process that was paused or cut off past its lease and
then taken over finds a new epoch there: its writes for that run are dropped (the rest of the
transaction commits without them) and `on_lost` tells its driver to stop. Without the check a
deposed owner could overwrite the new owner's checkpoints — finished calls would be re-reported
or marked failed. The rules are drawn in docs/state-machine.md.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine.errors import InfrastructureError, RunNotFound
from engine.statuses import RUN_FINAL

log = logging.getLogger("engine.store")

# Values at most this size live in the row; larger ones as blobs.
INLINE_LIMIT = 64 * 1024

RUN_FIELDS = (
    "run_id", "application", "status", "root_call_id", "app_file", "module", "config_path",
    "backend", "input", "result", "failure", "error_kind", "error_message", "created_at",
    "started_at", "ended_at", "idempotency_key", "resumed_at", "resumes", "owner", "result_digest",
    "lease_epoch", "lease_expires", "version", "cancel_requested", "headers", "budget", "priority",
    "rerun_of", "rerun_from",
)
CALL_FIELDS = (
    "call_id", "run_id", "parent_id", "function", "kind", "spec", "args_digest", "status",
    "attempts", "executions", "tail_id", "result", "result_digest", "failure", "error_kind",
    "error_message", "created_at", "started_at", "ended_at", "seq", "progress", "metrics", "reused",
)

#: Run states in which a run has a driver (or waits for one).
UNFINISHED = ("queued", "running")


class StoreUnavailable(InfrastructureError):
    """The database does not answer (restarted, or unreachable from here): whatever was not
    committed is gone, and the runs this process held are no longer its to write."""


@dataclass
class RunRow:
    run_id: str
    application: str
    status: str
    root_call_id: str
    app_file: str
    module: str
    config_path: str | None
    backend: str
    input: bytes
    result: bytes | None = None
    failure: bytes | None = None
    error_kind: str | None = None
    error_message: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    idempotency_key: str | None = None
    resumed_at: float | None = None
    resumes: int = 0
    # The process driving the run (an owner id unique to one process start), while its lease
    # lasts; None when nobody holds it.
    owner: str | None = None
    # The result as a blob, when too large for the row (then `result` is None).
    result_digest: str | None = None
    # Bumped by every claim: the fencing token of the current owner.
    lease_epoch: int = 0
    # When the owner's lease runs out unless renewed (seconds since the epoch, database clock).
    lease_expires: float | None = None
    # The deployed version a server run runs on; None for runs of `engine run`.
    version: int | None = None
    # Set by a cancel request to a run another process drives; its owner acts on it.
    cancel_requested: float | None = None
    # The submitting HTTP request's headers as JSON `[[name, value], ...]`; None otherwise.
    headers: str | None = None
    # The run's budget as JSON (`engine.scheduler.budgets.dump_budget`): its limits, and the
    # seconds it was driven before its current try; None for a run from before budgets.
    budget: str | None = None
    # The submission's priority: its weight in the fair share between runs (None: 1).
    priority: int | None = None
    # A rerun's origin run and the function it reran from (`engine.scheduler.rerun`).
    rerun_of: str | None = None
    rerun_from: str | None = None


@dataclass
class CallRow:
    call_id: str
    run_id: str
    parent_id: str | None
    function: str
    kind: str
    spec: bytes
    args_digest: str
    status: str
    attempts: int = 0
    executions: int = 0
    tail_id: str | None = None
    result: bytes | None = None
    result_digest: str | None = None
    failure: bytes | None = None
    error_kind: str | None = None
    error_message: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    # Creation order within the run (ties of created_at): dependencies come before dependants.
    seq: int | None = None
    # Its last progress report, JSON `{"current", "total", "message", "attributes"}`.
    progress: str | None = None
    # What it recorded through RequestContext.metrics over its attempts, JSON
    # `{"counters": {name: n}, "timers": {name: {"count", "sum", "min", "max"}}}`.
    metrics: str | None = None
    # 1 when its checkpoint was copied from the run a rerun came from (`engine.scheduler.rerun`).
    reused: int = 0


@dataclass(frozen=True)
class FailedAttempt:
    """One attempt of a call that failed (retried or not): what the timeline draws of it."""

    call_id: str
    attempt: int
    started_at: float | None
    ended_at: float
    error_kind: str | None
    error_message: str | None


@dataclass(frozen=True)
class RunWebhook:
    """Where a run's end is POSTed. `secret` signs it: never shown, never logged."""

    url: str
    secret: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class Delivery:
    """One run end to report (a row of the outbox, `webhook_deliveries`)."""

    delivery_id: str
    run_id: str
    status: str          # the run's final status it reports
    state: str           # pending | delivered | failed (gave up)
    created_at: float
    next_at: float
    attempts: int
    ended_at: float | None
    last_error: str | None
    age: float = 0.0     # seconds since it was written, by the database's clock (claims only)


@dataclass(frozen=True)
class DeliveryAttempt:
    delivery_id: str
    attempt: int
    started_at: float
    duration: float
    http_status: int | None
    error: str | None


@dataclass(frozen=True)
class SignalRow:
    name: str
    seq: int
    payload: str            # JSON text: the value of the future that takes it
    sent_at: float
    call_id: str | None     # the repeatable signal future that took it


@dataclass(frozen=True)
class Lease:
    """Who holds a run, as the store sees it now."""

    owner: str | None
    epoch: int
    expires_in: float | None  # seconds; negative once expired, None when nobody holds it

    @property
    def live(self) -> bool:
        return self.owner is not None and self.expires_in is not None and self.expires_in > 0


@dataclass(frozen=True)
class DeploymentRow:
    name: str
    version: int
    digest: str
    file: str
    deployed_at: float


class BlobWriter(ABC):
    """One blob arriving in pieces: `write`, then `commit` (→ digest, size) or `abort`."""

    @abstractmethod
    def write(self, data: bytes) -> None: ...

    @abstractmethod
    def commit(self) -> tuple[str, int]: ...

    @abstractmethod
    def abort(self) -> None: ...


class Store(ABC):
    """Runs, calls, logs, deployments and leases over one database connection."""

    #: SQL for "now" in seconds since the epoch, by the database's clock.
    NOW: str
    #: Appended to the fence check's SELECT to lock the rows until commit.
    LOCK_ROWS = ""
    #: Appended to the SELECT of due webhook deliveries in a claim: rows another server is
    #: claiming right now are skipped rather than waited for.
    SKIP_LOCKED = ""
    #: What `get_run`'s error names as the place looked in.
    where = "the store"

    def __init__(self) -> None:
        self._tx_open = False
        # Writes not yet sent: (run_id or None, sql, params). Sent in order, grouped.
        self._pending: list[tuple[str | None, str, Sequence[Any]]] = []
        # Call rows inserted into `_pending` (that very list) and not yet sent, by id: a call
        # dispatched before its row is sent is written as running by its INSERT (`count_execution`).
        self._unsent_inserts: tuple[list[Any], dict[str, list[Any]]] = ([], {})
        # Every write of the open transaction (sent or not), for replay without a lost run's.
        self._written: list[tuple[str | None, str, Sequence[Any]]] = []
        # Runs this store holds: run_id -> (owner, epoch). A run whose lease was lost maps to
        # None until released: its writes are dropped.
        self.fences: dict[str, tuple[str, int] | None] = {}
        self.on_lost: Callable[[set[str]], None] | None = None
        self._seq = 0

    # --- the dialect -----------------------------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement now; returns a cursor."""

    @abstractmethod
    def _send(self, groups: list[tuple[str, list[Sequence[Any]]]]) -> None:
        """Run groups of (sql, rows) in order, each as executemany, in the open transaction."""

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit_tx(self) -> None: ...

    @abstractmethod
    def _rollback_tx(self) -> None: ...

    @abstractmethod
    def _close_connection(self) -> None: ...

    # --- blobs (where large values live depends on the store) ------------------------------

    @abstractmethod
    def put_blob(self, data: bytes) -> str: ...

    @abstractmethod
    def blob_writer(self) -> BlobWriter: ...

    @abstractmethod
    def get_blob(self, digest: str) -> bytes: ...

    @abstractmethod
    def open_blob(self, digest: str) -> BinaryIO:
        """The blob for reading in pieces; FileNotFoundError when there is none."""

    @abstractmethod
    def blob_size(self, digest: str) -> int: ...

    @abstractmethod
    def has_blob(self, digest: str) -> bool: ...

    # --- transactions ----------------------------------------------------------------------

    def _write(self, run_id: str | None, sql: str, params: Sequence[Any]) -> None:
        if run_id is not None and run_id in self.fences and self.fences[run_id] is None:
            return  # a run whose lease was lost: its driver is stopping, nothing more is written
        self._pending.append((run_id, sql, params))

    def _flush_pending(self) -> None:
        """Send buffered writes into the open transaction (opening it)."""
        if not self._pending:
            return
        if not self._tx_open:
            self._begin()
            self._tx_open = True
        pending, self._pending = self._pending, []
        self._written.extend(pending)
        self._send(grouped(pending))

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read sees this connection's own writes: buffered ones are sent first."""
        self._flush_pending()
        return list(self._execute(sql, params).fetchall())

    def commit(self) -> None:
        """Make every write so far durable, in one transaction. Writes of runs whose lease this
        store lost are dropped (the transaction is written again without them), and `on_lost`
        is told which runs those were."""
        if not self._pending and not self._tx_open:
            return
        lost_all: set[str] = set()
        while True:
            writes = self._written + self._pending
            expected: dict[str, tuple[str, int]] = {}
            for run_id, _, _ in writes:
                fence = self.fences.get(run_id) if run_id is not None else None
                if fence is not None:
                    expected[run_id] = fence  # type: ignore[index]
            if self._finish(expected):
                break
            # Rolled back: some held run is not ours any more. Write the rest again.
            # (Epochs only grow, so what failed the check still differs; all of them, should not.)
            lost = self._not_held(expected) or set(expected)
            for run_id in lost:
                self.fences[run_id] = None
            lost_all |= lost
            self._pending = [w for w in writes if w[0] not in lost]
            if not self._pending:
                break
        self._tx_open = False
        self._written = []
        self._pending = []
        if lost_all:
            self._report_lost(lost_all)

    def _finish(self, expected: dict[str, tuple[str, int]]) -> bool:
        """Send what is pending, check that every run in `expected` still has that owner and
        epoch (locking their rows), and commit; or roll back and return False. Subclasses may
        do it in fewer round trips."""
        self._flush_pending()
        if not self._tx_open:
            return True
        if expected:
            ids = sorted(expected)
            marks = ", ".join("?" * len(ids))
            rows = self._execute(
                f"SELECT run_id, owner, lease_epoch FROM runs WHERE run_id IN ({marks}){self.LOCK_ROWS}",
                ids).fetchall()
            if {r[0]: (r[1], r[2]) for r in rows} != expected:
                self._rollback_tx()
                self._tx_open = False
                self._written = []
                return False
        self._commit_tx()
        return True

    def _not_held(self, expected: dict[str, tuple[str, int]]) -> set[str]:
        """Of the runs in `expected`, those whose owner or epoch differ now."""
        ids = sorted(expected)
        marks = ", ".join("?" * len(ids))
        rows = self._execute(f"SELECT run_id, owner, lease_epoch FROM runs WHERE run_id IN ({marks})",
                             ids).fetchall()
        now_held = {r[0]: (r[1], r[2]) for r in rows}
        return {run_id for run_id in ids if now_held.get(run_id) != expected[run_id]}

    def _report_lost(self, lost: set[str]) -> None:
        log.warning("lost the lease of %d run(s); their writes were dropped: %s", len(lost),
                    ", ".join(sorted(lost)))
        if self.on_lost is not None:
            self.on_lost(lost)

    def rollback(self) -> None:
        """Forget every write not yet committed."""
        self._pending = []
        self._written = []
        if self._tx_open:
            self._rollback_tx()
            self._tx_open = False

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._close_connection()

    def reconnect(self) -> None:
        """After `StoreUnavailable`: connect again (raises it again while the database is
        away). A file store never loses its connection."""

    # --- leases ----------------------------------------------------------------------------

    def claim_run(self, run_id: str, owner: str, ttl: float, *,
                  statuses: tuple[str, ...] = UNFINISHED) -> int | None:
        """Take `run_id` for `owner` if it is in one of `statuses` and nobody else's lease on it
        is live; returns the new epoch (this owner's fencing token), or None. Committed."""
        self.commit()
        marks = ", ".join("?" * len(statuses))
        rows = self._read(
            f"UPDATE runs SET owner = ?, lease_epoch = lease_epoch + 1, lease_expires = {self.NOW} + ? "
            f"WHERE run_id = ? AND status IN ({marks}) "
            f"AND (owner IS NULL OR owner = ? OR lease_expires IS NULL OR lease_expires < {self.NOW}) "
            "RETURNING lease_epoch",
            (owner, ttl, run_id, *statuses, owner))
        if not rows:
            return None
        epoch = int(rows[0][0])
        self.fences[run_id] = (owner, epoch)
        return epoch

    def renew_leases(self, owner: str, ttl: float) -> tuple[set[str], set[str]]:
        """Extend every lease this store holds for `owner`. Returns (runs lost to another owner
        since, runs someone asked to cancel). Committed."""
        held = [r for r, f in self.fences.items() if f is not None]
        if not held:
            return set(), set()
        self.commit()
        marks = ", ".join("?" * len(held))
        self._execute(
            f"UPDATE runs SET lease_expires = {self.NOW} + ? WHERE owner = ? AND run_id IN ({marks})",
            (ttl, owner, *held))
        rows = self._execute(
            f"SELECT run_id, owner, lease_epoch, cancel_requested FROM runs WHERE run_id IN ({marks})",
            held).fetchall()
        state = {r[0]: r for r in rows}
        lost, cancel = set(), set()
        for run_id in held:
            row = state.get(run_id)
            if row is None or (row[1], row[2]) != self.fences.get(run_id):
                lost.add(run_id)
            elif row[3] is not None:
                cancel.add(run_id)
        for run_id in lost:
            self.fences[run_id] = None
        return lost, cancel

    def release_run(self, run_id: str) -> None:
        """Give up the lease (the run ended, or this process stops): another may take it at
        once. Committed; a no-op for a run this store does not hold."""
        self.commit()  # its own writes first, still fenced
        fence = self.fences.pop(run_id, None)
        if fence is None:
            return
        self._execute("UPDATE runs SET owner = NULL, lease_expires = NULL "
                      "WHERE run_id = ? AND owner = ? AND lease_epoch = ?", (run_id, *fence))

    def lease_of(self, run_id: str) -> Lease:
        rows = self._read(f"SELECT owner, lease_epoch, lease_expires - {self.NOW} FROM runs WHERE run_id = ?",
                          (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id!r} in {self.where}: see `engine runs`")
        owner, epoch, left = rows[0]
        return Lease(owner, int(epoch), float(left) if left is not None and owner else None)

    def claimable_runs(self, limit: int, *, status: str | None = None) -> list[RunRow]:
        """Runs of deployed applications that wait for a driver — queued, or running with an
        expired lease (their owner died or was cut off) — oldest first."""
        statuses = (status,) if status else UNFINISHED
        marks = ", ".join("?" * len(statuses))
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE status IN ({marks}) AND version IS NOT NULL "
            f"AND (owner IS NULL OR lease_expires IS NULL OR lease_expires < {self.NOW}) "
            "ORDER BY COALESCE(resumed_at, created_at), run_id LIMIT ?",
            (*statuses, limit))
        return [RunRow(*r) for r in rows]

    def request_cancel(self, run_id: str) -> None:
        self._write(None, "UPDATE runs SET cancel_requested = ? WHERE run_id = ?", (time.time(), run_id))

    # --- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRow) -> None:
        values = [getattr(run, f) for f in RUN_FIELDS]
        self._write(run.run_id,
                    f"INSERT INTO runs ({', '.join(RUN_FIELDS)}) VALUES ({', '.join('?' * len(RUN_FIELDS))})",
                    values)

    def update_run(self, run_id: str, **fields: Any) -> None:
        """A final status also queues the run's webhook delivery (when it has a webhook) in the
        same transaction, fenced by the same lease: the outbox row exists if and only if the
        final status was committed, so a crash between the two is impossible."""
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(run_id, f"UPDATE runs SET {sets} WHERE run_id = ?", [*fields.values(), run_id])
        if fields.get("status") in RUN_FINAL:
            self._write(run_id, *self._queue_delivery(run_id, str(fields["status"])))

    def _queue_delivery(self, run_id: str, status: str) -> tuple[str, tuple[Any, ...]]:
        """The outbox insert for a run's end: a row only if the run has a webhook."""
        return (f"INSERT INTO webhook_deliveries (delivery_id, run_id, status, state, created_at, next_at, "
                f"attempts) SELECT ?, run_id, ?, 'pending', {self.NOW}, {self.NOW}, 0 FROM run_webhooks "
                "WHERE run_id = ?", (uuid.uuid4().hex, status, run_id))

    def update_run_if(self, run_id: str, statuses: tuple[str, ...], **fields: Any) -> bool:
        """Change a run that nobody drives (queued and unclaimed, or finished) only if it is
        still in one of `statuses`, and no live lease holds it. Committed. True if it was."""
        self.commit()
        sets = ", ".join(f"{k} = ?" for k in fields)
        marks = ", ".join("?" * len(statuses))
        update = (f"UPDATE runs SET {sets} WHERE run_id = ? AND status IN ({marks}) "
                  f"AND (owner IS NULL OR lease_expires IS NULL OR lease_expires < {self.NOW}) RETURNING run_id")
        params = (*fields.values(), run_id, *statuses)
        if fields.get("status") not in RUN_FINAL:
            return bool(self._read(update, params))
        # A final status and its webhook delivery commit together (see `update_run`).
        self._begin()
        self._tx_open = True
        try:
            done = bool(self._execute(update, params).fetchall())
            if done:
                self._execute(*self._queue_delivery(run_id, str(fields["status"])))
            self._commit_tx()
        except BaseException:
            self.rollback()
            raise
        self._tx_open = False
        return done

    def get_run(self, run_id: str) -> RunRow:
        rows = self._read(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            raise RunNotFound(f"no run {run_id!r} in {self.where}: see `engine runs`")
        return RunRow(*rows[0])

    def get_runs(self, run_ids: Sequence[str]) -> list[RunRow]:
        """The runs of those ids that exist, in no particular order."""
        out: list[RunRow] = []
        for i in range(0, len(run_ids), 500):
            chunk = list(run_ids[i:i + 500])
            marks = ", ".join("?" * len(chunk))
            rows = self._read(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE run_id IN ({marks})", chunk)
            out.extend(RunRow(*r) for r in rows)
        return out

    def find_run_by_key(self, key: str) -> RunRow | None:
        rows = self._read(f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE idempotency_key = ?", (key,))
        return RunRow(*rows[0]) if rows else None

    def list_runs(self, limit: int = 100, *, application: str | None = None,
                  status: str | None = None) -> list[RunRow]:
        """Newest first, optionally only one application's and/or one status's runs."""
        where, params = _run_filter(application=application, status=status)
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs{where} ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*params, limit))
        return [RunRow(*r) for r in rows]

    def runs_in_order(self, statuses: tuple[str, ...]) -> list[RunRow]:
        """Runs in any of `statuses`, oldest first: the order a durable queue starts them in.
        A resumed run queues again as of its resume, not its creation."""
        marks = ", ".join("?" * len(statuses))
        rows = self._read(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE status IN ({marks}) "
            "ORDER BY COALESCE(resumed_at, created_at), run_id", statuses)
        return [RunRow(*r) for r in rows]

    def count_runs(self, *, application: str | None = None, status: str | None = None) -> int:
        where, params = _run_filter(application=application, status=status)
        rows = self._read(f"SELECT count(*) FROM runs{where}", params)
        return int(rows[0][0])

    def has_calls(self, run_id: str) -> bool:
        rows = self._read("SELECT 1 FROM calls WHERE run_id = ? LIMIT 1", (run_id,))
        return bool(rows)

    # --- calls -----------------------------------------------------------------------------

    def insert_call(self, call: CallRow) -> None:
        if call.seq is None:
            self._seq = max(self._seq + 1, time.time_ns())
            call.seq = self._seq
        params = [getattr(call, f) for f in CALL_FIELDS]
        self._write(call.run_id, _INSERT_CALL, params)
        unsent = self._unsent_inserts
        if unsent[0] is not self._pending:
            unsent = self._unsent_inserts = (self._pending, {})
        unsent[1][call.call_id] = params

    def update_call(self, run_id: str, call_id: str, **fields: Any) -> None:
        if self._unsent_inserts[1]:
            self._unsent_inserts[1].pop(call_id, None)  # written after its INSERT: keep the order
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(run_id, f"UPDATE calls SET {sets} WHERE call_id = ?", [*fields.values(), call_id])

    def count_execution(self, run_id: str, call_id: str, attempts: int, started_at: float) -> None:
        """A call's attempt was dispatched. When the call's INSERT is still unsent (a fan-out's
        calls are created and dispatched in one loop turn), the INSERT writes it as running: one
        statement per call fewer, and the same row once committed."""
        unsent = self._unsent_inserts
        params = unsent[1].pop(call_id, None) if unsent[0] is self._pending else None
        if params is not None:
            params[_STATUS] = "running"
            params[_ATTEMPTS] = attempts
            params[_EXECUTIONS] += 1
            params[_STARTED_AT] = started_at
            return
        self._write(run_id,
                    "UPDATE calls SET status = 'running', attempts = ?, executions = executions + 1, "
                    "started_at = ? WHERE call_id = ?", (attempts, started_at, call_id))

    def record_failed_attempt(self, run_id: str, call_id: str, attempt: int, started_at: float | None,
                              error_kind: str | None, error_message: str | None) -> None:
        """History only: nothing reads it back to decide anything (the calls row does that)."""
        self._write(run_id,
                    "INSERT INTO failed_attempts (run_id, call_id, attempt, started_at, ended_at, "
                    "error_kind, error_message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (run_id, call_id, attempt, started_at, time.time(), error_kind, error_message))

    def failed_attempts(self, run_id: str) -> list[FailedAttempt]:
        rows = self._read(
            "SELECT call_id, attempt, started_at, ended_at, error_kind, error_message "
            "FROM failed_attempts WHERE run_id = ? ORDER BY ended_at", (run_id,))
        return [FailedAttempt(*r) for r in rows]

    def reset_unfinished(self, run_id: str) -> None:
        """Resume: every call that neither succeeded nor handed off by tail call runs again."""
        self._write(run_id,
                    "UPDATE calls SET status = 'pending', attempts = 0, ended_at = NULL "
                    "WHERE run_id = ? AND status NOT IN ('succeeded', 'tail')", (run_id,))

    def load_calls(self, run_id: str) -> list[CallRow]:
        rows = self._read(
            f"SELECT {', '.join(CALL_FIELDS)} FROM calls WHERE run_id = ? ORDER BY created_at, seq",
            (run_id,))
        return [CallRow(*r) for r in rows]

    def keep(self, data: bytes) -> tuple[bytes | None, str | None]:
        """Where a value lives: `(data, None)` in its row when small, `(None, digest)` as a blob."""
        if len(data) <= INLINE_LIMIT:
            return data, None
        return None, self.put_blob(data)

    def save_result(self, run_id: str, call_id: str, data: bytes, **fields: Any) -> None:
        """Record a call's value: inline when small, as a blob when large."""
        result, digest = self.keep(data)
        self.update_call(run_id, call_id, result=result, result_digest=digest, **fields)

    def call_result(self, call: CallRow) -> bytes:
        if call.result is not None:
            return call.result
        if call.result_digest is None:
            raise KeyError(f"call {call.call_id} has no result")
        return self.get_blob(call.result_digest)

    def run_result(self, run: RunRow) -> bytes | None:
        """A finished run's pickled result (None when it has none)."""
        if run.result is not None:
            return run.result
        return self.get_blob(run.result_digest) if run.result_digest else None

    # --- request state ---------------------------------------------------------------------

    def set_state(self, run_id: str, key: str, value: bytes | None, digest: str | None,
                  call_id: str) -> None:
        """Write one key of a run's request state (the pickled value inline, or its blob)."""
        self._write(run_id,
                    "INSERT INTO request_state (run_id, key, value, value_digest, call_id, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, key) DO UPDATE SET "
                    "value = excluded.value, value_digest = excluded.value_digest, "
                    "call_id = excluded.call_id, updated_at = excluded.updated_at",
                    (run_id, key, value, digest, call_id, time.time()))

    def load_state(self, run_id: str) -> dict[str, tuple[bytes | None, str | None]]:
        """A run's request state: key -> (inline value, blob digest), one of the two set."""
        rows = self._read("SELECT key, value, value_digest FROM request_state WHERE run_id = ?", (run_id,))
        return {r[0]: (bytes(r[1]) if r[1] is not None else None, r[2]) for r in rows}

    def state_rows(self, run_id: str) -> list[tuple[str, bytes | None, str | None, str]]:
        """A run's request state with the call that wrote each key last: (key, inline value,
        blob digest, call id). What a rerun copies of the calls it reuses."""
        rows = self._read("SELECT key, value, value_digest, call_id FROM request_state WHERE run_id = ?",
                          (run_id,))
        return [(r[0], bytes(r[1]) if r[1] is not None else None, r[2], r[3]) for r in rows]

    # --- call durations and widths (a hint for the executor pools' ramp) ------------------------

    def call_durations(self, application: str) -> dict[str, float]:
        """How long a call of each of `application`'s functions took, as recorded by
        `record_call_durations`: function -> seconds."""
        rows = self._read("SELECT function, seconds FROM call_durations WHERE application = ?", (application,))
        return {r[0]: float(r[1]) for r in rows}

    def call_widths(self, application: str) -> dict[str, int]:
        """How many calls of each of `application`'s functions ran at once, at most, in the
        run that recorded it (`record_call_durations`): function -> calls; none for 0."""
        rows = self._read("SELECT function, width FROM call_durations WHERE application = ? AND width > 0",
                          (application,))
        return {r[0]: int(r[1]) for r in rows}

    def record_call_durations(self, run_id: str, application: str, durations: Mapping[str, float],
                              widths: Mapping[str, int] | None = None) -> None:
        """Replace the durations of these functions of `application`, and their widths (0 when
        not given), written as `run_id`'s, so a run whose lease was lost writes none."""
        now = time.time()
        widths = widths or {}
        for function, seconds in sorted(durations.items()):
            self._write(run_id,
                        "INSERT INTO call_durations (application, function, seconds, width, updated_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (application, function) DO UPDATE SET "
                        "seconds = excluded.seconds, width = excluded.width, updated_at = excluded.updated_at",
                        (application, function, float(seconds), int(widths.get(function, 0)), now))

    # --- signals ----------------------------------------------------------------------------
    # Sent by whoever answers a sender (the API, `engine signal`), on any connection; taken by
    # the run's driver (`Scheduler._deliver_signals`), under its fence.

    def add_signal(self, run_id: str, name: str, payload: str, *, repeatable: bool) -> int | None:
        """Store a signal (committed): the next of its name when `repeatable`, else the only
        one. Returns its seq, or None when a one-shot name already has its signal. One
        statement, so two senders racing cannot both store the one signal of a name."""
        self.commit()
        now = time.time()
        for _ in range(5):  # repeatable: a racing sender may take the seq this one computed
            if repeatable:
                rows = self._read(
                    "INSERT INTO signals (run_id, name, seq, payload, sent_at) "
                    "SELECT ?, ?, COALESCE(MAX(seq) + 1, 0), ?, ? FROM signals WHERE run_id = ? AND name = ? "
                    "ON CONFLICT DO NOTHING RETURNING seq", (run_id, name, payload, now, run_id, name))
            else:
                rows = self._read(
                    "INSERT INTO signals (run_id, name, seq, payload, sent_at) VALUES (?, ?, 0, ?, ?) "
                    "ON CONFLICT DO NOTHING RETURNING seq", (run_id, name, payload, now))
            if rows:
                return int(rows[0][0])
            if not repeatable:
                return None
        return None

    def signals(self, run_id: str) -> list[SignalRow]:
        """Every signal sent to the run, by name and arrival."""
        rows = self._read("SELECT name, seq, payload, sent_at, call_id FROM signals WHERE run_id = ? "
                          "ORDER BY name, seq", (run_id,))
        return [SignalRow(*r) for r in rows]

    def take_signal(self, run_id: str, name: str, seq: int, call_id: str) -> None:
        """A repeatable signal future took this signal (with the write of its value)."""
        self._write(run_id, "UPDATE signals SET call_id = ? WHERE run_id = ? AND name = ? AND seq = ?",
                    (call_id, run_id, name, seq))

    def runs_with_open_signals(self, run_ids: list[str]) -> set[str]:
        """Which of these runs have a signal future still waiting (the runs list's `waiting` is
        then worked out from their calls; the others cannot be waiting)."""
        if not run_ids:
            return set()
        marks = ", ".join("?" for _ in run_ids)
        rows = self._read(f"SELECT DISTINCT run_id FROM calls WHERE kind = 'signal' AND status = 'pending' "
                          f"AND run_id IN ({marks})", tuple(run_ids))
        return {r[0] for r in rows}

    def signal_specs(self, run_id: str, name: str) -> list[bytes]:
        """The stored specs of the run's signal futures named `name` (whether one is repeatable)."""
        rows = self._read("SELECT spec FROM calls WHERE run_id = ? AND kind = 'signal' AND function = ?",
                          (run_id, name))
        return [bytes(r[0]) for r in rows]

    # --- webhooks ---------------------------------------------------------------------------
    # The outbox: `update_run` queues a delivery with a run's final status; any server sends it
    # (`engine.server.webhooks`), claiming it first so that two servers do not both send it.

    def set_run_webhook(self, run_id: str, webhook: RunWebhook) -> None:
        """Written with the run's row (same transaction), before its 202."""
        self._write(run_id, "INSERT INTO run_webhooks (run_id, url, secret, headers) VALUES (?, ?, ?, ?)",
                    (run_id, webhook.url, webhook.secret, json.dumps(webhook.headers) if webhook.headers else None))

    def run_webhook(self, run_id: str) -> RunWebhook | None:
        rows = self._read("SELECT url, secret, headers FROM run_webhooks WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        url, secret, headers = rows[0]
        return RunWebhook(url, secret, json.loads(headers) if headers else {})

    def claim_deliveries(self, claim: str, lease: float, limit: int) -> list[Delivery]:
        """Take up to `limit` due deliveries that no live claim holds, for `lease` seconds.
        Committed. One conditional UPDATE: the outer WHERE repeats the conditions, so that on
        PostgreSQL a row another server claimed meanwhile is re-checked and left to it (and
        `SKIP_LOCKED` skips rows being claimed right now); SQLite runs one writer at a time."""
        self.commit()
        free = f"state = 'pending' AND (lease_expires IS NULL OR lease_expires < {self.NOW})"
        # The due rows in a CTE: PostgreSQL evaluates it once (a plain IN subquery with LIMIT
        # and SKIP LOCKED may be rescanned, claiming more than `limit`).
        rows = self._read(
            f"WITH due AS (SELECT delivery_id FROM webhook_deliveries WHERE {free} "
            f"AND next_at <= {self.NOW} ORDER BY next_at LIMIT ?{self.SKIP_LOCKED}) "
            f"UPDATE webhook_deliveries SET claim = ?, lease_expires = {self.NOW} + ? "
            f"WHERE delivery_id IN (SELECT delivery_id FROM due) AND {free} "
            f"RETURNING {_DELIVERY_FIELDS}, {self.NOW} - created_at",
            (limit, claim, lease))
        return [Delivery(r[0], r[1], r[2], r[3], float(r[4]), float(r[5]), int(r[6]), r[7], r[8], age=float(r[9]))
                for r in rows]

    def next_delivery_in(self) -> float | None:
        """Seconds until the next pending delivery is due (<= 0: due now); None when none waits."""
        rows = self._read(f"SELECT MIN(next_at) - {self.NOW} FROM webhook_deliveries WHERE state = 'pending'")
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def finish_delivery_attempt(self, delivery: Delivery, claim: str, attempt: DeliveryAttempt, *,
                                state: str, retry_in: float) -> None:
        """Record one attempt and what follows: delivered, given up, or due again in `retry_in`
        seconds. The delivery's row changes only while `claim` still holds it (a server that
        outlived its claim leaves the row to the one that took it over). Committed."""
        self._write(None, "INSERT INTO webhook_attempts (delivery_id, run_id, attempt, started_at, duration, "
                          "http_status, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (attempt.delivery_id, delivery.run_id, attempt.attempt, attempt.started_at,
                     attempt.duration, attempt.http_status, attempt.error))
        self._write(None, f"UPDATE webhook_deliveries SET state = ?, attempts = ?, next_at = {self.NOW} + ?, "
                          "claim = NULL, lease_expires = NULL, last_error = ?, ended_at = ? "
                          "WHERE delivery_id = ? AND claim = ?",
                    (state, attempt.attempt, retry_in, attempt.error, None if state == "pending" else time.time(),
                     delivery.delivery_id, claim))
        self.commit()

    def deliveries(self, run_id: str) -> list[tuple[Delivery, list[DeliveryAttempt]]]:
        """A run's deliveries, oldest first, each with its attempts."""
        rows = self._read(f"SELECT {_DELIVERY_FIELDS} FROM webhook_deliveries WHERE run_id = ? "
                          "ORDER BY created_at, delivery_id", (run_id,))
        tried = self._read("SELECT delivery_id, attempt, started_at, duration, http_status, error "
                           "FROM webhook_attempts WHERE run_id = ? ORDER BY started_at", (run_id,))
        by_delivery: dict[str, list[DeliveryAttempt]] = {}
        for r in tried:
            by_delivery.setdefault(r[0], []).append(DeliveryAttempt(*r))
        return [(Delivery(*r), by_delivery.get(r[0], [])) for r in rows]

    # --- logs ------------------------------------------------------------------------------

    def append_log(self, run_id: str, call_id: str, function: str, attempt: int, text: str) -> None:
        self._write(run_id,
                    "INSERT INTO logs (run_id, call_id, function, attempt, text, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (run_id, call_id, function, attempt, text, time.time()))

    def logs(self, run_id: str, function: str | None = None,
             call_id: str | None = None) -> list[tuple[str, str, int, str]]:
        query = "SELECT call_id, function, attempt, text FROM logs WHERE run_id = ?"
        params: list[Any] = [run_id]
        if function:
            query += " AND function = ?"
            params.append(function)
        if call_id:
            query += " AND call_id = ?"
            params.append(call_id)
        rows = self._read(query + " ORDER BY id", params)
        return [tuple(r) for r in rows]  # type: ignore[misc]

    # --- deployments -----------------------------------------------------------------------
    # Every version of every deployed application's code, so that any server on this store can
    # start or resume any run (the servers' own directories only cache it unpacked).

    def add_deployment(self, name: str, digest: str, file: str, code: bytes) -> DeploymentRow | None:
        """Record the next version of `name`; None if another server took that number first
        (call again). Committed."""
        self.commit()
        rows = self._read("SELECT COALESCE(MAX(version), 0) FROM deployments WHERE name = ?", (name,))
        version = int(rows[0][0]) + 1
        row = DeploymentRow(name, version, digest, file, time.time())
        try:
            self._execute(
                "INSERT INTO deployments (name, version, digest, file, deployed_at, code) VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, digest, file, row.deployed_at, code))
        except Exception as exc:  # noqa: BLE001 - the two drivers' integrity errors differ
            self.rollback()
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                return None
            raise
        return row

    def import_deployment(self, name: str, version: int, digest: str, file: str, deployed_at: float,
                          code: bytes) -> None:
        """Record a version made before deployments lived in the store. Committed."""
        self.commit()
        self._execute(
            "INSERT INTO deployments (name, version, digest, file, deployed_at, code) VALUES (?, ?, ?, ?, ?, ?)",
            (name, version, digest, file, deployed_at, code))

    def deployments(self) -> list[DeploymentRow]:
        rows = self._read("SELECT name, version, digest, file, deployed_at FROM deployments "
                          "ORDER BY name, version")
        return [DeploymentRow(r[0], int(r[1]), r[2], r[3], float(r[4])) for r in rows]

    def deployment_code(self, name: str, version: int) -> bytes:
        rows = self._read("SELECT code FROM deployments WHERE name = ? AND version = ?", (name, version))
        if not rows:
            raise KeyError(f"{name} version {version}")
        return bytes(rows[0][0])


_DELIVERY_FIELDS = "delivery_id, run_id, status, state, created_at, next_at, attempts, ended_at, last_error"
_STATUS, _ATTEMPTS, _EXECUTIONS, _STARTED_AT = (
    CALL_FIELDS.index(f) for f in ("status", "attempts", "executions", "started_at"))
_INSERT_CALL = f"INSERT INTO calls ({', '.join(CALL_FIELDS)}) VALUES ({', '.join('?' * len(CALL_FIELDS))})"


def grouped(writes: list[tuple[str | None, str, Sequence[Any]]]) -> list[tuple[str, list[Sequence[Any]]]]:
    """Consecutive writes of the same statement become one executemany (order is kept)."""
    groups: list[tuple[str, list[Sequence[Any]]]] = []
    for _, sql, params in writes:
        if groups and groups[-1][0] == sql:
            groups[-1][1].append(params)
        else:
            groups.append((sql, [params]))
    return groups


def _run_filter(*, application: str | None, status: str | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if application is not None:
        clauses.append("application = ?")
        params.append(application)
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
