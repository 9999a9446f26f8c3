"""A large tail call is added in slices (`Scheduler._add_tail`), committed slice by slice, and its
first calls run while the rest is added. The engine killed (kill -9) midway: resume runs the
caller again, re-creates the same calls, reuses every one that had finished and adds the rest;
the result is right and no finished call ran twice."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

from serverlib import wait_for_lease_to_run_out
from test_engine_failures import (
    call_argument,
    checkpointed_count,
    engine_in_background,
    kill9_when,
)

from engine.scheduler.scheduler import TAIL_SLICE

N = 40_000  # 40 slices to add: seconds, while the first calls already run


def committed(state_dir: Path) -> dict[str, Any]:
    """What the store holds (read-only): each function's rows by status, and every succeeded
    `work` call's argument."""
    conn = sqlite3.connect(f"file:{state_dir / 'engine.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = conn.execute("SELECT function, status, count(*) FROM calls GROUP BY function, status").fetchall()
    except sqlite3.OperationalError:  # the schema is not there yet
        rows = []
    finally:
        conn.close()
    counts: dict[str, Counter[str]] = {}
    for function, status, n in rows:
        counts.setdefault(function, Counter())[status] = n
    return counts


def test_kill_9_while_a_large_tail_call_is_added_then_resume(apps, state_dir, side_effects, cli,
                                                             wait_until, tmp_path) -> None:
    assert N > 10 * TAIL_SLICE
    app_file = Path(apps("app_big_tail").__file__)
    with engine_in_background(["run", f"{app_file}:big_tail", "--json",
                               "--input", json.dumps({"n": N, "log": str(side_effects)})],
                              tmp_path) as engine:
        # Kill once some `work` calls have finished and been checkpointed: the graph is being
        # added (the assertions below check that it was not complete).
        kill9_when(engine, lambda: checkpointed_count(state_dir) >= 1,
                   "a first work call to be checkpointed", tmp_path)

    at_kill = committed(state_dir)
    work_rows = sum(at_kill["work"].values())
    finished = at_kill["work"]["succeeded"]
    # Midway: some of the graph committed, not all of it; the caller has not handed off.
    assert 0 < finished <= work_rows < N, at_kill
    assert "total" not in at_kill, at_kill
    assert at_kill["big_tail"] == Counter(running=1), at_kill
    ran_before = Counter(int(f[0]) for f in side_effects.tagged("work"))
    assert len(side_effects.tagged("root")) == 1

    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        (run,) = store.list_runs()
        done_at_kill = {c.call_id: call_argument(c.spec) for c in store.load_calls(run.run_id)
                        if c.function == "work" and c.status == "succeeded"}
    finally:
        store.close()
    assert run.status == "running" and len(done_at_kill) == finished

    wait_for_lease_to_run_out(state_dir, run.run_id)
    code, out, err_text = cli("resume", run.run_id, "--json", timeout=600)
    assert code == 0, err_text
    assert json.loads(out) == {"run_id": run.run_id, "status": "succeeded",
                               "result": sum(2 * i for i in range(N)), "error": None}

    # The caller ran again (its tail call had not committed), and handed off this time.
    assert len(side_effects.tagged("root")) == 2
    after = committed(state_dir)
    assert after["work"] == Counter(succeeded=N) and after["total"] == Counter(succeeded=1), after
    assert after["big_tail"] == Counter(succeeded=1), after  # with its tail call's value

    ran = Counter(int(f[0]) for f in side_effects.tagged("work"))
    assert set(ran) == set(range(N))
    # A call that had finished before the kill never ran again; one that was running at the
    # kill (never checkpointed) ran again.
    for i in done_at_kill.values():
        assert ran[i] == 1, f"work({i}) was checkpointed before the kill but ran {ran[i]} times"
    ran_again = {i for i in ran if ran[i] > 1}
    assert ran_again <= set(ran_before), "only calls begun before the kill may run twice"
    assert all(n <= 2 for n in ran.values())

    store = open_store(store_url(state_dir))
    try:
        calls = {c.call_id: c for c in store.load_calls(run.run_id)}
    finally:
        store.close()
    assert all(calls[c].executions == 1 for c in done_at_kill)
