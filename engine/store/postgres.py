"""The PostgreSQL store: `postgresql://user:pass@host:port/db`, through psycopg 3.

Chosen when the control plane must outlive its machine: nothing needed to continue a run lives on
one server's disk. Runs, calls, logs and deployed code are rows (`engine.store.base` does all of
that, in SQL both stores speak); large values are rows too, split in 1 MiB chunks (`blob_chunks`)
and named by digest in `blobs` only once every chunk is in — written and committed on a
connection of their own *before* the row naming them commits, as the SQLite store fsyncs its
blob files first.

Group commit costs one round trip: BEGIN, the buffered writes, the fence check and COMMIT go out
as one message, the writes as one statement per kind over arrays (`batched`, `as_one_statement`). A lost connection (the database restarted, or this server was cut off from
it) raises `StoreUnavailable`; the driver then stops driving its runs, and takes them again,
from their checkpoints, once the database answers (if no other server took them meanwhile).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Sequence
from typing import Any, BinaryIO

from engine.errors import SDKUsageError
from engine.store import base
from engine.store.base import StoreUnavailable
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION, for_postgres, statements
from engine.wire import content

CHUNK = 1 << 20

# Seconds a statement may wait on the network before the connection counts as lost: a server cut
# off from the database must notice well within its lease (10 s by default).
CONNECT_OPTIONS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 2,
                   "keepalives_interval": 1, "keepalives_count": 2, "tcp_user_timeout": 4000}


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise SDKUsageError("a postgresql:// store needs psycopg 3: pip install 'engine[postgres]'") from None
    return psycopg


def _connect(url: str) -> Any:
    psycopg = _psycopg()
    try:
        return psycopg.connect(url, autocommit=True, **CONNECT_OPTIONS)
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(f"cannot reach the PostgreSQL store: {first}") from None


class PostgresStore(base.Store):
    NOW = "(EXTRACT(EPOCH FROM clock_timestamp())::double precision)"
    LOCK_ROWS = " FOR UPDATE"
    SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.where = _redacted(url)
        self.db = _connect(url)
        self._psycopg = _psycopg()
        self._relax_commit()
        self._client = self._psycopg.ClientCursor(self.db)
        self._sql: dict[str, str] = {}
        self._blob_connections: list[Any] = []
        self._blob_lock = threading.Lock()
        self._migrate()

    # --- schema ----------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.db.transaction():
            # One migrator at a time across every server starting on this database.
            self.db.execute("SELECT pg_advisory_xact_lock(7349201)")
            self.db.execute("CREATE TABLE IF NOT EXISTS engine_schema (version INTEGER NOT NULL)")
            row = self.db.execute("SELECT version FROM engine_schema").fetchone()
            version = row[0] if row else 0
            if row is None:
                self.db.execute("INSERT INTO engine_schema (version) VALUES (0)")
            if version > SCHEMA_VERSION:
                raise SDKUsageError(
                    f"{self.where} was written by a newer engine (schema {version}, this engine knows "
                    f"{SCHEMA_VERSION}): upgrade the engine")
            for number in range(version, SCHEMA_VERSION):
                for statement in statements(MIGRATIONS[number]):
                    self.db.execute(for_postgres(statement))
                self.db.execute("UPDATE engine_schema SET version = %s", (number + 1,))

    # --- the dialect -----------------------------------------------------------------------

    def _q(self, sql: str) -> str:
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.replace("?", "%s")
        return out

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.db.execute(self._q(sql), params)
        except self._psycopg.OperationalError as exc:
            self._lost_connection(exc)

    def _send(self, groups: list[tuple[str, list[Sequence[Any]]]]) -> None:
        try:
            with self.db.pipeline():
                cur = self.db.cursor()
                for sql, rows in groups:
                    cur.executemany(self._q(sql), rows)
        except self._psycopg.OperationalError as exc:
            self._lost_connection(exc)

    def _finish(self, expected: dict[str, tuple[str, int]]) -> bool:
        """BEGIN (unless a read opened the transaction), the writes — as few statements as
        `batched` and `as_one_statement` make them — the fence check and COMMIT as one message:
        one round trip, one parse. The values are bound here, client-side, by
        psycopg's own quoting (`ClientCursor.mogrify`). The check divides by zero — an error
        that skips the rest of the message, COMMIT included, so the transaction rolls back —
        unless every held run's row still names this owner and epoch; the rows it finds stay
        locked until COMMIT, so no claim slips in between."""
        pending, self._pending = self._pending, []
        self._written.extend(pending)
        fence = None
        if expected:
            ids = sorted(expected)
            matches = " OR ".join("(run_id = %s AND owner = %s AND lease_epoch = %s)" for _ in ids)
            fence = (f"SELECT 1 / (CASE WHEN count(*) = %s THEN 1 ELSE 0 END) FROM "
                     f"(SELECT run_id FROM runs WHERE {matches} FOR UPDATE) AS held",
                     [len(ids), *(v for r in ids for v in (r, *expected[r]))])
        try:
            bind = self._client.mogrify
            parts = [] if self._tx_open else ["BEGIN"]
            for sql, rows in batched(pending):
                one = as_one_statement(sql, rows) if len(rows) > 1 else None
                if one is not None:
                    parts.append(bind(*one))
                else:
                    parts.extend(bind(self._q(sql), row) for row in rows)
            if fence is not None:
                parts.append(bind(*fence))
            parts.append("COMMIT")
            self.db.execute(";\n".join(parts), prepare=False)
        except self._psycopg.errors.DivisionByZero:
            self._execute("ROLLBACK")
            self._tx_open = False
            self._written = []
            return False
        except self._psycopg.OperationalError as exc:
            self._lost_connection(exc)
        return True

    def _lost_connection(self, exc: Exception) -> None:
        self._tx_open = False
        self._pending, self._written = [], []
        try:
            self.db.close()
        except Exception:  # noqa: BLE001
            pass
        raise StoreUnavailable(f"the PostgreSQL store stopped answering: {str(exc).strip()[:200]}") from exc

    def reconnect(self) -> None:
        """After `StoreUnavailable`: connect again (raises it again while the database is away)."""
        if not self.db.closed:
            self.db.close()
        self.db = _connect(self.url)
        self._relax_commit()
        self._client = self._psycopg.ClientCursor(self.db)

    def _relax_commit(self) -> None:
        """`synchronous_commit = off` for this connection, unless the URL says otherwise: a
        commit is visible to every server at once and survives this process being killed,
        and only the database server's own crash can lose the last few hundred milliseconds of
        commits (never corrupt anything) — the guarantee SQLite's WAL mode with
        `synchronous=NORMAL` gives, and what lets a fan-out checkpoint thousands of calls a
        second. Resume re-runs what such a crash lost. Add `?options=-c%20synchronous_commit%3Don`
        to the URL to wait for the disk at every commit."""
        if "synchronous_commit" not in self.url:
            self.db.execute("SET synchronous_commit = off")

    def _begin(self) -> None:
        self._execute("BEGIN")

    def _commit_tx(self) -> None:
        self._execute("COMMIT")

    def _rollback_tx(self) -> None:
        self._execute("ROLLBACK")

    def _close_connection(self) -> None:
        self.db.close()
        with self._blob_lock:
            for conn in self._blob_connections:
                conn.close()
            self._blob_connections.clear()

    def close(self) -> None:
        try:
            super().close()
        except StoreUnavailable:
            self._close_connection()

    # --- blobs -----------------------------------------------------------------------------
    # Blob work runs on threads (the Blobs service) beside the loop's own statements: each
    # operation borrows a connection of its own.

    def _borrow(self) -> Any:
        with self._blob_lock:
            if self._blob_connections:
                return self._blob_connections.pop()
        return _connect(self.url)

    def _give_back(self, conn: Any) -> None:
        if conn.closed or conn.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._blob_lock:
            self._blob_connections.append(conn)

    def put_blob(self, data: bytes) -> str:
        digest = content.address(data)
        if self.has_blob(digest):
            return digest
        writer = self.blob_writer()
        writer.write(data)
        return writer.commit()[0]

    def blob_writer(self) -> PostgresBlobWriter:
        return PostgresBlobWriter(self)

    def _upload_of(self, digest: str) -> tuple[str, int] | None:
        _check_digest(digest)
        conn = self._borrow()
        try:
            row = conn.execute("SELECT upload, size FROM blobs WHERE digest = %s", (digest,)).fetchone()
        finally:
            self._give_back(conn)
        return (row[0], int(row[1])) if row else None

    def get_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as fh:
            return fh.read()

    def open_blob(self, digest: str) -> BinaryIO:
        found = self._upload_of(digest)
        if found is None:
            raise FileNotFoundError(f"no blob {digest}")
        return _BlobReader(self, found[0], found[1])  # type: ignore[return-value]

    def blob_size(self, digest: str) -> int:
        found = self._upload_of(digest)
        if found is None:
            raise FileNotFoundError(f"no blob {digest}")
        return found[1]

    def has_blob(self, digest: str) -> bool:
        try:
            return self._upload_of(digest) is not None
        except KeyError:
            return False


class PostgresBlobWriter(base.BlobWriter):
    """Chunks go into `blob_chunks` under a fresh upload id, in one transaction on a connection
    of the writer's own; `commit` names the upload in `blobs` and commits, so a blob is either
    whole and named or absent."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.conn = store._borrow()
        self.conn.execute("BEGIN")
        self.upload = uuid.uuid4().hex
        self.hasher = content.Hasher()
        self.size = 0
        self.seq = 0
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.hasher.update(data)
        self.size += len(data)
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self._put(bytes(self.buffer[:CHUNK]))
            del self.buffer[:CHUNK]

    def _put(self, chunk: bytes) -> None:
        self.conn.execute("INSERT INTO blob_chunks (upload, seq, data) VALUES (%s, %s, %s)",
                          (self.upload, self.seq, chunk))
        self.seq += 1

    def commit(self) -> tuple[str, int]:
        digest = self.hasher.address()
        try:
            if self.buffer or self.seq == 0:
                self._put(bytes(self.buffer))
                self.buffer.clear()
            named = self.conn.execute(
                "INSERT INTO blobs (digest, size, upload) VALUES (%s, %s, %s) "
                "ON CONFLICT (digest) DO NOTHING RETURNING digest",
                (digest, self.size, self.upload)).fetchone()
            if named is None:  # stored already: keep that copy
                self.conn.execute("DELETE FROM blob_chunks WHERE upload = %s", (self.upload,))
            self.conn.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        self.store._give_back(self.conn)
        return digest, self.size

    def abort(self) -> None:
        try:
            self.conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - a broken connection rolls back by itself
            pass
        self.store._give_back(self.conn)


