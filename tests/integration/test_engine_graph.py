"""Call graphs on real executor processes over real gRPC: fan-out/fan-in, chained stages,
map/reduce, async functions, shared futures, futures for control and Future.wait."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR

from engine import RequestError, run_local_application


def by_function(info: dict[str, Any]) -> Counter[str]:
    """Executions per function, from the store."""
    counts: Counter[str] = Counter()
    for call in info["call_list"]:
        counts[call["function"]] += call["executions"]
    return counts


def test_fan_out_fan_in_by_tail_call(apps, state_dir, side_effects, show) -> None:
    app = apps("app_graph")
    request = run_local_application(app.fan, 5, str(side_effects))
    assert request.status == "succeeded"
    assert request.output() == [0 + 1 + 4 + 9 + 16, 0, 1, 4, 9, 16]  # inputs in order
    assert [side_effects.count("square", str(i)) for i in range(5)] == [1] * 5
    info = show(request.id)
    assert info["status"] == "succeeded"
    assert by_function(info) == {"fan": 1, "square": 5, "total": 1}
    root = next(c for c in info["call_list"] if c["parent"] is None)
    assert root["function"] == "fan" and root["tail"] is not None
    total = next(c for c in info["call_list"] if c["function"] == "total")
    assert root["tail"] == total["id"]
    assert all(c["parent"] == root["id"] for c in info["call_list"] if c is not root)


def test_chained_parallel_stages(apps, state_dir, side_effects, show) -> None:
    app = apps("app_graph")
    request = run_local_application(app.stages, 4, str(side_effects))
    # stage 1: 0 1 4 9, stage 2: 1 2 5 10
    assert request.output() == [18, 1, 2, 5, 10]
    assert sorted(int(f[0]) for f in side_effects.tagged("increment")) == [0, 1, 4, 9]
    assert by_function(show(request.id)) == {"stages": 1, "square": 4, "increment": 4, "total": 1}
    # Each stage-2 call ran after the stage-1 call it depends on.
    squared_at = {int(f[0]): float(f[1]) for f in side_effects.tagged("square")}
    incremented_at = {int(f[0]): float(f[1]) for f in side_effects.tagged("increment")}
    for i in range(4):
        assert incremented_at[i * i] >= squared_at[i]


def test_stage_two_fans_out_over_stage_one_value(apps, state_dir, side_effects) -> None:
    app = apps("app_graph")
    request = run_local_application(app.stages_blocking, 3, str(side_effects))
    assert request.output() == [0 + 1 + 11 + 21, 1, 11, 21]
    assert side_effects.count("stage_one") == 1


def test_map_over_a_list(apps, state_dir, side_effects, show, monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    request = run_local_application(app.map_list, [3, 1, 2])
    assert request.output() == [6, 2, 4]  # in input order
    assert sorted(f[0] for f in side_effects.tagged("double")) == ["1", "2", "3"]
    info = show(request.id)
    assert by_function(info) == {"map_list": 1, "double": 3}
    kinds = Counter(c["kind"] for c in info["call_list"])
    assert kinds == {"call": 4, "map": 1}


def test_map_over_an_empty_list(apps, state_dir, side_effects, monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    assert run_local_application(app.map_list, []).output() == []
    assert side_effects.lines() == []


def test_map_over_a_future_of_a_list(apps, state_dir, side_effects, monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    assert run_local_application(app.map_of_future, 4).output() == [2, 4, 6, 8]
    assert side_effects.count("numbers") == 1
    assert len(side_effects.tagged("double")) == 4


def test_map_over_futures(apps, state_dir, side_effects, monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    assert run_local_application(app.map_of_futures, 3).output() == [0, 4, 8]
    assert len(side_effects.tagged("double")) == 6


def test_reduce_with_initial_is_a_left_fold(apps, state_dir, side_effects, monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    assert run_local_application(app.reduce_with_initial, [1, 2, 3], 10).output() == 16
    # One call per item, each taking the previous accumulator: ((10+1)+2)+3.
    steps = [(int(f[0]), int(f[1])) for f in side_effects.tagged("add")]
    assert steps == [(10, 1), (11, 2), (13, 3)]


def test_reduce_without_initial_starts_from_the_first_item(apps, state_dir, side_effects,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    assert run_local_application(app.reduce_no_initial, [5, 6, 7]).output() == 18
    assert [(int(f[0]), int(f[1])) for f in side_effects.tagged("add")] == [(5, 6), (11, 7)]


def test_reduce_of_one_item_returns_it_without_a_call(apps, state_dir, side_effects, show,
                                                      monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    request = run_local_application(app.reduce_no_initial, [42])
    assert request.output() == 42
    assert side_effects.tagged("add") == []
    assert "add" not in {c["function"] for c in show(request.id)["call_list"] if c["kind"] == "call"}
    # An empty list with an initial value is the initial value, also without a call.
    assert run_local_application(app.reduce_with_initial, [], 9).output() == 9
    assert side_effects.tagged("add") == []


def test_reduce_of_nothing_without_initial_fails(apps, state_dir, side_effects,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    request = run_local_application(app.reduce_no_initial, [])
    assert request.status == "failed"
    with pytest.raises(RequestError, match="empty"):
        request.output()
    assert side_effects.tagged("add") == []


def test_map_then_reduce_over_futures(apps, state_dir, side_effects, monkeypatch) -> None:
    monkeypatch.setenv("ENGINE_TEST_LOG", str(side_effects))
    app = apps("app_mapreduce")
    assert run_local_application(app.map_then_reduce, 4).output() == 2 + 4 + 6 + 8
    assert len(side_effects.tagged("double")) == 4 and len(side_effects.tagged("add")) == 4


def test_async_functions_await_and_gather(apps, state_dir, side_effects) -> None:
    app = apps("app_async")
    request = run_local_application(app.gather_app, 1, 10, str(side_effects))
    assert request.output() == [2, 4, 20, 6]
    start = {int(f[0]): float(f[1]) for f in side_effects.tagged("start")}
    end = {int(f[0]): float(f[1]) for f in side_effects.tagged("end")}
    assert sorted(start) == [1, 2, 10]
    # `await` finishes the first call before the gathered ones begin...
    assert end[1] <= min(start[2], start[10])
    # ...and gather runs its two calls at the same time (each sleeps 0.5 s).
    assert max(start[2], start[10]) < min(end[2], end[10])


def test_a_future_consumed_by_several_callers_runs_once(apps, state_dir, side_effects,
                                                        show) -> None:
    app = apps("app_graph")
    request = run_local_application(app.shared, str(side_effects))
    assert request.output() == [8, 9, 0, 7, 7]
    assert side_effects.count("expensive") == 1
    assert sorted(f[0] for f in side_effects.tagged("plus")) == ["1", "2"]
    assert by_function(show(request.id))["expensive"] == 1


def test_futures_started_with_run_work_while_the_parent_does(apps, state_dir,
                                                             side_effects) -> None:
    app = apps("app_graph")
    request = run_local_application(app.control, str(side_effects))
    assert request.output() == {"results": ["A", "B"]}
    # Both workers ran before the parent asked for any result.
    parent_result_at = float(side_effects.tagged("parent_result")[0][0])
    assert all(float(f[1]) < parent_result_at for f in side_effects.tagged("worker"))


def test_wait_first_completed_returns_while_the_slow_call_runs(apps, state_dir, side_effects,
                                                               show) -> None:
    app = apps("app_wait")
    request = run_local_application(app.first_completed, str(side_effects))
    out = request.output()
    assert out["done"] == ["fast"] and out["not_done"] == 1 and out["slow_done"] is False
    assert out["waited"] < 30
    assert side_effects.count("sleeper_end", "slow") == 0
    # The slow call nobody waited for was stopped when the run ended.
    slow = [c for c in show(request.id)["call_list"] if c["status"] == "cancelled"]
    assert [c["function"] for c in slow] == ["sleeper"]


def test_wait_first_failure(apps, state_dir, side_effects) -> None:
    app = apps("app_wait")
    out = run_local_application(app.first_failure, str(side_effects)).output()
    assert out == {
        "done": 2, "not_done": 1, "slow_done": False, "bad_exception": "FunctionError",
        "bad_function": "failer", "bad_cause": "ValueError", "ok_result": "ok",
    }


def test_wait_all_completed_does_not_raise(apps, state_dir, side_effects) -> None:
    app = apps("app_wait")
    out = run_local_application(app.all_completed, str(side_effects)).output()
    assert out == {"done": 3, "not_done": 0, "values": ["a", "b"],
                   "bad_exception": "FunctionError"}


def test_wait_and_result_with_timeout(apps, state_dir, side_effects) -> None:
    app = apps("app_wait")
    out = run_local_application(app.wait_timeout, str(side_effects)).output()
    assert out["done"] == ["fast"] and out["not_done"] == 1
    assert 1.4 <= out["waited"] < 10
    assert out["result_timeout"] == "TimeoutError"


def test_fanout_example_from_the_cli(cli, state_dir, examples_dir) -> None:
    code, out, err = cli("run", "app.py:orchestrator", "--input", '"What made 2008 possible?"',
                         "--json", cwd=examples_dir / "fanout")
    assert code == 0, err
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["result"].splitlines() == [
        "notes on 2008 (4 chars)", "notes on made (4 chars)", "notes on possible (8 chars)",
        "notes on what (4 chars)",
    ]


def test_a_wide_fan_in_runs_every_call_once_and_keeps_its_combiner_warm(cli, state_dir, tmp_path,
                                                                         show) -> None:
    """1,500 calls and a 2-second one, joined by a tail call, with idle executors stopped after
    0.5 s: the calls travel to executors in batches (RunRequests) and each runs once, and the
    combiner's executor, started when its call was created, stays up while the call waits for
    its inputs rather than being stopped and started again."""
    config = tmp_path / "engine.yaml"
    config.write_text("idle_timeout: 0.5\n")
    code, out, err = cli("run", "app_graph.py:wide", "--input", "1500", "--json", "--config", str(config),
                         cwd=APPS_DIR)
    assert code == 0, err
    result = json.loads(out)
    assert result["result"] == 2 * sum(range(1500))
    info = show(result["run_id"])
    assert by_function(info) == {"wide": 1, "double": 1500, "nap": 1, "add_up": 1}
    started = sorted(p.name.split("-")[0] for p in (state_dir / "executors").glob("*.log"))
    assert started.count("add_up") == 1, started


def test_tail_call_from_a_tail_call(apps, state_dir) -> None:
    app = apps("app_graph")
    assert run_local_application(app.tail_chain, 4).output() == 41


def test_tail_call_to_futures_already_started_or_done(apps, state_dir) -> None:
    app = apps("app_graph")
    assert run_local_application(app.tail_of_started, 1).output() == [5, 2, 3]


def test_recursion_does_not_deadlock_with_one_executor_slot(apps, state_dir, cli,
                                                            tmp_path) -> None:
    # A blocked parent does not count against max_executors: each level can start the next.
    config = tmp_path / "tight.yaml"
    config.write_text("max_executors: 1\n")
    app_file = Path(apps("app_graph").__file__)
    code, out, err = cli("run", f"{app_file}:recurse", "--input", "3", "--json",
                         "--config", str(config), timeout=60)
    assert code == 0, err
    assert json.loads(out)["result"] == 3


def test_max_containers_one_runs_calls_one_at_a_time(apps, state_dir, side_effects) -> None:
    app = apps("app_graph")
    assert run_local_application(app.serial_app, 3, str(side_effects)).output() == [3, 0, 1, 2]
    spans = sorted(
        (float(s[1]), float(e[1]))
        for s in side_effects.tagged("serial_start")
        for e in side_effects.tagged("serial_end") if s[0] == e[0]
    )
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end  # never two at once


def test_a_runs_end_records_how_long_its_functions_calls_took_for_the_next_run(apps, state_dir,
                                                                                side_effects) -> None:
    """What the next run's executor pools start from (`Pool.prior`, `Dispatcher.prestart`): each
    function's calls' duration and how many ran at once, recorded with the run's end in the
    store on disk, per application."""
    from engine.store import open_store, store_url

    app = apps("app_graph")
    for n in (3, 2):  # the second run reads the first's record and writes its own
        assert run_local_application(app.serial_app, n, str(side_effects)).output() == [sum(range(n)), *range(n)]
        store = open_store(store_url(state_dir))
        try:
            durations, widths = store.call_durations("serial_app"), store.call_widths("serial_app")
        finally:
            store.close()
        assert set(durations) == {"serial_app", "serial", "total"}
        assert 0.2 <= durations["serial"] < 5.0  # each call sleeps 0.2 s
        assert durations["total"] < durations["serial"]
        assert widths == {"serial_app": 1, "serial": 1, "total": 1}  # `serial`: max_containers=1
    assert side_effects.count("serial_start") == 5


def test_a_run_again_finds_its_fan_outs_executors_started_while_its_root_worked(apps, state_dir,
                                                                               side_effects) -> None:
    """A first run learns how many `broad` calls ran at once (`call_durations.width`); the next
    run starts that many `broad` executors as its root begins, so that they have imported the
    application before the root (working 1.5 s first) makes its fan-out; the first run's
    start with its fan-out. Real executor processes; when each imported the application is its
    own record."""
    from engine.store import open_store, store_url

    app = apps("app_graph")
    widths = []
    for _ in range(2):
        assert run_local_application(app.broad_app, 3, str(side_effects), 1.5).output() == [3, 0, 1, 2]
        store = open_store(store_url(state_dir))
        try:
            widths.append(store.call_widths("broad_app").get("broad", 0))
        finally:
            store.close()
    fanouts = [float(r[-1]) for r in side_effects.tagged("broad_fanout")]
    calls = side_effects.tagged("broad")  # i, pid, imported at, when
    assert len(fanouts) == 2 and len(calls) == 6
    first = {(r[1], float(r[2])) for r in calls[:3]}
    second = {(r[1], float(r[2])) for r in calls[3:]}
    assert all(imported > fanouts[0] for _, imported in first)  # nothing known yet
    assert 1 <= widths[0] <= 3
    early = {pid for pid, imported in second if imported < fanouts[1]}
    assert len(early) == widths[0]  # as many as ran at once last time, up before the fan-out


def test_run_local_application_inside_an_event_loop(apps, state_dir, side_effects) -> None:
    import asyncio

    app = apps("app_graph")

    async def main() -> Any:
        return run_local_application(app.fan, 2, str(side_effects)).output()

    assert asyncio.run(main()) == [1, 0, 1]


def test_async_map_reduce_and_wait_on_calls(apps, state_dir) -> None:
    app = apps("app_async")
    out = run_local_application(app.async_map_reduce, 4).output()
    assert out == {"values": [0, 2, 4, 6], "total": 12, "waited": [200, 400], "not_done": 0}


def test_waiting_on_async_calls_leaves_no_warning(apps, state_dir) -> None:
    from engine.store import open_store, store_url

    app = apps("app_async")
    request = run_local_application(app.async_map_reduce, 1)
    assert request.status == "succeeded"
    store = open_store(store_url(state_dir))
    try:
        logs = "".join(text for _, _, _, text in store.logs(request.id))
    finally:
        store.close()
    assert "never awaited" not in logs, logs


def test_one_executor_serves_concurrency_calls_at_once(apps, state_dir, side_effects) -> None:
    app = apps("app_graph")
    assert run_local_application(app.together_app, 3, str(side_effects)).output() == [3, 0, 1, 2]
    starts = side_effects.tagged("together_start")
    ends = side_effects.tagged("together_end")
    assert len({f[1] for f in starts}) == 1  # max_containers=1: one process
    assert max(float(f[2]) for f in starts) < min(float(f[2]) for f in ends)  # all at once
