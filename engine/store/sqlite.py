"""The SQLite store (the default): one database file in the state directory; large values as
content-addressed files beside it.

Durability: the database runs in WAL mode with `synchronous=NORMAL`. A committed transaction
survives the engine process dying (kill -9) — the case resume is built for. A power loss may
drop the last transactions before a WAL checkpoint, never corrupt the file. Blobs are written
to a temporary name, fsynced and renamed *before* the row naming them commits, so a committed
row never points at a missing or partial blob.

What all stores share (group commit, leases, fencing) is in `engine.store.base`.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from engine import pagecache
from engine.errors import SDKUsageError
from engine.store import base
from engine.store.base import INLINE_LIMIT, CallRow, RunRow
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION, statements
from engine.wire import content

__all__ = ["INLINE_LIMIT", "CallRow", "RunRow", "SQLiteStore"]


class SQLiteStore(base.Store):
    """Runs, calls and logs in `<state_dir>/engine.db`; blobs in `<state_dir>/blobs/`."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"

    def __init__(self, path: Path, blob_dir: Path) -> None:
        super().__init__()
        self.path = path
        self.blob_dir = blob_dir
        self.where = str(path.parent)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob_dir.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the scheduler's loop thread owns writes; CLI readers open
        # their own store. isolation_level=None: statements outside `BEGIN` commit at once.
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
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
                for statement in statements(MIGRATIONS[number]):
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number + 1}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # --- the dialect -----------------------------------------------------------------------

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, params)

    def _send(self, groups: list[tuple[str, list[Sequence[Any]]]]) -> None:
        for sql, rows in groups:
            if len(rows) == 1:
                self.db.execute(sql, rows[0])
            else:
                self.db.executemany(sql, rows)

    def _begin(self) -> None:
        # IMMEDIATE: the write lock first, so that the fence check at commit sees what no other
        # process can change before this transaction ends.
        self.db.execute("BEGIN IMMEDIATE")

    def _commit_tx(self) -> None:
        self.db.execute("COMMIT")

    def _rollback_tx(self) -> None:
        self.db.execute("ROLLBACK")

    def _close_connection(self) -> None:
        self.db.close()

    # --- blobs -----------------------------------------------------------------------------
    # Files named by their content address (`engine.wire.content`), `<blob_dir>/<shard>/<address>`.
    # Written under a temporary name, fsynced, then renamed: a blob's name never points at partial
    # bytes.

    def blob_path(self, digest: str) -> Path:
        if not content.is_address(digest):
            raise KeyError(f"not a blob digest: {digest[:80]!r}")
        return self.blob_dir / content.shard(digest) / digest

    def put_blob(self, data: bytes) -> str:
        digest = content.address(data)
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
        return self.blob_path(digest).open("rb")

    def blob_size(self, digest: str) -> int:
        return self.blob_path(digest).stat().st_size

    def has_blob(self, digest: str) -> bool:
        try:
            return self.blob_path(digest).is_file()
        except KeyError:
            return False


class BlobWriter(base.BlobWriter):
    """One blob being written: hashed as it arrives, named by its digest only once complete.
    Written in small pieces (`engine.pagecache`), unbuffered: what arrives is megabytes."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.hasher = content.Hasher()
        self.size = 0
        store.blob_dir.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=store.blob_dir, prefix=".tmp-")
        self.fh = os.fdopen(fd, "wb", buffering=0)

    def write(self, data: bytes) -> None:
        self.hasher.update(data)
        pagecache.write(self.fh.fileno(), data)
        self.size += len(data)

    def commit(self) -> tuple[str, int]:
        """fsync and name the blob; returns (digest, size)."""
        digest = self.hasher.address()
        try:
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


