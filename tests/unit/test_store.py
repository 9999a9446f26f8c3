"""The stores: migrations, transactions, blobs, leases and fencing, and reading runs back after
reopening. Every test that is not about SQLite's file layout runs on both stores: SQLite in a
temporary state directory and a real PostgreSQL server (a fresh database per test, see
`postgres_url` in conftest.py)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import RunNotFound, SDKUsageError
from engine.store import CallRow, RunRow, SQLiteStore, Store, open_store, store_url
from engine.store.schema import MIGRATIONS, SCHEMA_VERSION
from engine.store.sqlite import INLINE_LIMIT
from engine.wire import content


def schema_of(db: sqlite3.Connection) -> list[tuple[str, str, str, str]]:
    return sorted(db.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall())


def make_store(tmp_path: Path) -> SQLiteStore:
    return open_store(store_url(tmp_path / "state"))  # type: ignore[return-value]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """Opens (again) one store of each kind: each call is a new connection to the same data."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else store_url(tmp_path / "state")
    opened: list[Store] = []

    def open_it() -> Store:
        store = open_store(url)
        opened.append(store)
        return store

    yield open_it
    for store in opened:
        try:
            store.close()
        except Exception:  # noqa: BLE001 - closed by the test already
            pass


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


def test_reopening_does_not_migrate_again(opener: Callable[[], Store]) -> None:
    opener().close()
    opener().close()  # CREATE TABLE again would raise


def test_unsupported_url() -> None:
    with pytest.raises(SDKUsageError, match="sqlite:///PATH or postgresql://"):
        open_store("mysql://localhost/engine")


# --- runs and calls -----------------------------------------------------------------------------


def test_runs_and_calls_read_back_after_reopen(opener: Callable[[], Store]) -> None:
    store = opener()
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

    store = opener()
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


def test_request_context_columns_and_state_read_back(opener: Callable[[], Store]) -> None:
    store = opener()
    store.create_run(a_run("run-1", headers='[["x-user", "ada"]]'))
    store.insert_call(a_call("c1"))
    store.insert_call(a_call("c2"))
    # Many writes of one key in one commit: the last one wins, in either store.
    for i in range(5):
        store.set_state("run-1", "k", f"v{i}".encode(), None, "c1")
    store.set_state("run-1", "big", None, "ab" * 32, "c2")
    store.update_call("run-1", "c1", progress='{"current": 1}', metrics='{"counters": {"n": 2}}')
    store.update_call("run-1", "c2", progress=None, metrics=None)
    store.commit()
    store.set_state("run-1", "k", b"last", None, "c2")  # a later commit overwrites
    store.commit()
    store.close()

    store = opener()
    try:
        assert store.get_run("run-1").headers == '[["x-user", "ada"]]'
        assert store.load_state("run-1") == {"k": (b"last", None), "big": (None, "ab" * 32)}
        assert store.load_state("run-2") == {}
        c1, c2 = store.load_calls("run-1")
        assert (c1.progress, c1.metrics) == ('{"current": 1}', '{"counters": {"n": 2}}')
        assert (c2.progress, c2.metrics) == (None, None)
    finally:
        store.close()


def test_uncommitted_writes_are_invisible_to_other_readers(opener: Callable[[], Store]) -> None:
    writer = opener()
    reader = opener()
    try:
        writer.create_run(a_run("run-1"))
        with pytest.raises(RunNotFound):
            reader.get_run("run-1")
        writer.commit()
        assert reader.get_run("run-1").status == "running"
    finally:
        writer.close()
        reader.close()


def test_uncommitted_writes_are_lost_when_the_process_dies(opener: Callable[[], Store]) -> None:
    store = opener()
    store.create_run(a_run("run-1"))
    store.commit()
    store.update_run("run-1", status="succeeded")
    store.get_run("run-1")  # sent, in the open transaction
    store.db.close()  # type: ignore[attr-defined]  # no commit: as if the engine were killed here
    store = opener()
    try:
        assert store.get_run("run-1").status == "running"
    finally:
        store.close()


def test_reset_unfinished_keeps_succeeded_and_tail_calls(opener: Callable[[], Store]) -> None:
    store = opener()
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

    store = make_store(tmp_path)
    try:
        data = b"x" * 100_000
        first = store.put_blob(data)
        assert first == content.address(data)
        assert store.put_blob(data) == first  # idempotent
        assert store.get_blob(first) == data
        leftovers = [p for p in (tmp_path / "state" / "blobs").rglob(".tmp-*")]
        assert leftovers == []
    finally:
        store.close()


