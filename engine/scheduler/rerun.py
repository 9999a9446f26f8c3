"""Rerun a finished run from one function, with the current code: `engine rerun RUN_ID --from
FUNCTION`, `POST /v1/runs/{id}/rerun`.

A rerun is a new run with its origin's input (and submission headers). It reuses every checkpoint
of the origin that does not depend on FUNCTION's calls, and executes, with the code it is given:

- **FUNCTION's calls and all their descendants** (what they created, recursively);
- **the calls that take their values** (a future passed as an argument), transitively;
- **the callers that waited for them** — a call that returned a value after creating a call
  whose value changes, and whose value it did not hand on to another call — and so on up the
  tree. A caller that handed off by **tail call** is not executed again: its value is its tail
  call's (the rule resume keeps), so it gets the new value without running. Neither is a map or
  reduce, whose value is collected from its items.

A **signal** is reused unless a call that takes it gets another new value beside it: an approval
sent for the old draft is not an approval of the new one, so it is waited for again.

How: `prepare` computes those sets from the origin's stored calls (`plan`), and writes in one
transaction the new run's row and a copy of the origin's call graph rewritten into the new run's
call ids (`new_ids`): the reused calls with their checkpoints (`calls.reused` = 1), the calls
to execute whose creator is reused as `pending` with their stored spec, and nothing of the calls
whose creator executes again — it creates them again, and `Scheduler._add_call` maps what it
creates onto the reused checkpoints. The run then starts as a resumed run does
(`Scheduler.resume_run`), so everything resume guarantees holds, `kill -9` and `engine resume`
of the rerun included.

Invariants:

- **Deterministic call ids make the mapping.** A call's id is `child_id(parent id, creation
  index, kind, function)` (`engine.sdk.runtime`); the new run's root has the new run's root id,
  so every call's new id is its creator's new id hashed with the same index. The index is not
  stored: `new_ids` finds it by hashing candidates. A call whose index is not found within
  `4 × siblings + 256` (its creator made that many futures it never started) is not reused:
  its creator executes again.
- **A copied call depends only on copied calls.** A call to execute is copied only when its
  creator is reused; whatever it references was created by that creator too (or passed to it,
  which would make the creator a consumer, executed), so it is copied as well.
- **A call that waits for a value and hands it on as well** — passes a future to another call
  *and* waits for it itself, then tail-calls — is taken for one that only hands it on: it is
  not executed again and keeps what it read. Return a value (or wait only) to be rerun.

In a succeeded origin, calls that did not finish (started and never needed, or left by a path
not taken) are dropped; in a failed or cancelled one they count as changed, so what waited for
them executes again.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine import wire
from engine.errors import SDKUsageError
from engine.scheduler.budgets import dump_budget
from engine.sdk.runtime import child_id
from engine.statuses import RUN_LIVE, RunStatus
from engine.store import CallRow, RunRow, Store
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.app import AppSpec

#: Call kinds that are "FUNCTION's calls" (a signal's `function` is its name, not code).
CODE_KINDS = ("call", "map", "reduce", "application")
FINISHED = ("succeeded", "tail")


class RerunRefused(SDKUsageError):
    """The rerun cannot be made as asked: one line saying why and what to do."""


class RunStillRunning(RerunRefused):
    """The origin has not ended: a rerun would copy checkpoints still being written."""


@dataclass
class Plan:
    """What a rerun does with each call of its origin (old ids)."""

    executed: set[str] = field(default_factory=set)   # run again with the current code
    forced: set[str] = field(default_factory=set)     # FUNCTION's calls and their descendants
    changed: set[str] = field(default_factory=set)    # their value is new: executed, or a tail's
    dropped: set[str] = field(default_factory=set)    # unfinished calls of a succeeded origin
    ids: dict[str, str] = field(default_factory=dict)  # old id -> the new run's id


def new_ids(calls: list[CallRow], old_root: str, new_root: str) -> dict[str, str]:
    """Each call's id in the new run (see the module's invariants); a call missing here could not
    be mapped. `calls` in creation order (a creator before what it created)."""
    children: dict[str | None, list[CallRow]] = defaultdict(list)
    for c in calls:
        children[c.parent_id].append(c)
    ids = {old_root: new_root}
    for parent in calls:
        kids = children.get(parent.call_id)
        new_parent = ids.get(parent.call_id)
        if not kids or new_parent is None:
            continue
        wanted = {k.call_id for k in kids}
        shapes = {(k.kind, k.function) for k in kids}
        for seq in range(4 * len(kids) + 256):
            for kind, function in shapes:
                old = child_id(parent.call_id, seq, kind, function)
                if old in wanted:
                    ids[old] = child_id(new_parent, seq, kind, function)
                    wanted.discard(old)
            if not wanted:
                break
    return ids


def plan(calls: list[CallRow], function: str, root_id: str, new_root: str, *,
         origin_succeeded: bool) -> Plan:
    """Which calls of the origin a rerun from `function` executes (see the module docstring)."""
    by_id = {c.call_id: c for c in calls}
    children: dict[str, list[str]] = defaultdict(list)
    consumers: dict[str, list[str]] = defaultdict(list)
    tail_of: dict[str, list[str]] = defaultdict(list)
    refs_of: dict[str, list[str]] = {}
    out = Plan(ids=new_ids(calls, root_id, new_root))
    for c in calls:
        if c.parent_id is not None:
            children[c.parent_id].append(c.call_id)
        if c.tail_id:
            tail_of[c.tail_id].append(c.call_id)
        refs_of[c.call_id] = list(wire.refs(pb.FutureSpec.FromString(c.spec).arguments))
        for ref in refs_of[c.call_id]:
            consumers[ref].append(c.call_id)
    if origin_succeeded:
        # With what they created: nothing of it made the result.
        for c in calls:  # creation order: a creator before what it created
            if c.status not in FINISHED or c.parent_id in out.dropped:
                out.dropped.add(c.call_id)
    changed = out.changed
    todo: deque[str] = deque()

    def change(i: str) -> None:
        if i not in changed and i not in out.dropped:
            changed.add(i)
            todo.append(i)

    def execute(i: str) -> None:
        if i not in out.executed and i not in out.dropped:
            out.executed.add(i)
            change(i)

    def force(i: str) -> None:
        stack = [i]
        while stack:
            j = stack.pop()
            if j in out.forced or j in out.dropped:
                continue
            out.forced.add(j)
            execute(j)
            stack.extend(children[j])

    for c in calls:
        if c.function == function and c.kind in CODE_KINDS:
            force(c.call_id)
        elif c.status not in FINISHED:
            change(c.call_id)  # (dropped in a succeeded origin)
        if c.call_id not in out.ids:
            force(c.call_id)  # not mappable: its creator makes it again
            if c.parent_id is not None:
                execute(c.parent_id)
    signals = [c.call_id for c in calls if c.kind == "signal"]
    while todo:
        while todo:
            i = todo.popleft()
            for d in consumers[i]:
                execute(d)
            for q in tail_of[i]:
                change(q)  # its value is i's: it gets the new one without running
            parent = by_id.get(by_id[i].parent_id or "")
            if parent is None:
                continue
            if parent.kind in ("map", "reduce"):
                change(parent.call_id)
            elif parent.tail_id != i and not consumers[i]:
                execute(parent.call_id)  # it waited for i (or let it be): it runs again
        # A signal was given for the values it was sent beside: when a call that takes it gets
        # another value as well (a new draft beside an old approval), it is waited for again.
        for s in signals:
            if s not in out.executed and any(
                    ref != s and ref in changed
                    for d in consumers[s] for ref in refs_of[d]):
                force(s)
    return out


def copies(calls: list[CallRow], p: Plan, run_id: str) -> list[CallRow]:
    """The new run's call rows: the reused calls with their checkpoints, and the calls to
    execute whose creator is reused as `pending`, in the origin's creation order."""
    out = []
    for c in calls:
        if c.call_id in p.dropped:
            continue
        execute = c.call_id in p.executed
        if execute and c.parent_id is not None and c.parent_id in p.executed:
            continue  # its creator executes again and creates it again
        spec = pb.FutureSpec.FromString(c.spec)
        spec.id = p.ids[c.call_id]
        for arg in wire.leaves(spec.arguments):
            if arg.WhichOneof("kind") == "ref":
                arg.ref = p.ids[arg.ref]
        row = CallRow(
            call_id=spec.id, run_id=run_id,
            parent_id=p.ids[c.parent_id] if c.parent_id is not None else None,
            function=c.function, kind=c.kind, spec=spec.SerializeToString(),
            args_digest=wire.args_digest(spec.arguments), status="pending",
            created_at=c.created_at, seq=c.seq,
        )
        if not execute:
            row.reused = 1
            row.tail_id = p.ids[c.tail_id] if c.tail_id else None
            row.started_at, row.ended_at, row.progress = c.started_at, c.ended_at, c.progress
            if c.call_id in p.changed:
                # A tail caller (or map, reduce) whose value will be new: it waits in `tail` for
                # it, as after a crash (a map with no tail target is expanded again).
                row.status = "tail"
            else:
                row.status, row.result, row.result_digest = c.status, c.result, c.result_digest
        out.append(row)
    return out