class _BlobReader:
    """A blob read chunk by chunk (file-like: `read(n)`, a context manager)."""

    def __init__(self, store: PostgresStore, upload: str, size: int) -> None:
        self.store, self.upload, self.size = store, upload, size
        self.seq = 0
        self.buffer = b""
        self.eof = False

    def _next(self) -> None:
        conn = self.store._borrow()
        try:
            row = conn.execute("SELECT data FROM blob_chunks WHERE upload = %s AND seq = %s",
                               (self.upload, self.seq)).fetchone()
        finally:
            self.store._give_back(conn)
        if row is None:
            self.eof = True
        else:
            self.buffer += bytes(row[0])
            self.seq += 1

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buffer) < n):
            self._next()
        if n < 0:
            out, self.buffer = self.buffer, b""
        else:
            out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def close(self) -> None:
        self.buffer = b""

    def __enter__(self) -> _BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# PostgreSQL's types of the columns the hot path writes many rows of at once (`as_one_statement`).
# tests/unit/test_store.py checks them against the schema a migrated database has.
COLUMN_TYPES: dict[str, dict[str, str]] = {
    "calls": {
        "call_id": "text", "run_id": "text", "parent_id": "text", "function": "text", "kind": "text",
        "spec": "bytea", "args_digest": "text", "status": "text", "attempts": "integer",
        "executions": "integer", "tail_id": "text", "result": "bytea", "result_digest": "text",
        "failure": "bytea", "error_kind": "text", "error_message": "text",
        "created_at": "double precision", "started_at": "double precision",
        "ended_at": "double precision", "seq": "bigint", "progress": "text", "metrics": "text",
        "reused": "integer",
    },
    "logs": {
        "run_id": "text", "call_id": "text", "function": "text", "attempt": "integer", "text": "text",
        "created_at": "double precision",
    },
}
_INSERT = re.compile(r"^INSERT INTO (\w+) \(([\w, ]+)\) VALUES \([?, ]+\)$")
_UPDATE_CALLS = re.compile(r"^UPDATE calls SET (.+) WHERE call_id = \?$")
_ASSIGN = re.compile(r"^(\w+) = \?$")


