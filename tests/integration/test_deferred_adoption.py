"""Deferred adoption (engine/scheduler/exchange.py, `Deferred`): `make`'s large result is handed
to `measure` as soon as its file is out of `make`'s executor's reach, while the scheduler still
hashes and fsyncs it; `measure`'s outcome is held until `make` is checkpointed. Here the engine
is killed -9 in that window — the hash held back by the test's hook, `measure` already run on
the handed-on value — and the store must hold neither call as finished and no token; resume runs
both again and gets the right value. Real executors (processes and containers), real gRPC, the
real SQLite store."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from serverlib import wait_for_lease_to_run_out
from test_engine_failures import (
    checkpointed_count,
    engine_in_background,
    kill9_engine,
    wait_until_engine,
)
from test_value_exchange import SIZE, _run_id, assert_every_blob_is_what_its_name_says, blobs_on_disk

from engine import wire
from engine.app import app_spec_from_function
from engine.runner import make_backend, read_outcome
from engine.scheduler import Scheduler
from engine.scheduler.exchange import TEST_HOLD_ENV
from engine.scheduler.state import RUNNING
from engine.store import open_store, store_url
from engine.wire import content
from engine.wire.v1 import engine_pb2 as pb

BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


async def _until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def _handed_on(state_dir: Path) -> list[Path]:
    """Values linked into an executor's `in/` by a token: handed on before they were stored."""
    return list((state_dir / "blobs" / ".exchange").glob(f"*/in/{wire.DEFERRED_PREFIX}*"))


def _store_bytes(state_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in state_dir.glob("engine.db*") if p.is_file())


def _token_references(state_dir: Path) -> int:
    """Calls and runs whose value the store names by a token instead of a digest."""
    conn = sqlite3.connect(f"file:{state_dir / 'engine.db'}?mode=ro", uri=True, timeout=5)
    try:
        return sum(conn.execute(f"SELECT count(*) FROM {table} WHERE result_digest LIKE ?",
                                (wire.DEFERRED_PREFIX + "%",)).fetchone()[0] for table in ("calls", "runs"))
    finally:
        conn.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_after_the_hand_off_before_makes_checkpoint_runs_both_again(
        apps, state_dir, side_effects, cli, wait_until, tmp_path, backend, request) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_client")
    app = apps("app_exchange")
    # A container cannot write the test's log: there the store's execution counts tell.
    log = str(side_effects) if backend == "process" else None
    hold = tmp_path / "hold-adoption"
    hold.touch()
    with engine_in_background(["run", f"{Path(app.__file__)}:pass_on", "--json", "--backend", backend,
                               "--input", json.dumps({"size": SIZE, "log": log})],
                              tmp_path, env=dict(os.environ, **{TEST_HOLD_ENV: str(hold)})) as engine:
        # measure was given make's value by its token: make's file is adopted, not yet hashed.
        wait_until_engine(engine, lambda: _handed_on(state_dir),
                          "make's value to be handed to measure", tmp_path)
        if log:
            wait_until(lambda: side_effects.count("measure") == 1, timeout=60, what="measure to run")
        # measure returns at once; its outcome reaches the engine and waits there. (Were it
        # acted on, measure and the run would be checkpointed within milliseconds.)
        time.sleep(1.0)
        assert engine.poll() is None, (tmp_path / "run.err").read_text()
        assert _handed_on(state_dir), "measure's attempt ended before make was checkpointed"
        kill9_engine(engine)

    # Nothing after the hand-off reached the store: neither call finished, no token anywhere.
    assert checkpointed_count(state_dir, "make") == 0
    assert checkpointed_count(state_dir, "measure") == 0
    assert wire.DEFERRED_PREFIX.encode() not in _store_bytes(state_dir)
    assert_every_blob_is_what_its_name_says(state_dir)
    run_id = _run_id(state_dir)
    assert run_id is not None

    hold.unlink()
    wait_for_lease_to_run_out(state_dir, run_id)
    code, out_text, err_text = cli("resume", run_id, "--json", "--backend", backend, timeout=300)
    assert code == 0, err_text
    assert json.loads(out_text)["status"] == "succeeded", out_text
    expected = app.blob(SIZE, 1)
    outcome = read_outcome(state_dir, run_id)
    assert outcome.result["size"] == SIZE and outcome.result["seed_ok"]
    assert outcome.result["head"] == expected[:16]

    # Both ran again on resume, and each is checkpointed once, make's value under its digest.
    assert checkpointed_count(state_dir, "make") == 1 and checkpointed_count(state_dir, "measure") == 1
    assert content.address(wire.dumps(expected)) in blobs_on_disk(state_dir)
    assert_every_blob_is_what_its_name_says(state_dir)
    # (measure's own value lists its in/, where the token may be: only references count now.)
    assert _token_references(state_dir) == 0
    if log:
        assert side_effects.count("make", "1") == 2 and side_effects.count("measure") == 2
    code, out_text, err_text = cli("show", run_id, "--json")
    executions = {c["function"]: c["executions"] for c in json.loads(out_text)["call_list"]}
    assert executions["make"] == 2 and executions["measure"] == 2, executions