def test_blobs_stream_in_and_out_of_either_store(opener: Callable[[], Store]) -> None:
    """What the Blobs service does: a value arriving in pieces is named by its digest only once
    whole; an aborted one leaves nothing; reading back in pieces gives the same bytes."""

    store = opener()
    data = bytes(range(256)) * 12_000  # about 3 MiB: several of PostgreSQL's 1 MiB chunks
    writer = store.blob_writer()
    for i in range(0, len(data), 100_000):
        writer.write(data[i:i + 100_000])
    digest, size = writer.commit()
    assert (digest, size) == (content.address(data), len(data))
    other = opener()  # another connection (another server) sees it
    assert other.has_blob(digest) and other.blob_size(digest) == len(data)
    with other.open_blob(digest) as fh:
        pieces = []
        while chunk := fh.read(1 << 20):
            pieces.append(chunk)
    assert b"".join(pieces) == data
    assert store.put_blob(data) == digest  # content-addressed: stored once

    aborted = store.blob_writer()
    aborted.write(b"half a value")
    aborted.abort()
    missing = content.address(b"half a value")
    assert not other.has_blob(missing)
    with pytest.raises(FileNotFoundError):
        other.open_blob(missing)


def test_deployments_are_numbered_per_application(opener: Callable[[], Store]) -> None:
    a, b = opener(), opener()
    first = a.add_deployment("app", "d1", "app.py", b"zip-1")
    second = b.add_deployment("app", "d2", "app.py", b"zip-2")
    other = a.add_deployment("other", "d3", "x.py", b"zip-3")
    assert (first and first.version, second and second.version, other and other.version) == (1, 2, 1)
    assert [(d.name, d.version, d.digest) for d in b.deployments()] == [
        ("app", 1, "d1"), ("app", 2, "d2"), ("other", 1, "d3")]
    assert a.deployment_code("app", 2) == b"zip-2"
    with pytest.raises(KeyError):
        a.deployment_code("app", 3)


# --- leases and fencing --------------------------------------------------------------------------


def test_exactly_one_claimant_takes_a_run(opener: Callable[[], Store]) -> None:
    a, b = opener(), opener()
    a.create_run(a_run("run-1", status="queued", version=1))
    a.commit()
    assert [r.run_id for r in b.claimable_runs(10)] == ["run-1"]
    epoch = a.claim_run("run-1", "owner-a", 30)
    assert epoch == 1
    assert b.claim_run("run-1", "owner-b", 30) is None  # a's lease is live
    assert b.claimable_runs(10) == []
    lease = b.lease_of("run-1")
    assert lease.owner == "owner-a" and lease.live and 29 < (lease.expires_in or 0) <= 30
    # Only runs of deployed versions are a server's to take: `engine run`'s are not.
    b.create_run(a_run("cli-run", status="running", version=None))
    b.commit()
    assert b.claimable_runs(10) == []


def test_an_expired_lease_is_taken_over_and_fences_the_old_owner(opener: Callable[[], Store]) -> None:
    """A process paused past its lease and taken over loses its writes for that run — and only
    for that run: the rest of the same transaction commits — and is told which run it lost."""
    old, new = opener(), opener()
    old.create_run(a_run("run-1", status="running", version=1))
    old.create_run(a_run("run-2", status="running", version=1))
    old.insert_call(a_call("c1", "run-1"))
    old.insert_call(a_call("c2", "run-2"))
    old.commit()
    assert old.claim_run("run-1", "old", 0.5) == 1
    assert old.claim_run("run-2", "old", 30) == 1
    lost: list[set[str]] = []
    old.on_lost = lost.append
    time.sleep(0.6)  # run-1's lease runs out: the old owner is "paused"
    assert [r.run_id for r in new.claimable_runs(10)] == ["run-1"]
    assert new.claim_run("run-1", "new", 30) == 2
    new.update_call("run-1", "c1", status="succeeded", result=b"new owner's")
    new.commit()

    old.update_call("run-1", "c1", status="failed")  # the deposed owner writes on
    old.update_call("run-2", "c2", status="succeeded", result=b"still mine")
    old.commit()
    assert lost == [{"run-1"}]
    assert {c.call_id: (c.status, c.result) for c in new.load_calls("run-1")} == {
        "c1": ("succeeded", b"new owner's")}
    assert new.load_calls("run-2")[0].result == b"still mine"
    old.update_call("run-1", "c1", status="failed")  # dropped at once from now on
    old.commit()
    assert new.load_calls("run-1")[0].status == "succeeded"
    assert lost == [{"run-1"}]


