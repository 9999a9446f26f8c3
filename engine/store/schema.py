"""The store's schema: every table, in one place, as ordered migrations.

Migrations are append-only. Never edit one that has shipped: add the next. `tests/unit/
test_store.py` checks that applying them in order yields the schema a fresh store has.

Tables:
- `runs`: one row per run (a request of an application): its input, where its code lives,
  status and outcome.
- `calls`: one row per call (function call, map or reduce) ever created in a run, keyed by its
  deterministic id. `spec` is the serialised `FutureSpec` (the wire message, opaque to the
  store); `result` holds a small value inline, `result_digest` names a large one in the blob
  directory. `attempts` counts attempts in the current try of the call (reset by resume);
  `executions` counts every time its body started, ever — the number crash tests check.
- `logs`: what a call printed, per attempt.
- `request_state`: the request context's key/value state of each run (`RequestContext.state`):
  the pickled value inline when small (`value`), else as a blob (`value_digest`), and the call
  that wrote it last. `runs.headers` holds the submitting HTTP request's headers (JSON pairs);
  `calls.progress` a call's last progress report and `calls.metrics` what it recorded through
  `RequestContext.metrics` (both JSON). `runs.budget` holds the run's budget (JSON: its limits,
  and the seconds it was driven before its current try; `engine.scheduler.budgets`).
- `failed_attempts`: every attempt of a call that failed (its start, end and failure), kept
  across retries and resumes, while the `calls` row describes only the latest attempt.
- `deployments`: every version of every application deployed to `engine server`, with its code
  archive, so that every server on the store can run and resume any run.
- `run_webhooks`: where to POST a run's end (url, HMAC secret, extra headers as JSON), one row
  per run that has a webhook, written with the run's row. `webhook_deliveries` is the outbox:
  one row per run end to report, inserted in the transaction that writes the run's final status
  (`Store.update_run`), so a crash cannot lose it; `claim`/`lease_expires` say which server is
  sending it now. `webhook_attempts`: every attempt of a delivery (its HTTP status or error).
- `signals`: every signal sent to a run (`engine.signal`, `POST /v1/runs/{id}/signals/{name}`):
  its payload as JSON text, in arrival order per name (`seq`, 0 for the first). A name takes one
  signal (seq 0) unless the run declared it repeatable; `call_id` names the repeatable signal
  future that took it, written in the transaction that completes that future.
- `runs.rerun_of` / `runs.rerun_from`: for a rerun (`engine.scheduler.rerun`), the run it came
  from and the function it reran from; `calls.reused` is 1 for a call whose checkpoint was
  copied from that run.
- `call_durations`: per application and function, how long a call took (the moving average of
  the run that ended last with such calls) and how many of its calls ran at once at most in
  that run (`width`), written with that run's end. A run's executor pools start from it
  (`engine.scheduler.pools`), and a new run starts `width` executors of each function once its
  root has its own (`Dispatcher.prestart`), so a fan-out that ran before finds its executors
  up; it is a hint, never a checkpoint, and losing it costs only that ramp.
- `blobs`, `blob_chunks`: large values, for a store that is not one machine's disk (PostgreSQL).
  The SQLite store keeps them as files beside the database and leaves these tables empty.

The statements are SQLite's. PostgreSQL gets them through `for_postgres`, which maps the three
types that differ; nothing else in them may be dialect-specific.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: initial schema
    """
    CREATE TABLE runs (
        run_id          TEXT PRIMARY KEY,
        application     TEXT NOT NULL,
        status          TEXT NOT NULL,
        root_call_id    TEXT NOT NULL,
        app_file        TEXT NOT NULL,
        module          TEXT NOT NULL,
        config_path     TEXT,
        backend         TEXT NOT NULL,
        input           BLOB NOT NULL,
        result          BLOB,
        failure         BLOB,
        error_kind      TEXT,
        error_message   TEXT,
        created_at      REAL NOT NULL,
        started_at      REAL,
        ended_at        REAL,
        idempotency_key TEXT UNIQUE,
        resumed_at      REAL,
        resumes         INTEGER NOT NULL DEFAULT 0,
        owner           TEXT
    );
    CREATE TABLE calls (
        call_id         TEXT PRIMARY KEY,
        run_id          TEXT NOT NULL REFERENCES runs(run_id),
        parent_id       TEXT,
        function        TEXT NOT NULL,
        kind            TEXT NOT NULL,
        spec            BLOB NOT NULL,
        args_digest     TEXT NOT NULL,
        status          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        executions      INTEGER NOT NULL DEFAULT 0,
        tail_id         TEXT,
        result          BLOB,
        result_digest   TEXT,
        failure         BLOB,
        error_kind      TEXT,
        error_message   TEXT,
        created_at      REAL NOT NULL,
        started_at      REAL,
        ended_at        REAL
    );
    CREATE INDEX calls_by_run ON calls(run_id);
    CREATE TABLE logs (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id          TEXT NOT NULL,
        call_id         TEXT NOT NULL,
        function        TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        text            TEXT NOT NULL,
        created_at      REAL NOT NULL
    );
    CREATE INDEX logs_by_run ON logs(run_id);
    """,
    # 2: a run's result, when large, is a blob (as a call's is) rather than a copy in the row.
    """
    ALTER TABLE runs ADD COLUMN result_digest TEXT;
    """,
    # 3: leases (owner + epoch + expiry) instead of a pid; what a cancel asked of another owner;
    # deployed versions and their code, and blobs, in the store: what any server needs to take a
    # run over; calls ordered by a sequence, not SQLite's rowid.
    """
    ALTER TABLE runs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN lease_expires REAL;
    ALTER TABLE runs ADD COLUMN version INTEGER;
    ALTER TABLE runs ADD COLUMN cancel_requested REAL;
    ALTER TABLE calls ADD COLUMN seq BIGINT;
    CREATE INDEX runs_by_status ON runs(status);
    CREATE INDEX runs_by_created ON runs(created_at);
    CREATE TABLE deployments (
        name            TEXT NOT NULL,
        version         INTEGER NOT NULL,
        digest          TEXT NOT NULL,
        file            TEXT NOT NULL,
        deployed_at     REAL NOT NULL,
        code            BLOB NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE blobs (
        digest          TEXT PRIMARY KEY,
        size            BIGINT NOT NULL,
        upload          TEXT NOT NULL
    );
    CREATE TABLE blob_chunks (
        upload          TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        data            BLOB NOT NULL,
        PRIMARY KEY (upload, seq)
    );
    """,
    # 4: the request context: headers of the submission, durable per-run state, and per call
    # its last progress report and its metrics.
    """
    ALTER TABLE runs ADD COLUMN headers TEXT;
    ALTER TABLE calls ADD COLUMN progress TEXT;
    ALTER TABLE calls ADD COLUMN metrics TEXT;
    CREATE TABLE request_state (
        run_id          TEXT NOT NULL,
        key             TEXT NOT NULL,
        value           BLOB,
        value_digest    TEXT,
        call_id         TEXT NOT NULL,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    """,
    # 5: the history of a call's failed attempts (the calls row keeps only the latest attempt).
    """
    CREATE TABLE failed_attempts (
        run_id          TEXT NOT NULL,
        call_id         TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        started_at      REAL,
        ended_at        REAL NOT NULL,
        error_kind      TEXT,
        error_message   TEXT
    );
    CREATE INDEX failed_attempts_by_run ON failed_attempts(run_id);
    """,
    # 6: completion webhooks: each run's webhook, the durable outbox of deliveries, their attempts.
    """
    CREATE TABLE run_webhooks (
        run_id          TEXT PRIMARY KEY,
        url             TEXT NOT NULL,
        secret          TEXT,
        headers         TEXT
    );
    CREATE TABLE webhook_deliveries (
        delivery_id     TEXT PRIMARY KEY,
        run_id          TEXT NOT NULL,
        status          TEXT NOT NULL,
        state           TEXT NOT NULL,
        created_at      REAL NOT NULL,
        next_at         REAL NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        claim           TEXT,
        lease_expires   REAL,
        ended_at        REAL,
        last_error      TEXT
    );
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries(state, next_at);
    CREATE INDEX webhook_deliveries_by_run ON webhook_deliveries(run_id);
    CREATE TABLE webhook_attempts (
        delivery_id     TEXT NOT NULL,
        run_id          TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        started_at      REAL NOT NULL,
        duration        REAL NOT NULL,
        http_status     INTEGER,
        error           TEXT
    );
    CREATE INDEX webhook_attempts_by_run ON webhook_attempts(run_id);
    """,
    # 7: a run's budget (its limits and the time it was driven before its current try), as JSON.
    """
    ALTER TABLE runs ADD COLUMN budget TEXT;
    """,
    # 8: a submission's priority (its weight in the fair share of executors between runs);
    # NULL for the default.
    """
    ALTER TABLE runs ADD COLUMN priority INTEGER;
    """,
    # 9: signals sent to runs (`engine.signal`): kept until a signal future of the name takes
    # them, whether that future exists yet or not.
    """
    CREATE TABLE signals (
        run_id          TEXT NOT NULL,
        name            TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        payload         TEXT NOT NULL,
        sent_at         REAL NOT NULL,
        call_id         TEXT,
        PRIMARY KEY (run_id, name, seq)
    );
    """,
    # 10: reruns (`engine rerun`): the run a rerun came from and the function it reran from;
    # per call, whether its checkpoint was copied from that run (reused, not executed).
    """
    ALTER TABLE runs ADD COLUMN rerun_of TEXT;
    ALTER TABLE runs ADD COLUMN rerun_from TEXT;
    ALTER TABLE calls ADD COLUMN reused INTEGER NOT NULL DEFAULT 0;
    """,
    # 11: per application and function, how long its calls took and how many ran at once, at
    # most, as the run that ended last measured it: where a new run's executor pools start
    # their estimate (`Pool.prior`), and how many executors it starts ahead (`prestart`).
    """
    CREATE TABLE call_durations (
        application     TEXT NOT NULL,
        function        TEXT NOT NULL,
        seconds         REAL NOT NULL,
        width           INTEGER NOT NULL DEFAULT 0,
        updated_at      REAL NOT NULL,
        PRIMARY KEY (application, function)
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# SQLite's types, as PostgreSQL names them. REAL is a 4-byte float there: timestamps need DOUBLE.
_POSTGRES_TYPES = [
    ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"),
    (" BLOB", " BYTEA"),
    (" REAL", " DOUBLE PRECISION"),
]


def for_postgres(statement: str) -> str:
    for sqlite_type, postgres_type in _POSTGRES_TYPES:
        statement = statement.replace(sqlite_type, postgres_type)
    return statement