def _run_with_measure_held(app: Any, state_dir: Path, side_effects: Any, hold: Path,
                           observe: Any = lambda run: None) -> tuple[Any, Any]:
    """`pass_on` in one process, the hash of `make`'s value held back while `hold` exists: once
    `measure`'s response has arrived and is held, `observe(run)` (what the test sees in that
    window), then the hash is let go and the run goes to its end. Returns (run, observed)."""

    async def scenario() -> tuple[Any, Any]:
        store = open_store(store_url(state_dir))
        spec = app_spec_from_function(app.pass_on)
        scheduler = Scheduler(store, make_backend("process", state_dir, spec), max_executors=4)
        await scheduler.start()
        try:
            args = pb.Arguments()
            args.kwargs["size"].value.data = wire.dumps(SIZE)
            args.kwargs["log"].value.data = wire.dumps(str(side_effects))
            run = scheduler.submit_run(spec, wire.dumps({"size": SIZE}), args)

            def measure_answered_and_held() -> bool:
                ms = {c.function: c for c in run.calls.values()}.get("measure")
                # Its executor answered (the response is no longer awaited) but the attempt
                # still holds the call: the outcome waits for make's checkpoint.
                return (ms is not None and ms.status == RUNNING and ms.executor is not None
                        and ms.id not in ms.executor.pending)

            await _until(measure_answered_and_held, 120, "measure's outcome to arrive")
            observed = observe(run)
            hold.unlink()
            await asyncio.wait_for(run.done.wait(), 120)
            return run, observed
        finally:
            hold.unlink(missing_ok=True)  # (a held hash would keep the scheduler's thread)
            await scheduler.close()
            store.close()

    return asyncio.run(scenario())


def test_measures_outcome_is_held_until_makes_checkpoint_commits(apps, state_dir, side_effects, tmp_path,
                                                                  monkeypatch) -> None:
    """In one process, with the hash held back: `measure` runs on the handed-on value and its
    response arrives, yet nothing of it is acted on — neither call is checkpointed — until the
    hash is let go; then `make` is checkpointed first, and the run succeeds with the value."""
    app = apps("app_exchange")
    hold = tmp_path / "hold-adoption"
    hold.touch()
    monkeypatch.setenv(TEST_HOLD_ENV, str(hold))

    def held_state(run: Any) -> dict[str, Any]:
        calls = {c.function: c for c in run.calls.values()}
        return {"make": calls["make"].status, "measure": calls["measure"].status,
                "make_stored": checkpointed_count(state_dir, "make"),
                "measure_stored": checkpointed_count(state_dir, "measure"),
                "measured": side_effects.count("measure"), "done": run.done.is_set()}

    run, held = _run_with_measure_held(app, state_dir, side_effects, hold, held_state)
    assert held == {"make": RUNNING, "measure": RUNNING, "make_stored": 0, "measure_stored": 0,
                    "measured": 1, "done": False}, held
    outcome = read_outcome(state_dir, run.run_id)
    assert outcome.status == "succeeded", outcome.error()
    expected = app.blob(SIZE, 1)
    assert outcome.result["size"] == SIZE and outcome.result["head"] == expected[:16]
    # measure was given the value by its token, before make had a digest.
    assert len(outcome.result["in"]) == 1 and outcome.result["in"][0].startswith(wire.DEFERRED_PREFIX)
    calls = {c.function: c for c in run.calls.values()}
    assert calls["make"].result_digest == content.address(wire.dumps(expected))
    assert calls["make"].ended_at <= calls["measure"].ended_at  # checkpointed in that order
    assert side_effects.count("make", "1") == 1 and side_effects.count("measure") == 1
    assert _token_references(state_dir) == 0
    assert_every_blob_is_what_its_name_says(state_dir)


def test_a_value_that_cannot_be_stored_fails_both_calls_and_leaves_nothing(apps, state_dir, side_effects,
                                                                           tmp_path, monkeypatch) -> None:
    """`measure` has run on the handed-on value when storing `make`'s value fails for real (the
    directory its digest names is taken by a file): `make` fails saying so, `measure` fails as its
    dependant — its held outcome is never acted on — and the store holds no token, no result of
    either call and no trace of the value."""
    app = apps("app_exchange")
    hold = tmp_path / "hold-adoption"
    hold.touch()
    monkeypatch.setenv(TEST_HOLD_ENV, str(hold))
    digest = content.address(wire.dumps(app.blob(SIZE, 1)))
    blocker = state_dir / "blobs" / content.shard(digest)  # where `settle` names the value: now a file
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a directory")

    run, _ = _run_with_measure_held(app, state_dir, side_effects, hold)
    outcome = read_outcome(state_dir, run.run_id)
    assert outcome.status == "failed"
    assert "the value make returned could not be stored" in str(outcome.error()), outcome.error()
    assert side_effects.count("make", "1") == 1 and side_effects.count("measure") == 1
    assert checkpointed_count(state_dir, "make") == 0 and checkpointed_count(state_dir, "measure") == 0
    store = open_store(store_url(state_dir))
    try:
        kinds = {c.function: (c.status, c.error_kind) for c in store.load_calls(run.run_id)}
    finally:
        store.close()
    assert kinds["make"][0] == "failed" and kinds["measure"] == ("failed", "dependency_failed"), kinds
    assert _token_references(state_dir) == 0
    assert wire.DEFERRED_PREFIX.encode() not in _store_bytes(state_dir)
    # Neither the claimed file nor a link to it is left anywhere under the store's blobs.
    assert not [p for p in (state_dir / "blobs").rglob("*") if p.is_file() and p.stat().st_size >= SIZE]
    assert blocker.read_bytes() == b"not a directory"