def _call_key(sql: str, row: Sequence[Any]) -> str | None:
    """The call a write of the calls table touches: an INSERT of a row (its first column is
    `call_id`) or an UPDATE by id (its last parameter); None for any other write."""
    if sql.startswith("INSERT INTO calls (call_id,"):
        return str(row[0])
    if sql.startswith("UPDATE calls SET ") and sql.endswith(" WHERE call_id = ?"):
        return str(row[-1])
    return None


def batched(writes: list[tuple[str | None, str, Sequence[Any]]]) -> list[tuple[str, list[Sequence[Any]]]]:
    """The writes of one transaction as (sql, rows) groups, each to become one statement
    (`as_one_statement`). A fan-out's turn interleaves its calls' writes — one call dispatched,
    another's result, the next dispatched — so grouping only neighbours left one statement per
    row. Within a stretch of writes to the calls table by call id, the writes are put in layers
    instead: a write goes one layer after the last one touching the same call, so each call's
    writes keep their order, and within a layer no two touch the same call, so its groups may
    run in any order. Any other write ends the stretch and keeps its place."""
    out: list[tuple[str, list[Sequence[Any]]]] = []
    layers: list[dict[str, list[Sequence[Any]]]] = []
    depth: dict[str, int] = {}

    def close() -> None:
        for layer in layers:
            out.extend(layer.items())
        layers.clear()
        depth.clear()

    for _, sql, params in writes:
        key = _call_key(sql, params)
        if key is None:
            close()
            if out and out[-1][0] == sql:
                out[-1][1].append(params)
            else:
                out.append((sql, [params]))
            continue
        level = depth.get(key, -1) + 1
        depth[key] = level
        if level == len(layers):
            layers.append({})
        layers[level].setdefault(sql, []).append(params)
    close()
    return out


