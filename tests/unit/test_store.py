"""The SQLite store: migrations, transactions, blobs, and reading runs back after reopening."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from engine.errors import RunNotFound, SDKUsageError
from engine.store import CallRow, RunRow, SQLiteStore, open_store, store_url
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION
from engine.store.sqlite import INLINE_LIMIT


def schema_of(db: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    return sorted(db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall())


def make_store(tmp_path: Path) -> SQLiteStore:
    return open_store(store_url(tmp_path / "state"))


def a_run(run_id: str = "run-1", created_at: float | None = None, **fields: object) -> RunRow:
    values: dict = dict(
        run_id=run_id, application="main", status="running", root_call_id=f"root-{run_id}",
        app_file="/app/app.py", module="app", config_path=None, backend="process",
        input=b"\x80input", created_at=created_at if created_at is not None else time.time(),
    )
    values.update(fields)
    return RunRow(**values)


def a_call(call_id: str, run_id: str = "run-1", status: str = "pending", **fields: object) -> CallRow:
    values: dict = dict(
        call_id=call_id, run_id=run_id, parent_id=None, function="f", kind="call",
        spec=b"spec-" + call_id.encode(), args_digest="d" * 32, status=status,
        created_at=time.time(),
    )
    values.update(fields)
    return CallRow(**values)


# --- schema -------------------------------------------------------------------------------------


def test_migrations_in_order_give_the_fresh_schema(tmp_path: Path) -> None:
    migrated = sqlite3.connect(tmp_path / "migrated.db")
    for number, script in enumerate(MIGRATIONS, start=1):
        migrated.executescript(script)
        migrated.execute(f"PRAGMA user_version={number}")
    store = make_store(tmp_path)
    try:
        assert schema_of(migrated) == schema_of(store.db)
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert SCHEMA_VERSION == len(MIGRATIONS)
        tables = {name for kind, name, _, _ in schema_of(store.db) if kind == "table"}
        assert {"runs", "calls", "logs"} <= tables
    finally:
        store.close()
        migrated.close()


def test_store_upgrades_a_partially_migrated_database(tmp_path: Path) -> None:
    path = tmp_path / "state" / "engine.db"
    path.parent.mkdir()
    old = sqlite3.connect(path)
    old.executescript(MIGRATIONS[0])
    old.execute("PRAGMA user_version=1")
    old.close()
    store = make_store(tmp_path)
    try:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "engine.db"
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SDKUsageError, match="newer engine"):
        make_store(tmp_path)


def test_reopening_does_not_migrate_again(tmp_path: Path) -> None:
    make_store(tmp_path).close()
    store = make_store(tmp_path)  # CREATE TABLE again would raise
    store.close()


def test_unsupported_url() -> None:
    with pytest.raises(SDKUsageError, match="sqlite:///PATH or postgresql://"):
        open_store("mysql://localhost/engine")


# --- runs and calls -----------------------------------------------------------------------------


def test_runs_and_calls_read_back_after_reopen(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.create_run(a_run("run-1", created_at=100.0))
    store.create_run(a_run("run-2", created_at=200.0, idempotency_key="k2"))
    store.insert_call(a_call("c1", created_at=1.0))
    store.insert_call(a_call("c2", created_at=2.0, parent_id="c1"))
    store.count_execution("run-1", "c1", attempts=1, started_at=5.0)
    store.update_call("run-1", "c1", status="succeeded", result=b"value", ended_at=6.0)
    store.update_run("run-1", status="succeeded", result=b"r", ended_at=7.0)
    store.append_log("run-1", "c1", "f", 1, "hello\n")
    store.append_log("run-1", "c2", "g", 1, "world\n")
    store.commit()
    store.close()

    store = make_store(tmp_path)
    try:
        run = store.get_run("run-1")
        assert (run.status, run.result, run.input, run.ended_at) == (
            "succeeded", b"r", b"\x80input", 7.0)
        assert [r.run_id for r in store.list_runs()] == ["run-2", "run-1"]  # newest first
        assert [r.run_id for r in store.list_runs(limit=1)] == ["run-2"]
        assert store.find_run_by_key("k2").run_id == "run-2"  # type: ignore[union-attr]
        assert store.find_run_by_key("nope") is None
        calls = store.load_calls("run-1")
        assert [c.call_id for c in calls] == ["c1", "c2"]  # creation order
        c1 = calls[0]
        assert (c1.status, c1.result, c1.attempts, c1.executions, c1.started_at) == (
            "succeeded", b"value", 1, 1, 5.0)
        assert calls[1].parent_id == "c1"
        assert store.logs("run-1") == [("c1", "f", 1, "hello\n"), ("c2", "g", 1, "world\n")]
        assert store.logs("run-1", "g") == [("c2", "g", 1, "world\n")]
        with pytest.raises(RunNotFound, match="no-such-run"):
            store.get_run("no-such-run")
    finally:
        store.close()


def test_uncommitted_writes_are_invisible_to_other_readers(tmp_path: Path) -> None:
    writer = make_store(tmp_path)
    reader = make_store(tmp_path)
    try:
        writer.create_run(a_run("run-1"))
        with pytest.raises(RunNotFound):
            reader.get_run("run-1")
        writer.commit()
        assert reader.get_run("run-1").status == "running"
    finally:
        writer.close()
        reader.close()


def test_uncommitted_writes_are_lost_when_the_process_dies(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.create_run(a_run("run-1"))
    store.commit()
    store.update_run("run-1", status="succeeded")
    store.db.close()  # no commit: as if the engine were killed here
    store = make_store(tmp_path)
    try:
        assert store.get_run("run-1").status == "running"
    finally:
        store.close()


def test_reset_unfinished_keeps_succeeded_and_tail_calls(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    try:
        store.create_run(a_run("run-1"))
        statuses = ["pending", "queued", "running", "succeeded", "tail", "failed", "cancelled"]
        for s in statuses:
            store.insert_call(a_call(s, status=s, attempts=2, ended_at=9.0))
        store.reset_unfinished("run-1")
        store.commit()
        after = {c.call_id: (c.status, c.attempts, c.ended_at) for c in store.load_calls("run-1")}
        assert after["succeeded"] == ("succeeded", 2, 9.0)
        assert after["tail"] == ("tail", 2, 9.0)
        for s in ("pending", "queued", "running", "failed", "cancelled"):
            assert after[s] == ("pending", 0, None), s
    finally:
        store.close()


# --- blobs ---------------------------------------------------------------------------------------


def test_small_results_inline_large_ones_as_blob_files(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.create_run(a_run("run-1"))
    store.insert_call(a_call("small"))
    store.insert_call(a_call("large"))
    small = b"s" * INLINE_LIMIT
    large = bytes(range(256)) * (INLINE_LIMIT // 256 + 1)
    assert INLINE_LIMIT == 64 * 1024 and len(large) > INLINE_LIMIT
    store.save_result("run-1", "small", small, status="succeeded")
    store.save_result("run-1", "large", large, status="succeeded")
    store.commit()
    store.close()

    store = make_store(tmp_path)
    try:
        calls = {c.call_id: c for c in store.load_calls("run-1")}
        assert calls["small"].result == small and calls["small"].result_digest is None
        assert calls["large"].result is None and calls["large"].result_digest
        digest = calls["large"].result_digest
        files = [p for p in (tmp_path / "state" / "blobs").rglob("*") if p.is_file()]
        assert [p.name for p in files] == [digest]
        assert files[0].read_bytes() == large
        assert store.call_result(calls["small"]) == small
        assert store.call_result(calls["large"]) == large
        with pytest.raises(KeyError):
            store.call_result(a_call("none"))
    finally:
        store.close()


def test_blobs_are_content_addressed(tmp_path: Path) -> None:
    import hashlib

    store = make_store(tmp_path)
    try:
        data = b"x" * 100_000
        first = store.put_blob(data)
        assert first == hashlib.sha256(data).hexdigest()
        assert store.put_blob(data) == first  # idempotent
        assert store.get_blob(first) == data
        leftovers = [p for p in (tmp_path / "state" / "blobs").rglob(".tmp-*")]
        assert leftovers == []
    finally:
        store.close()
