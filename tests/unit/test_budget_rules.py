"""The budget logic, without executors: parsing `--budget`, merging limits, depths, admission
of new calls, what `engine show` prints, and BudgetExceeded across the wire."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from engine import BudgetExceeded, SDKUsageError, application, function, wire
from engine.scheduler.budgets import (
    Budget,
    RunBudget,
    depths,
    dump_budget,
    exceeded,
    load_budget,
    parse_budget,
    use_json,
    use_text,
)
from engine.wire.v1 import engine_pb2 as pb


def test_parse_budget_names_limits_and_lifts_with_none() -> None:
    assert parse_budget("calls=1000,depth=3,duration=600") == {
        "max_calls": 1000, "max_depth": 3, "max_duration": 600.0}
    assert parse_budget(" calls = 5 ") == {"max_calls": 5}
    assert parse_budget("max_depth=0,duration=none") == {"max_depth": 0, "max_duration": None}


@pytest.mark.parametrize("text", ["", "calls", "calls=", "tokens=5", "calls=x", "calls=0", "depth=-1",
                                  "duration=0", "calls=1.5", "calls=1,calls=2", "calls=1;depth=2"])
def test_a_bad_budget_is_one_line(text: str) -> None:
    with pytest.raises(SDKUsageError) as info:
        parse_budget(text)
    assert "\n" not in str(info.value) and "bad budget" in str(info.value)


def test_updated_replaces_only_the_limits_given_and_round_trips() -> None:
    budget = Budget(max_calls=10, max_depth=2).updated({"max_calls": 50, "max_duration": None})
    assert budget == Budget(max_calls=50, max_depth=2)
    assert budget.text() == "calls=50,depth=2"
    assert load_budget(dump_budget(budget, 12.5)) == (budget, 12.5)
    assert load_budget(None) == (None, 0.0)
    with pytest.raises(SDKUsageError, match="max_calls"):
        Budget(max_calls=0)


def test_map_items_take_the_depth_of_their_map() -> None:
    # root → a (call) → m (map) → two items; a → t (call) → u (call)
    tree = depths([("root", None, False), ("a", "root", False), ("m", "a", True), ("i0", "m", False),
                   ("i1", "m", False), ("t", "a", False), ("u", "t", False)])
    assert tree == {"root": 0, "a": 1, "m": 2, "i0": 2, "i1": 2, "t": 2, "u": 3}


def fake_run(calls: dict[str, Any]) -> Any:
    return SimpleNamespace(run_id="r1", calls=calls, root_id="root")


def call(call_id: str, kind: int = pb.NODE_KIND_CALL, function: str = "agent") -> Any:
    return SimpleNamespace(id=call_id, kind=kind, function=function, parent_id=None)


def spec(call_id: str, function: str = "agent") -> pb.FutureSpec:
    return pb.FutureSpec(id=call_id, kind=pb.NODE_KIND_CALL, function=function)


def test_admit_refuses_the_call_past_max_calls_naming_its_creator() -> None:
    budget = RunBudget(Budget(max_calls=2))
    calls: dict[str, Any] = {}
    run = fake_run(calls)
    assert budget.admit(run, spec("root", "main"), None) is None
    calls["root"] = call("root", function="main")
    assert budget.admit(run, spec("c1"), "root") is None
    calls["c1"] = call("c1")
    failure = budget.admit(run, spec("c2"), "c1")
    assert failure is not None and failure.kind == pb.FAILURE_KIND_BUDGET_EXCEEDED
    assert (failure.function, failure.call_id) == ("agent", "c1")
    assert "max_calls=2" in failure.message and "c2" in failure.message
    exc = wire.exception_from_failure(failure, "r1")
    assert isinstance(exc, BudgetExceeded)
    assert (exc.limit, exc.value, exc.call_id, exc.run_id) == ("max_calls", 2, "c1", "r1")


def test_admit_refuses_past_max_depth_and_maps_do_not_add_a_level() -> None:
    budget = RunBudget(Budget(max_depth=1))
    calls: dict[str, Any] = {"root": call("root", function="main")}
    run = fake_run(calls)
    budget.depths["root"] = 0
    assert budget.admit(run, spec("m"), "root") is None  # depth 1
    calls["m"] = call("m", kind=pb.NODE_KIND_MAP)
    assert budget.admit(run, spec("item"), "m") is None  # a map's item: depth 1 too
    calls["item"] = call("item")
    failure = budget.admit(run, spec("deep"), "item")  # depth 2
    assert failure is not None and "max_depth=1" in failure.message and "depth 2" in failure.message
    assert "deep" not in budget.depths


def test_budget_exceeded_pickles_with_its_limit() -> None:
    exc = BudgetExceeded("over", limit="max_depth", value=3, run_id="r", function="f", call_id="c")
    back = pickle.loads(pickle.dumps(exc))
    assert (back.limit, back.value, back.run_id, back.call_id, str(back)) == ("max_depth", 3, "r", "c", "over")
    failure = exceeded("max_duration", 1.5, "slow", "main", "root")
    assert wire.failure_kind_name(failure.kind) == "budget_exceeded"
    assert wire.describe(failure) == "BudgetExceeded: slow"


def test_use_text_is_engine_shows_line() -> None:
    info = use_json(Budget(1000, 3, 600), 812, 3, 41.4)
    assert use_text(info) == "calls 812/1000, depth 3/3, 41 s/600 s"
    assert use_text(use_json(Budget(max_calls=10), 4, 2, 0.2)) == "calls 4/10, depth 2, 0 s"


@application(max_calls=100, max_depth=2, max_duration=30)
@function()
def budgeted_app(x: int) -> int:
    return x


def test_application_decorator_takes_a_default_budget() -> None:
    config = budgeted_app.application
    assert config is not None and (config.max_calls, config.max_depth, config.max_duration) == (100, 2, 30)
    with pytest.raises(SDKUsageError, match="max_depth"):
        application(max_depth=-1)
    with pytest.raises(SDKUsageError, match="max_duration"):
        application(max_duration=0)