def as_one_statement(sql: str, rows: list[Sequence[Any]]) -> tuple[str, list[Any]] | None:
    """Many rows of one INSERT into calls or logs, or of one UPDATE of calls by id, as a single
    statement over `unnest` of one array per column: one statement to parse, plan and execute
    instead of one per row (a fan-out writes thousands of rows a second). None when the
    statement is of another shape, or an UPDATE names a call twice (executemany's order
    would matter)."""
    insert = _INSERT.match(sql)
    if insert is not None:
        table, columns = insert.group(1), [c.strip() for c in insert.group(2).split(",")]
        types = COLUMN_TYPES.get(table)
        if types is None or any(c not in types for c in columns):
            return None
        arrays = ", ".join(f"%s::{types[c]}[]" for c in columns)
        return (f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})",
                [list(col) for col in zip(*rows, strict=True)])
    update = _UPDATE_CALLS.match(sql)
    if update is None:
        return None
    ids = [row[-1] for row in rows]
    if len(set(ids)) != len(ids):
        return None
    types = COLUMN_TYPES["calls"]
    sets: list[str] = []
    names: list[str] = []
    casts: list[str] = []
    for assignment in update.group(1).split(", "):
        column = _ASSIGN.match(assignment)
        if column is None:
            if "?" in assignment:
                return None
            sets.append(assignment)  # an expression of the row's own columns
            continue
        name = column.group(1)
        if name not in types:
            return None
        sets.append(f"{name} = v.p{len(names)}")
        casts.append(f"%s::{types[name]}[]")
        names.append(f"p{len(names)}")
    casts.append("%s::text[]")
    columns = [list(col) for col in zip(*rows, strict=True)]
    return (f"UPDATE calls SET {', '.join(sets)} FROM unnest({', '.join(casts)}) "
            f"AS v({', '.join(names + ['id'])}) WHERE calls.call_id = v.id", columns)


def _check_digest(digest: str) -> None:
    if not content.is_address(digest):
        raise KeyError(f"not a blob digest: {digest[:80]!r}")


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    head, at, tail = url.rpartition("@")
    if not at or ":" not in head.split("//", 1)[-1]:
        return url
    scheme, _, creds = head.partition("//")
    user = creds.split(":", 1)[0]
    return f"{scheme}//{user}:***@{tail}"