def test_renewal_keeps_a_lease_and_notices_a_lost_one(opener: Callable[[], Store]) -> None:
    a, b = opener(), opener()
    a.create_run(a_run("run-1", status="running", version=1))
    a.create_run(a_run("run-2", status="running", version=1))
    a.commit()
    a.claim_run("run-1", "a", 0.5)
    a.claim_run("run-2", "a", 0.5)
    time.sleep(0.3)
    assert a.renew_leases("a", 0.5) == (set(), set())
    time.sleep(0.3)  # past the first expiry: renewed, so still held
    assert b.claim_run("run-1", "b", 30) is None
    b.request_cancel("run-2")
    b.commit()
    time.sleep(0.6)
    assert b.claim_run("run-1", "b", 30) == 2  # not renewed for a lease's length: taken
    assert a.renew_leases("a", 0.5) == ({"run-1"}, {"run-2"})
    assert a.fences["run-1"] is None


def test_release_lets_another_take_the_run_at_once(opener: Callable[[], Store]) -> None:
    a, b = opener(), opener()
    a.create_run(a_run("run-1", status="running", version=1))
    a.commit()
    a.claim_run("run-1", "a", 30)
    a.release_run("run-1")
    assert b.lease_of("run-1").owner is None
    assert b.claim_run("run-1", "b", 30) == 2


def test_conditional_updates_only_touch_undriven_runs(opener: Callable[[], Store]) -> None:
    a, b = opener(), opener()
    a.create_run(a_run("run-1", status="queued", version=1))
    a.create_run(a_run("run-2", status="queued", version=1))
    a.commit()
    a.claim_run("run-2", "a", 30)
    assert b.update_run_if("run-1", ("queued",), status="cancelled")
    assert not b.update_run_if("run-1", ("queued",), status="cancelled")  # not queued any more
    assert not b.update_run_if("run-2", ("queued",), status="cancelled")  # claimed: a drives it
    assert (a.get_run("run-1").status, a.get_run("run-2").status) == ("cancelled", "queued")


def test_many_rows_in_one_commit_are_written_as_given(opener: Callable[[], Store]) -> None:
    """A fan-out's turn: thousands of inserts and updates of one shape in one transaction
    (PostgreSQL sends each shape as one statement over arrays), the same call updated twice
    (order matters), NULLs, bytes and expressions of the row's own columns."""
    store = opener()
    store.create_run(a_run("run-1"))
    for i in range(300):
        store.insert_call(a_call(f"c{i}", result=None if i % 2 else bytes([i % 256]) * 3))
    for i in range(300):
        store.count_execution("run-1", f"c{i}", attempts=1, started_at=float(i))
    store.count_execution("run-1", "c0", attempts=2, started_at=1000.0)  # c0 twice: in order
    for i in range(300):
        store.update_call("run-1", f"c{i}", status="succeeded", result=None if i % 3 else b"\x00r",
                          ended_at=None if i % 5 else float(i))
    for i in range(3):
        store.append_log("run-1", f"c{i}", "f", 1, f"line {i}\n")
    store.commit()
    calls = {c.call_id: c for c in opener().load_calls("run-1")}
    assert len(calls) == 300
    assert (calls["c0"].attempts, calls["c0"].executions, calls["c0"].started_at) == (2, 2, 1000.0)
    for i in (1, 3, 5, 10, 299):
        c = calls[f"c{i}"]
        assert (c.status, c.executions, c.started_at) == ("succeeded", 1, float(i))
        assert c.result == (None if i % 3 else b"\x00r")
        assert c.ended_at == (None if i % 5 else float(i))
    assert [r.call_id for r in opener().load_calls("run-1")][:3] == ["c0", "c1", "c2"]
    assert store.logs("run-1") == [(f"c{i}", "f", 1, f"line {i}\n") for i in range(3)]