def check(origin: RunRow, calls: Iterable[CallRow], function: str, app: AppSpec) -> None:
    """Refuse, in one line, a rerun that cannot be made: the origin has not ended, the code
    given is another application's or defines no `function`, or the origin made no call of it."""
    if origin.status in RUN_LIVE:
        raise RunStillRunning(
            f"run {origin.run_id} is still {origin.status}: wait for it to end, or cancel it, "
            "then rerun it")
    if app.name != origin.application:
        raise RerunRefused(f"run {origin.run_id} is a run of {origin.application}, not of {app.name}: "
                           f"give the file that defines {origin.application}")
    try:
        app.settings(function)
    except SDKUsageError:
        raise RerunRefused(f"{app.app_file.name} defines no @function() named {function!r}: "
                           "--from takes one of the application's functions") from None
    made = sorted({c.function for c in calls if c.kind in CODE_KINDS})
    if function not in made:
        raise RerunRefused(f"run {origin.run_id} made no call of {function}, so nothing depends on it: "
                           f"rerun from one of {', '.join(made)}")


def prepare(store: Store, origin_id: str, function: str, app: AppSpec, *, run_id: str,
            root_id: str, status: str, backend: str, version: int | None = None) -> list[CallRow]:
    """Write the rerun `run_id` of `origin_id` from `function` with `app`'s code: its row (in
    `status`: `running` for a caller that claims and starts it now, `queued` for the server's
    queue) and its copied calls, uncommitted, so that the caller commits them in one
    transaction. Returns the copied calls. Raises `RunNotFound`, `RerunRefused`."""
    origin = store.get_run(origin_id)
    calls = store.load_calls(origin_id)
    check(origin, calls, function, app)
    p = plan(calls, function, origin.root_call_id, root_id,
             origin_succeeded=origin.status == RunStatus.SUCCEEDED)
    rows = copies(calls, p, run_id)
    store.create_run(RunRow(
        run_id=run_id, application=app.name, status=status, root_call_id=root_id,
        app_file=str(app.app_file), module=app.module,
        config_path=str(app.config_path) if app.config_path else None, backend=backend,
        input=origin.input, created_at=time.time(), headers=origin.headers,
        budget=dump_budget(app.budget(), 0.0), priority=origin.priority, version=version,
        rerun_of=origin_id, rerun_from=function,
    ))
    for row in rows:
        store.insert_call(row)
    copied = {c.call_id: p.ids[c.call_id] for c in calls
              if c.call_id in p.ids and c.call_id not in p.executed}
    for key, value, digest, writer in store.state_rows(origin_id):
        if writer in copied:
            store.set_state(run_id, key, value, digest, copied[writer])
    return rows


__all__ = ["Plan", "RerunRefused", "RunStillRunning", "check", "copies", "new_ids", "plan", "prepare"]
