"""Large values on the scheduler's machine move through exchange directories
(engine/scheduler/exchange.py), on real executors (processes and containers), real gRPC and the
real store: the value arrives intact and is checkpointed as a blob named by its digest, nothing is
streamed; a container sees only the blobs its calls were given and cannot plant one; and an
engine killed -9 while a result sits unadopted in `out/` leaves no blob that is not what its name
says, and its resume gets the right value."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pagecachelib
import pytest
from serverlib import wait_for_lease_to_run_out
from test_engine_failures import (
    checkpointed_count,
    engine_in_background,
    kill9_when,
)

from engine import wire
from engine.app import app_spec_from_function
from engine.runner import make_backend, read_outcome
from engine.scheduler import Scheduler
from engine.store import open_store, store_url
from engine.wire import content
from engine.wire.v1 import engine_pb2 as pb

MB = 1024 * 1024
SIZE = 24 * MB
BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


def blobs_on_disk(state_dir: Path) -> dict[str, Path]:
    """Every blob of the store: `<blob_dir>/<2 hex>/<digest>` (not temporary or exchange files)."""
    return {p.name: p for p in (state_dir / "blobs").glob("[0-9a-f][0-9a-f]/*")}


def assert_every_blob_is_what_its_name_says(state_dir: Path) -> None:
    for name, path in blobs_on_disk(state_dir).items():
        assert content.matches(path.read_bytes(), name), f"blob {name[:12]} is corrupt"


async def _drive(backend: str, state_dir: Path, fn: Any, url: str | None = None, share: bool = True,
                 **kwargs: Any) -> tuple[Any, Any, dict[str, int], list[str]]:
    """Run `fn(**kwargs)` on a scheduler of our own (store `url`, SQLite in `state_dir` by
    default; `share=False`: as if the executors were on another machine); returns the run, its
    value, the
    Blobs service's counts and what was left in the exchange directories after it closed."""
    store = open_store(url or store_url(state_dir))
    app = app_spec_from_function(fn)
    executors = make_backend(backend, state_dir, app)
    executors.shares_filesystem = executors.shares_filesystem and share
    scheduler = Scheduler(store, executors, max_executors=4)
    await scheduler.start()
    try:
        args = pb.Arguments()
        for key, arg in kwargs.items():
            args.kwargs[key].value.data = wire.dumps(arg)
        run = scheduler.submit_run(app, wire.dumps(kwargs), args)
        await asyncio.wait_for(run.done.wait(), 180)
        value = wire.loads(store.run_result(store.get_run(run.run_id)) or wire.dumps(None))
    finally:
        await scheduler.close()
        store.close()
    stats = scheduler.blobs.stats
    left = [str(p) for p in (state_dir / "blobs" / ".exchange").glob("*")]
    return run, value, {"puts": stats.puts, "adopted": stats.adopted, "gets": stats.gets}, left


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_large_value_moves_through_the_exchange_directory_and_is_checkpointed(
        apps, state_dir, backend, request) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_client")
    app = apps("app_exchange")
    run, _, stats, left = asyncio.run(_drive(backend, state_dir, app.pass_on, size=SIZE))

    outcome = read_outcome(state_dir, run.run_id)
    assert outcome.status == "succeeded", outcome.error()
    seen = outcome.result
    expected = app.blob(SIZE, 1)
    assert seen["size"] == SIZE and seen["seed_ok"] and seen["head"] == expected[:16]
    # make's result went into the store by adoption, and measure mapped it: nothing streamed.
    assert stats == {"puts": 1, "adopted": 1, "gets": 0}, stats
    if backend == "docker":
        assert seen["exchange"] == "/exchange"
    else:
        assert seen["exchange"].startswith(str(state_dir / "blobs" / ".exchange"))

    # Checkpointed exactly as a streamed value: a blob named by the content address of its pickle.
    make = next(c for c in run.calls.values() if c.function == "make")
    digest = make.result_digest
    assert digest == content.address(wire.dumps(expected))
    # measure's directory held the one value it was given: by its digest, or — handed on
    # before make was checkpointed (a deferred adoption) — by its token.
    assert len(seen["in"]) == 1 and (seen["in"][0] == digest or seen["in"][0].startswith(wire.DEFERRED_PREFIX))
    blob = blobs_on_disk(state_dir)[digest]
    if pagecachelib.drops_pages(state_dir):
        # Stored and read by the one call given it: its pages went back for the next value.
        assert pagecachelib.cached(blob) == 0
    assert wire.loads(blob.read_bytes()) == expected
    assert oct(blob.stat().st_mode & 0o777) == "0o444"
    assert_every_blob_is_what_its_name_says(state_dir)
    assert left == [], f"exchange directories left behind: {left}"