def test_interleaved_writes_of_many_calls_commit_as_given(opener: Callable[[], Store]) -> None:
    """A fan-out's turn as the scheduler writes it: each call inserted, dispatched and finished,
    interleaved with the others' (PostgreSQL regroups them into one statement per kind,
    `postgres.batched`); every call ends in its last state."""
    store = opener()
    store.create_run(a_run("run-1"))
    for i in range(200):
        store.insert_call(a_call(f"c{i}"))
        store.count_execution("run-1", f"c{i}", attempts=1, started_at=float(i))
        if i:
            store.update_call("run-1", f"c{i - 1}", status="succeeded", result=bytes([i % 256]), ended_at=i)
    store.update_run("run-1", status="running")
    store.count_execution("run-1", "c199", attempts=2, started_at=500.0)
    store.commit()
    calls = {c.call_id: c for c in opener().load_calls("run-1")}
    assert len(calls) == 200
    for i in range(199):
        c = calls[f"c{i}"]
        assert (c.status, c.attempts, c.started_at, c.result, c.ended_at) == (
            "succeeded", 1, float(i), bytes([(i + 1) % 256]), float(i + 1))
    assert (calls["c199"].status, calls["c199"].attempts, calls["c199"].executions) == ("running", 2, 2)


@pytest.mark.postgres
def test_call_durations_are_kept_per_application_and_function(opener: Callable[[], Store]) -> None:
    """What a run's end records is what the next run of the application reads, on another
    connection: each function's latest duration and width, other functions' kept; a run whose
    lease was lost records nothing."""
    store = opener()
    store.create_run(a_run("run-1", status="running", version=1))
    store.create_run(a_run("run-2", status="running", version=1))
    store.commit()
    assert store.claim_run("run-1", "me", 30) == 1
    assert store.claim_run("run-2", "me", 30) == 1
    assert store.call_durations("main") == {}
    store.record_call_durations("run-1", "main", {"slow": 2.5, "quick": 0.004}, {"slow": 10, "quick": 3})
    store.record_call_durations("run-1", "other", {"slow": 9.0})
    store.commit()
    assert opener().call_durations("main") == {"slow": 2.5, "quick": 0.004}
    assert opener().call_widths("main") == {"slow": 10, "quick": 3}
    assert opener().call_widths("other") == {}  # none given: none started from it
    store.record_call_durations("run-2", "main", {"slow": 1.25}, {"slow": 4})
    store.commit()
    assert opener().call_durations("main") == {"slow": 1.25, "quick": 0.004}
    assert opener().call_widths("main") == {"slow": 4, "quick": 3}
    assert opener().call_durations("other") == {"slow": 9.0}
    store.fences["run-2"] = None  # its lease lost: its writes are dropped
    store.record_call_durations("run-2", "main", {"slow": 7.0}, {"slow": 50})
    store.commit()
    assert opener().call_durations("main")["slow"] == 1.25
    assert opener().call_widths("main")["slow"] == 4


def test_postgres_column_types_match_the_schema(postgres_url: str) -> None:
    from engine.store.postgres import COLUMN_TYPES

    store = open_store(postgres_url)
    try:
        for table, types in COLUMN_TYPES.items():
            rows = store.db.execute(  # type: ignore[attr-defined]
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                (table,)).fetchall()
            actual = {name: kind for name, kind in rows}
            assert {c: actual[c] for c in types} == types, table
    finally:
        store.close()


def test_a_call_dispatched_before_its_row_is_sent_is_inserted_as_running(opener: Callable[[], Store]) -> None:
    """`count_execution` folds into the call's INSERT while that is unsent (one statement per
    call fewer on a fan-out); the committed rows are what the separate UPDATE would give."""
    store, reader = opener(), opener()
    store.create_run(a_run("run-1"))
    store.insert_call(a_call("a"))
    store.count_execution("run-1", "a", 1, 5.0)  # dispatched in the INSERT's batch
    assert not [w for w in store._pending if w[1].startswith("UPDATE calls")]  # noqa: SLF001
    store.insert_call(a_call("b"))
    store.update_call("run-1", "b", args_digest="e")  # changed after its INSERT: order kept
    store.count_execution("run-1", "b", 1, 6.0)
    store.commit()
    store.insert_call(a_call("c"))
    store.commit()
    store.count_execution("run-1", "c", 1, 7.0)  # its INSERT already committed: an UPDATE
    store.count_execution("run-1", "c", 2, 8.0)
    store.commit()
    rows = {r.call_id: r for r in reader.load_calls("run-1")}
    assert [(rows[c].status, rows[c].attempts, rows[c].executions, rows[c].started_at) for c in "abc"] == [
        ("running", 1, 1, 5.0), ("running", 1, 1, 6.0), ("running", 2, 2, 8.0)]
    assert rows["b"].args_digest == "e"
