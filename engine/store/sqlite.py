"""SQLite store of runs, calls, checkpoints and logs; large values as content-addressed files.

Durability: the database runs in WAL mode with `synchronous=NORMAL`. A committed transaction
survives the engine process dying (kill -9) — the case resume is built for. A power loss may
drop the last transactions before a WAL checkpoint, never corrupt the file. Blobs are written
to a temporary name, fsynced and renamed *before* the row naming them commits, so a committed
row never points at a missing or partial blob.

The store does not commit on its own: the scheduler groups every write made in one turn of its
event loop into one transaction (`commit()`), then acts on it. "Checkpointed before anyone
depends on it" is that ordering.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from engine.errors import RunNotFound, SDKUsageError
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION

# Values at most this size live in the row; larger ones in the blob directory.
INLINE_LIMIT = 64 * 1024

RUN_FIELDS = (
    "run_id", "application", "status", "root_call_id", "app_file", "module", "config_path",
    "backend", "input", "result", "failure", "error_kind", "error_message", "created_at",
    "started_at", "ended_at", "idempotency_key", "resumed_at", "resumes", "owner", "result_digest",
)
CALL_FIELDS = (
    "call_id", "run_id", "parent_id", "function", "kind", "spec", "args_digest", "status",
    "attempts", "executions", "tail_id", "result", "result_digest", "failure", "error_kind",
    "error_message", "created_at", "started_at", "ended_at",
)


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
    # "pid@host" of the engine process driving the run; resume refuses while it lives.
    owner: str | None = None
    # The result as a blob, when too large for the row (then `result` is None).
    result_digest: str | None = None


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


class SQLiteStore:
    """Runs, calls and logs in `<state_dir>/engine.db`; blobs in `<state_dir>/blobs/`."""

    def __init__(self, path: Path, blob_dir: Path) -> None:
        self.path = path
        self.blob_dir = blob_dir
        path.parent.mkdir(parents=True, exist_ok=True)
        blob_dir.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the scheduler's loop thread owns writes; CLI readers open
        # their own store. isolation_level=None + explicit BEGIN keeps transactions visible.
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._in_tx = False
        self._inserts: list[list[Any]] = []
        self._insert_sql = (
            f"INSERT INTO calls ({', '.join(CALL_FIELDS)}) VALUES ({', '.join('?' * len(CALL_FIELDS))})"
        )
        self._migrate()
        self._sweep_partial_blobs()

    # --- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SDKUsageError(
                f"{self.path} was written by a newer engine (schema {version}, this engine knows "
                f"{SCHEMA_VERSION}): upgrade the engine or use another --state-dir"
            )
        if version == SCHEMA_VERSION:
            return
        # Under the write lock, read the version again: another process opening the same new
        # state directory may have migrated it in the meantime.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[number]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number + 1}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # --- transactions ----------------------------------------------------------------------

    def _tx(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
        if self._inserts:
            self._drain()

    def _drain(self) -> None:
        """Write buffered call inserts in one statement (a fan-out adds thousands in a row)."""
        rows, self._inserts = self._inserts, []
        self.db.executemany(self._insert_sql, rows)

    def commit(self) -> None:
        if self._in_tx:
            if self._inserts:
                self._drain()
            self.db.execute("COMMIT")
            self._in_tx = False

    def close(self) -> None:
        self.commit()
        self.db.close()

    # --- runs ------------------------------------------------------------------------------

    def create_run(self, run: RunRow) -> None:
        self._tx()
        values = [getattr(run, f) for f in RUN_FIELDS]
        self.db.execute(
            f"INSERT INTO runs ({', '.join(RUN_FIELDS)}) VALUES ({', '.join('?' * len(RUN_FIELDS))})",
            values,
        )

    def update_run(self, run_id: str, **fields: Any) -> None:
        self._tx()
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*fields.values(), run_id])

    def get_run(self, run_id: str) -> RunRow:
        row = self.db.execute(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.path.parent}: see `engine runs`")
        return RunRow(*row)

    def find_run_by_key(self, key: str) -> RunRow | None:
        row = self.db.execute(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE idempotency_key = ?", (key,)
        ).fetchone()
        return RunRow(*row) if row else None

    def list_runs(self, limit: int = 100, *, application: str | None = None,
                  status: str | None = None) -> list[RunRow]:
        """Newest first, optionally only one application's and/or one status's runs."""
        where, params = self._run_filter(application=application, status=status)
        rows = self.db.execute(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs{where} ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [RunRow(*r) for r in rows]

    def runs_in_order(self, statuses: tuple[str, ...]) -> list[RunRow]:
        """Runs in any of `statuses`, oldest first: the order a durable queue starts them in.
        A resumed run queues again as of its resume, not its creation."""
        marks = ", ".join("?" * len(statuses))
        rows = self.db.execute(
            f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE status IN ({marks}) "
            "ORDER BY COALESCE(resumed_at, created_at), rowid",
            statuses,
        ).fetchall()
        return [RunRow(*r) for r in rows]

    def count_runs(self, *, application: str | None = None, status: str | None = None) -> int:
        where, params = self._run_filter(application=application, status=status)
        return int(self.db.execute(f"SELECT count(*) FROM runs{where}", params).fetchone()[0])

    @staticmethod
    def _run_filter(*, application: str | None, status: str | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if application is not None:
            clauses.append("application = ?")
            params.append(application)
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    # --- calls -----------------------------------------------------------------------------

    def insert_call(self, call: CallRow) -> None:
        """Buffered: written before the next other statement of this store, or the commit."""
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True
        self._inserts.append([getattr(call, f) for f in CALL_FIELDS])

    def update_call(self, call_id: str, **fields: Any) -> None:
        self._tx()
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE calls SET {sets} WHERE call_id = ?", [*fields.values(), call_id])

    def count_execution(self, call_id: str, attempts: int, started_at: float) -> None:
        self._tx()
        self.db.execute(
            "UPDATE calls SET status = 'running', attempts = ?, executions = executions + 1, "
            "started_at = ? WHERE call_id = ?",
            (attempts, started_at, call_id),
        )

    def reset_unfinished(self, run_id: str) -> None:
        """Resume: every call that neither succeeded nor handed off by tail call runs again."""
        self._tx()
        self.db.execute(
            "UPDATE calls SET status = 'pending', attempts = 0, ended_at = NULL "
            "WHERE run_id = ? AND status NOT IN ('succeeded', 'tail')",
            (run_id,),
        )

    def load_calls(self, run_id: str) -> list[CallRow]:
        if self._inserts:
            self._drain()
        rows = self.db.execute(
            f"SELECT {', '.join(CALL_FIELDS)} FROM calls WHERE run_id = ? ORDER BY created_at, rowid",
            (run_id,),
        ).fetchall()
        return [CallRow(*r) for r in rows]

    def keep(self, data: bytes) -> tuple[bytes | None, str | None]:
        """Where a value lives: `(data, None)` in its row when small, `(None, digest)` as a blob."""
        if len(data) <= INLINE_LIMIT:
            return data, None
        return None, self.put_blob(data)

    def save_result(self, call_id: str, data: bytes, **fields: Any) -> None:
        """Record a call's value: inline when small, as a blob file when large."""
        result, digest = self.keep(data)
        self.update_call(call_id, result=result, result_digest=digest, **fields)

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

    # --- blobs -----------------------------------------------------------------------------
    # Content-addressed files `<blob_dir>/<digest[:2]>/<digest>`, digest = SHA-256 (hex). Written
    # under a temporary name, fsynced, then renamed: a blob's name never points at partial bytes.

    def blob_path(self, digest: str) -> Path:
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise KeyError(f"not a blob digest: {digest[:80]!r}")
        return self.blob_dir / digest[:2] / digest

    def put_blob(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.blob_path(digest).exists():
            return digest
        writer = self.blob_writer()
        writer.write(data)
        return writer.commit()[0]

    def _sweep_partial_blobs(self, older_than_s: float = 3600.0) -> None:
        """Remove what writers that died mid-blob left (`.tmp-*`, untouched for an hour: other
        engines sharing this state directory may be writing theirs right now)."""
        cutoff = time.time() - older_than_s
        for tmp in self.blob_dir.glob(".tmp-*"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
            except OSError:
                pass

    def blob_writer(self) -> BlobWriter:
        """For a blob that arrives in pieces (the Blobs service): write, then commit or abort."""
        return BlobWriter(self)

    def get_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def open_blob(self, digest: str) -> BinaryIO:
        """The blob for reading in pieces; FileNotFoundError when there is none."""
        return self.blob_path(digest).open("rb")

    def blob_size(self, digest: str) -> int:
        return self.blob_path(digest).stat().st_size

    def has_blob(self, digest: str) -> bool:
        try:
            return self.blob_path(digest).is_file()
        except KeyError:
            return False

    # --- logs ------------------------------------------------------------------------------

    def append_log(self, run_id: str, call_id: str, function: str, attempt: int, text: str) -> None:
        self._tx()
        self.db.execute(
            "INSERT INTO logs (run_id, call_id, function, attempt, text, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, call_id, function, attempt, text, time.time()),
        )

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
        return [tuple(r) for r in self.db.execute(query + " ORDER BY id", params)]  # type: ignore[misc]


class BlobWriter:
    """One blob being written: hashed as it arrives, named by its digest only once complete."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.hasher = hashlib.sha256()
        self.size = 0
        store.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=store.blob_dir, prefix=".tmp-")
        self.fh = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self.hasher.update(data)
        self.fh.write(data)
        self.size += len(data)

    def commit(self) -> tuple[str, int]:
        """fsync and name the blob; returns (digest, size)."""
        digest = self.hasher.hexdigest()
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            target = self.store.blob_path(digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, target)
        except BaseException:
            self.abort()
            raise
        return digest, self.size

    def abort(self) -> None:
        self.fh.close()
        Path(self.tmp).unlink(missing_ok=True)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