def test_a_store_written_with_sha256_addresses_still_hands_its_values_on(
        apps, state_dir, side_effects, cli) -> None:
    """Stores from before BLAKE3 name their blobs by SHA-256: a rerun of such a run reuses the
    checkpointed value under its old name, and the call it reruns gets the value intact."""
    app = apps("app_exchange")
    code, out, err = cli("run", f"{app.__file__}:pass_on", "--json",
                         "--input", json.dumps({"size": SIZE, "log": str(side_effects)}))
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    # The store as an earlier engine would have left it: make's value under its SHA-256.
    new = {n: p for n, p in blobs_on_disk(state_dir).items() if p.stat().st_size >= SIZE}
    assert len(new) == 1 and next(iter(new)).startswith(content.PREFIX)
    [(address, path)] = new.items()
    old = hashlib.sha256(path.read_bytes()).hexdigest()
    (state_dir / "blobs" / old[:2]).mkdir(exist_ok=True)
    path.rename(state_dir / "blobs" / old[:2] / old)
    with sqlite3.connect(state_dir / "engine.db") as db:
        assert db.execute("UPDATE calls SET result_digest = ? WHERE result_digest = ?",
                          (old, address)).rowcount == 1

    code, out, err = cli("rerun", run_id, "--from", "measure", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "succeeded", out
    seen = read_outcome(state_dir, json.loads(out)["run_id"]).result
    expected = app.blob(SIZE, 1)
    assert seen["size"] == SIZE and seen["seed_ok"] and seen["head"] == expected[:16]
    assert side_effects.count("make", "1") == 1 and side_effects.count("measure") == 2  # make reused
    assert seen["in"] == [old]  # given to measure under its old name
    assert wire.loads((state_dir / "blobs" / old[:2] / old).read_bytes()) == expected
    assert_every_blob_is_what_its_name_says(state_dir)


@pytest.mark.parametrize("where", ["another machine", "postgresql"])
def test_values_stream_where_no_directory_is_shared(apps, state_dir, where, request) -> None:
    """Executors on another machine (swarm), or blobs that are rows (PostgreSQL): no exchange
    directory, the value streams through Blobs.Put and Blobs.Get as before, intact."""
    app = apps("app_exchange")
    url = request.getfixturevalue("postgres_url") if where == "postgresql" else None
    run, value, stats, left = asyncio.run(_drive("process", state_dir, app.pass_on, url=url,
                                          share=where != "another machine", size=SIZE))
    assert run.status == "succeeded"
    assert value["size"] == SIZE and value["seed_ok"] and value["exchange"] == ""
    assert stats == {"puts": 1, "adopted": 0, "gets": 1}, stats
    assert left == [] and not (state_dir / "blobs" / ".exchange").exists()


@pytest.mark.docker
def test_a_container_reads_only_what_it_was_given_and_cannot_plant_a_blob(
        apps, state_dir, docker_client) -> None:
    app = apps("app_exchange")
    victim, _, _, _ = asyncio.run(_drive("docker", state_dir, app.victim, size=4 * MB))
    secret = read_outcome(state_dir, victim.run_id)
    assert secret.status == "succeeded", secret.error()
    secret_digest = content.address(wire.dumps(app.blob(4 * MB, 7)))
    assert secret_digest in blobs_on_disk(state_dir)

    own = app.blob(3 * MB, 9)
    run, _, stats, left = asyncio.run(_drive("docker", state_dir, app.intruder, secret_digest=secret_digest,
                                          blob_dir=str(state_dir / "blobs"), own=own))
    outcome = read_outcome(state_dir, run.run_id)
    assert outcome.status == "succeeded", outcome.error()
    out = outcome.result
    assert out["exchange"] == "/exchange" and out["own"] == len(own)
    assert out["in"] == [content.address(wire.dumps(own))]  # its argument, and nothing else
    for way in ("by_name", "by_host_path", "by_parent"):
        assert out[way] == "ENOENT", (way, out[way])
    assert out["write_in"] == "EROFS"
    assert out["adopt_symlink"].startswith("FAILED_PRECONDITION: pointer is not a regular file")
    assert out["adopt_escape"].startswith("FAILED_PRECONDITION: not a plain file name")
    assert out["adopt_open"].startswith("FAILED_PRECONDITION: open is still open")
    assert out["adopt_closed"] == "OK"
    # The secret is untouched and nothing was planted under another value's name.
    assert_every_blob_is_what_its_name_says(state_dir)
    assert wire.loads(blobs_on_disk(state_dir)[secret_digest].read_bytes()) == app.blob(4 * MB, 7)
    assert left == []


def _run_id(state_dir: Path) -> str | None:
    db = state_dir / "engine.db"
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT run_id FROM runs").fetchone()
        return row[0] if row else None
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def _staged(state_dir: Path) -> list[Path]:
    return [p for p in (state_dir / "blobs" / ".exchange").glob("*/out/*") if p.is_file()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_before_a_staged_result_is_adopted_then_resume_gets_the_right_value(
        apps, state_dir, side_effects, cli, wait_until, tmp_path, backend, request) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_client")
    app = apps("app_exchange")
    app_file = Path(app.__file__)
    # A container cannot write the test's log: there the store's execution counts tell.
    log = str(side_effects) if backend == "process" else None
    marker = str(tmp_path / "stalled") if backend == "process" else "/tmp/stalled"
    args = {"size": SIZE, "log": log, "marker": marker, "stall": 6.0}
    with engine_in_background(["run", f"{app_file}:pass_on", "--json", "--backend", backend,
                               "--input", json.dumps(args)], tmp_path) as engine:
        # make's result is in its exchange directory, being written, not adopted: kill now.
        kill9_when(engine, lambda: _staged(state_dir), "make's result to be staged", tmp_path)

    expected = app.blob(SIZE, 1)
    assert checkpointed_count(state_dir, "make") == 0  # never adopted, so never checkpointed
    assert not [p for p in blobs_on_disk(state_dir).values() if p.stat().st_size >= SIZE]
    assert_every_blob_is_what_its_name_says(state_dir)

    run_id = _run_id(state_dir)
    assert run_id is not None
    wait_for_lease_to_run_out(state_dir, run_id)
    code, out_text, err_text = cli("resume", run_id, "--json", "--backend", backend, timeout=300)
    assert code == 0, err_text
    result = json.loads(out_text)
    assert result["status"] == "succeeded", result
    outcome = read_outcome(state_dir, run_id)
    assert outcome.result["size"] == SIZE and outcome.result["head"] == expected[:16]

    # make ran again (its first result was lost with the engine), measure once; the value is
    # checkpointed now, intact, and the killed engine's exchange directory is gone.
    assert checkpointed_count(state_dir, "make") == 1
    assert [p for p in blobs_on_disk(state_dir).values() if p.stat().st_size >= SIZE]
    assert_every_blob_is_what_its_name_says(state_dir)
    if log:
        assert side_effects.count("make", "1") == 2 and side_effects.count("measure") == 1
    code, out_text, err_text = cli("show", run_id, "--json")
    executions = {c["function"]: c["executions"] for c in json.loads(out_text)["call_list"]}
    assert executions["measure"] == 1 and executions["make"] == 2, executions
    assert not [p for p in (state_dir / "blobs" / ".exchange").glob(f"{engine.pid}-*")]
