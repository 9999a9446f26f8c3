"""What a rerun executes, reuses and how it renames calls (`engine.scheduler.rerun`), on call
rows built here: no executor, no store."""

from __future__ import annotations

from engine import wire
from engine.scheduler.rerun import copies, new_ids, plan
from engine.sdk.runtime import child_id
from engine.store import CallRow
from engine.wire.v1 import engine_pb2 as pb

OLD_ROOT, NEW_ROOT = "c-old-root", "c-new-root"


def row(call_id: str, parent: str | None, function: str, *refs: str, status: str = "succeeded",
        tail: str | None = None, kind: str = "call") -> CallRow:
    spec = pb.FutureSpec(id=call_id, kind=wire.KIND_VALUES[kind], function=function,
                         arguments=pb.Arguments(args=[pb.Arg(ref=r) for r in refs]))
    return CallRow(call_id=call_id, run_id="old", parent_id=parent, function=function, kind=kind,
                   spec=spec.SerializeToString(), args_digest=wire.args_digest(spec.arguments),
                   status=status, tail_id=tail, result=b"x" if status == "succeeded" else None)


def tree() -> list[CallRow]:
    """root: a = fetch(); b = fetch(); (a future made and never started: index 2); c = judge(a, b);
    tail-calls report(c). fetch creates one child, parse."""
    a, b = child_id(OLD_ROOT, 0, "call", "fetch"), child_id(OLD_ROOT, 1, "call", "fetch")
    c, r = child_id(OLD_ROOT, 3, "call", "judge"), child_id(OLD_ROOT, 4, "call", "report")
    pa, pb_ = child_id(a, 0, "call", "parse"), child_id(b, 0, "call", "parse")
    return [row(OLD_ROOT, None, "root", status="succeeded", tail=r),
            row(a, OLD_ROOT, "fetch"), row(pa, a, "parse"), row(b, OLD_ROOT, "fetch"), row(pb_, b, "parse"),
            row(c, OLD_ROOT, "judge", a, b), row(r, OLD_ROOT, "report", c)]


def test_ids_are_rederived_under_the_new_root_with_gaps_in_the_creation_order() -> None:
    calls = tree()
    ids = new_ids(calls, OLD_ROOT, NEW_ROOT)
    assert len(ids) == len(calls)
    assert ids[calls[5].call_id] == child_id(NEW_ROOT, 3, "call", "judge")  # index 2 was never started
    assert ids[calls[2].call_id] == child_id(child_id(NEW_ROOT, 0, "call", "fetch"), 0, "call", "parse")


def test_a_call_whose_index_is_not_found_makes_its_creator_execute() -> None:
    calls = [*tree(), row("c-made-elsewhere", OLD_ROOT, "fetch")]
    p = plan(calls, "report", OLD_ROOT, NEW_ROOT, origin_succeeded=True)
    assert "c-made-elsewhere" not in p.ids and OLD_ROOT in p.executed


def test_from_a_leaf_its_consumers_run_its_siblings_and_tail_callers_do_not() -> None:
    calls = tree()
    root, a, pa, b, pb_, c, r = (x.call_id for x in calls)
    p = plan(calls, "parse", OLD_ROOT, NEW_ROOT, origin_succeeded=True)
    # parse's calls; fetch waited for its parse (nothing else takes it); judge takes fetch's values;
    # report takes judge's; the root handed off to report: its value changes, it does not run.
    assert p.executed == {pa, pb_, a, b, c, r}
    assert root in p.changed and root not in p.executed
    rows = {x.function: x for x in copies(calls, p, "new")}
    assert rows["root"].status == "tail" and rows["root"].result is None and rows["root"].reused == 1
    # fetch and report run from their stored specs (their creator is reused), renamed; parse and
    # judge... judge too: the root does not run again to create it.
    assert rows["fetch"].status == "pending" and rows["report"].status == "pending"
    assert rows["judge"].status == "pending" and "parse" not in rows  # fetch creates it again
    judge = pb.FutureSpec.FromString(rows["judge"].spec)
    assert set(wire.refs(judge.arguments)) == {p.ids[a], p.ids[b]} and judge.id == p.ids[c]


def test_unfinished_calls_of_a_succeeded_run_are_dropped() -> None:
    calls = [*tree(), row(child_id(OLD_ROOT, 5, "call", "fetch"), OLD_ROOT, "fetch", status="cancelled")]
    p = plan(calls, "report", OLD_ROOT, NEW_ROOT, origin_succeeded=True)
    assert p.executed == {calls[6].call_id}  # report alone: the root handed off to it
    assert len(copies(calls, p, "new")) == len(calls) - 1


def approval_flow() -> list[CallRow]:
    """root tail-calls publish(draft(), signal("approval")); publish also takes a style note."""
    d = child_id(OLD_ROOT, 0, "call", "draft")
    s = child_id(OLD_ROOT, 1, "signal", "approval")
    n = child_id(OLD_ROOT, 2, "call", "style")
    p = child_id(OLD_ROOT, 3, "call", "publish")
    return [row(OLD_ROOT, None, "root", status="tail", tail=p), row(d, OLD_ROOT, "draft"),
            row(s, OLD_ROOT, "approval", kind="signal"), row(n, OLD_ROOT, "style"),
            row(p, OLD_ROOT, "publish", d, s, n)]


def test_a_signal_is_waited_for_again_when_what_it_was_sent_beside_changes() -> None:
    calls = approval_flow()
    _, d, s, n, p = (x.call_id for x in calls)
    plan_ = plan(calls, "draft", OLD_ROOT, NEW_ROOT, origin_succeeded=True)
    assert {d, p, s} <= plan_.executed and n not in plan_.executed
    rows = {x.function: x for x in copies(calls, plan_, "new")}
    assert rows["approval"].status == "pending" and not rows["approval"].reused


def test_a_signal_is_reused_when_only_the_function_that_takes_it_changes() -> None:
    calls = approval_flow()
    _, d, s, n, p = (x.call_id for x in calls)
    plan_ = plan(calls, "publish", OLD_ROOT, NEW_ROOT, origin_succeeded=True)
    assert plan_.executed == {p}
    rows = {x.function: x for x in copies(calls, plan_, "new")}
    assert rows["approval"].reused == 1 and rows["approval"].status == "succeeded"
