"""Budgets: the limits the engine enforces on a run, so that user code need not.

A run's budget has three limits, each optional (docs/configuration.md#budgets):

- `max_calls` — calls created in the run: every node of its call graph, the root, each call,
  each `map`/`reduce` and each of their items (what `engine show` lists), resumed runs included.
- `max_depth` — the depth of the call tree. The root is depth 0; a call created by a call at
  depth d (a future it started, or its tail call) is at depth d + 1; the items of a `map` or
  `reduce` are at the depth of the map or reduce itself, which stands for them and never runs.
  `max_depth: 0` allows the root alone.
- `max_duration` — seconds the run was driven, over all its tries: from its start to its end,
  plus each resume's time to its end. Time it spent queued, failed or cancelled before a resume
  does not count, so that a run resumed the next day is not over at once; a driver that died
  counts up to the last call event it checkpointed.

Where a run's budget comes from: `@application(max_calls=, max_depth=, max_duration=)`, then
`budget:` in engine.yaml, then the submission (`engine run --budget`, `?budget=` on the API),
each one's limits replacing the previous ones'; a resume's `--budget` replaces the stored
run's. The effective budget is stored with the run (`runs.budget`).

Invariants, and where they are enforced:

- **Refused before created.** `Scheduler._add_call` asks `admit` before a new call exists: a
  future that would cross `max_calls` or `max_depth` is never written, queued or run; the call
  that created it fails with `BudgetExceeded`, and so does the run (`Scheduler._budget_exceeded`),
  whose other calls stop as a cancel stops them. Nothing of the run starts after that. A tail
  call large enough to be added in slices is checked whole first (`admit_all`), so none of
  its calls starts before a later slice would be refused.
- **Use is the checkpointed graph.** Calls and depths are counted from the run's calls, which
  resume reloads: a call re-created by its re-executed parent maps onto its existing row and is
  not counted twice, and a resumed run continues from the use it had. A refused future has no
  row, so a resume with a raised limit creates it (its id is deterministic) and goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from engine import wire
from engine.errors import BudgetExceeded, SDKUsageError
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.scheduler.state import CallState, RunState
    from engine.store import CallRow, RunRow

#: The short names of `--budget calls=1000,depth=3,duration=600` and `?budget=`.
SHORT_NAMES = {"calls": "max_calls", "depth": "max_depth", "duration": "max_duration"}

#: Node kinds whose items take their own depth (they stand for their items, and never run).
_COLLECTIONS = (pb.NODE_KIND_MAP, pb.NODE_KIND_REDUCE)


@dataclass(frozen=True)
class Budget:
    """A run's limits; None is no limit."""

    max_calls: int | None = None
    max_depth: int | None = None
    max_duration: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.limits().items():
            check_limit(name, value)

    def limits(self) -> dict[str, int | float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def updated(self, changes: Mapping[str, int | float | None]) -> Budget:
        """This budget with the limits `changes` names replaced (a None lifts one)."""
        return replace(self, **dict(changes))  # type: ignore[arg-type]  # checked in __post_init__

    def text(self) -> str:
        """The `--budget` form, e.g. `calls=1000,depth=3`; `none` when nothing is limited."""
        parts = [f"{short}={_number(getattr(self, name))}" for short, name in SHORT_NAMES.items()
                 if getattr(self, name) is not None]
        return ",".join(parts) or "none"


def check_limit(name: str, value: Any) -> None:
    """Raise `SDKUsageError` unless `value` is a valid value of limit `name` (or None)."""
    if value is None:
        return
    if name == "max_duration":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        what = "a number of seconds above 0"
    else:
        least = 1 if name == "max_calls" else 0
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
        what = f"a whole number of at least {least}"
    if not ok:
        raise SDKUsageError(f"budget {name} must be {what}, got {value!r}")


def parse_budget(text: str) -> dict[str, int | float | None]:
    """`calls=1000,depth=3,duration=600` → the limits it names (`none` lifts one). Raises
    `SDKUsageError` with one line saying what is wrong."""
    out: dict[str, int | float | None] = {}
    for part in text.split(","):
        key, sep, raw = part.strip().partition("=")
        key, raw = key.strip(), raw.strip()
        name = SHORT_NAMES.get(key) or (key if key in SHORT_NAMES.values() else None)
        if not sep or name is None or not raw:
            raise SDKUsageError(f"bad budget {text!r}: expected NAME=VALUE pairs separated by commas, "
                                f"NAME one of {', '.join(SHORT_NAMES)} (e.g. calls=1000,depth=3,duration=600)")
        if name in out:
            raise SDKUsageError(f"bad budget {text!r}: {key} is given twice")
        value: int | float | str | None
        if raw.lower() == "none":
            value = None
        else:
            try:
                value = float(raw) if name == "max_duration" else int(raw)
            except ValueError:
                value = raw  # check_limit refuses it, naming it
            try:
                check_limit(name, value)
            except SDKUsageError as exc:
                raise SDKUsageError(f"bad budget {text!r}: {exc}") from None
        out[name] = value  # type: ignore[assignment]  # a number or None once checked
    return out


def dump_budget(budget: Budget, elapsed: float) -> str:
    """`runs.budget`: the limits and the seconds the run was driven before its current try."""
    return json.dumps({**budget.limits(), "elapsed": round(elapsed, 3)})


def load_budget(text: str | None) -> tuple[Budget | None, float]:
    """`runs.budget` → (its limits, or None for a run from before budgets; elapsed seconds)."""
    if not text:
        return None, 0.0
    data = json.loads(text)
    elapsed = float(data.pop("elapsed", 0.0) or 0.0)
    return Budget(**{k: v for k, v in data.items() if k in SHORT_NAMES.values()}), elapsed


def depths(calls: Iterable[tuple[str, str | None, bool]]) -> dict[str, int]:
    """Each call's depth, from (id, parent id, whether it is a map/reduce) in creation order."""
    out: dict[str, int] = {}
    collections: set[str] = set()
    for call_id, parent_id, is_collection in calls:
        if parent_id is None or parent_id not in out:
            out[call_id] = 0
        else:
            out[call_id] = out[parent_id] + (0 if parent_id in collections else 1)
        if is_collection:
            collections.add(call_id)
    return out


def stored_use(row: RunRow, calls: list[CallRow]) -> dict[str, Any]:
    """`use_json` of a run as the store has it (`engine show`, the API): a run being driven
    counts its current try up to now."""
    budget, elapsed = load_budget(row.budget)
    since = row.resumed_at or row.started_at
    if row.budget is None:  # from before budgets: its last try
        elapsed = ((row.ended_at or time.time()) - since) if since is not None else 0.0
    elif row.status == "running" and since is not None:
        elapsed += time.time() - since
    tree = depths((c.call_id, c.parent_id, c.kind in ("map", "reduce")) for c in calls)
    return use_json(budget, len(calls), max(tree.values(), default=0), elapsed)


def use_json(budget: Budget | None, calls: int, depth: int, seconds: float | None) -> dict[str, Any]:
    """A run's budget for `engine show --json` and the API: its limits and its use."""
    limits = (budget or Budget()).limits()
    return {"limits": limits,
            "use": {"calls": calls, "depth": depth, "duration": round(seconds, 3) if seconds is not None else None}}


def use_text(info: dict[str, Any]) -> str:
    """`calls 812/1000, depth 3/3, 41 s/600 s` (a limit left out when there is none)."""
    limits, use = info["limits"], info["use"]

    def part(label: str, used: Any, limit: Any, unit: str = "") -> str:
        text = f"{label} {_number(used)}{unit}"
        return text + (f"/{_number(limit)}{unit}" if limit is not None else "")

    return ", ".join([part("calls", use["calls"], limits["max_calls"]),
                      part("depth", use["depth"], limits["max_depth"]),
                      part("", round(use["duration"] or 0), limits["max_duration"], " s").strip()])


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


class RunBudget:
    """One run's budget while it is driven: its limits, its use, and its duration timer."""

    def __init__(self, budget: Budget, elapsed: float = 0.0) -> None:
        self.budget = budget
        self.elapsed_before = elapsed           # seconds driven in earlier tries
        self.driven_since = time.time()
        self.depths: dict[str, int] = {}
        self.timer: asyncio.TimerHandle | None = None

    def load(self, calls: Iterable[CallState]) -> None:
        """The use of a resumed run, from its calls in creation order."""
        self.depths = depths((c.id, c.parent_id, c.kind in _COLLECTIONS) for c in calls)

    def elapsed(self) -> float:
        return self.elapsed_before + (time.time() - self.driven_since)

    def use(self, run: RunState) -> dict[str, Any]:
        return use_json(self.budget, len(run.calls), max(self.depths.values(), default=0), self.elapsed())

    def admit(self, run: RunState, spec: pb.FutureSpec, parent_id: str | None) -> pb.Failure | None:
        """Whether a new call `spec` may be created under `parent_id`: None if so (its depth is
        recorded), else the failure naming the limit it would cross and the call creating it."""
        parent = run.calls.get(parent_id) if parent_id is not None else None
        depth = self._depth_under(parent)
        refused = self._refusal(run, spec, parent, depth, len(run.calls) + 1)
        if refused is None:
            self.depths[spec.id] = depth
        return refused

    def admit_all(self, run: RunState, specs: Iterable[pb.FutureSpec], parent_id: str) -> pb.Failure | None:
        """`admit` for a whole graph of futures that `parent_id` creates at once (a tail call
        added in slices), before any of them is: None if every new one may be created, else the
        failure `admit` would give the first refused. Records nothing. Futures that already
        exist (a re-executed caller's) are not new calls."""
        parent = run.calls[parent_id]
        depth = self._depth_under(parent)
        created = len(run.calls)
        for spec in specs:
            if spec.id in run.calls:
                continue
            created += 1
            refused = self._refusal(run, spec, parent, depth, created)
            if refused is not None:
                return refused
        return None

    def _depth_under(self, parent: CallState | None) -> int:
        if parent is None:
            return 0
        return self.depths.get(parent.id, 0) + (0 if parent.kind in _COLLECTIONS else 1)

    def _refusal(self, run: RunState, spec: pb.FutureSpec, parent: CallState | None, depth: int,
                 number: int) -> pb.Failure | None:
        """The failure for creating `spec` as the run's call `number` at `depth`, if a limit is crossed."""
        limits = self.budget
        creator = parent.function if parent is not None else spec.function
        creator_id = parent.id if parent is not None else spec.id
        if limits.max_calls is not None and number > limits.max_calls:
            return exceeded("max_calls", limits.max_calls,
                            f"budget max_calls={limits.max_calls} reached: {creator} ({creator_id}) tried to "
                            f"create call {number} of the run, {spec.function} ({spec.id}); "
                            f"raise it with `engine resume {run.run_id} --budget calls=N`",
                            creator, creator_id)
        if limits.max_depth is not None and depth > limits.max_depth:
            return exceeded("max_depth", limits.max_depth,
                            f"budget max_depth={limits.max_depth} reached: {creator} ({creator_id}) tried to "
                            f"create {spec.function} ({spec.id}) at depth {depth}; "
                            f"raise it with `engine resume {run.run_id} --budget depth=N`",
                            creator, creator_id)
        return None

    def arm(self, loop: asyncio.AbstractEventLoop, run: RunState,
            on_expired: Callable[[RunState, pb.Failure], None]) -> None:
        """Call `on_expired` when the run's `max_duration` runs out (at once if it has)."""
        limit = self.budget.max_duration
        if limit is None:
            return

        def expire() -> None:
            self.timer = None
            if run.done.is_set():
                return
            root = run.calls[run.root_id]
            on_expired(run, exceeded(
                "max_duration", limit,
                f"budget max_duration={_number(limit)} s reached: the run was driven {self.elapsed():.1f} s; "
                f"raise it with `engine resume {run.run_id} --budget duration=N`",
                root.function, root.id))

        self.timer = loop.call_later(max(0.0, limit - self.elapsed()), expire)

    def ended(self) -> str:
        """The run stopped being driven: stop its timer; `runs.budget` with the time it took."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        return dump_budget(self.budget, self.elapsed())


def exceeded(limit: str, value: float, message: str, function: str, call_id: str) -> pb.Failure:
    """The failure of a run that reached `limit`: a `BudgetExceeded` naming it, its value and
    the call that crossed it (pickled with the failure, so that callers get the limit back)."""
    failure = wire.make_failure(pb.FAILURE_KIND_BUDGET_EXCEEDED, message, function=function,
                                call_id=call_id, type_name="BudgetExceeded")
    failure.exception.data = wire.dumps(BudgetExceeded(message, limit=limit, value=value,
                                                       function=function, call_id=call_id))
    return failure


class BudgetRefused(Exception):
    """A new future would cross its run's budget (`RunBudget.admit`): it was not created."""

    def __init__(self, failure: pb.Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


__all__ = ["SHORT_NAMES", "Budget", "BudgetRefused", "RunBudget", "dump_budget", "exceeded",
           "load_budget", "parse_budget", "stored_use", "use_json", "use_text"]
