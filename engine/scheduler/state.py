"""In-memory state of runs and calls, as the scheduler sees them.

A call moves through these states (docs/state-machine.md draws them):

    pending ──deps done──▶ queued ──dispatched──▶ running ──value──▶ succeeded
       │                     ▲                       │ └──tail call──▶ tail ──tail's value──▶ succeeded
       │                     └──retry (backoff)──────┤
       └──a dependency failed──▶ failed ◀──retries exhausted / RequestError
    any non-final state ──run cancelled──▶ cancelled

`succeeded`, `failed` and `cancelled` are final for the current try of a run; `engine resume`
moves every call that is not `succeeded` or `tail` back to `pending`. A `tail` call is finished
executing and never runs again: its value is its tail call's value.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from engine.statuses import CALL_FINAL, CallStatus, RunStatus
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.app import AppSpec, FunctionSettings
    from engine.scheduler.budgets import RunBudget

# The vocabulary is `engine.statuses`; these are its short names for the scheduler's code.
PENDING = CallStatus.PENDING
QUEUED = CallStatus.QUEUED
RUNNING = CallStatus.RUNNING
TAIL = CallStatus.TAIL
SUCCEEDED = CallStatus.SUCCEEDED
FAILED = CallStatus.FAILED
CANCELLED = CallStatus.CANCELLED

FINAL = CALL_FINAL

T = TypeVar("T")

#: The links of a call that has none of a kind (most calls have none of most kinds): shared,
#: replaced by a list on the first link (`add_link`), never appended to. An empty list per call
#: and kind would cost 56 bytes, 28 MB over a 100,000-call fan-out's five kinds.
NO_LINKS: tuple[()] = ()


def add_link(links: list[T] | tuple[()], item: T) -> list[T]:
    """`links` with `item` appended: the same list, or a new one in place of `NO_LINKS`."""
    if isinstance(links, list):
        links.append(item)
        return links
    return [item]


class CallState:
    """One call (function call, map or reduce) of a run."""

    __slots__ = (
        "id", "run", "spec", "function", "kind", "parent_id", "args_digest", "status",
        "attempts", "executions", "deps_pending", "dependants", "tail_id", "tail_parents",
        "collectors", "children", "result", "result_digest", "failure", "waiters",
        "started_at", "ended_at", "created_at", "task", "retry_handle", "settings", "executor",
        "dormant", "has_refs", "progress", "metrics", "app",
    )

    def __init__(self, run: RunState, spec: pb.FutureSpec, parent_id: str | None,
                 args_digest: str, settings: FunctionSettings) -> None:
        self.id = spec.id
        self.run = run
        self.spec = spec
        self.function = spec.function
        self.kind = spec.kind
        self.parent_id = parent_id
        self.args_digest = args_digest
        self.settings = settings
        # The application whose code runs it: the run's, but for a call of another application
        # and what that call creates (`Scheduler._app_of`).
        self.app = run.app
        self.status: str = PENDING
        self.attempts = 0
        self.executions = 0
        self.deps_pending = 0
        self.dependants: list[CallState] | tuple[()] = NO_LINKS
        self.tail_id: str | None = None
        # Calls whose value is this call's value (they returned it as a tail call).
        self.tail_parents: list[CallState] | tuple[()] = NO_LINKS
        # Map calls collecting this call's value into their list.
        self.collectors: list[CallState] | tuple[()] = NO_LINKS
        # For map: the item calls, in order.
        self.children: list[CallState] | tuple[()] = NO_LINKS
        self.result: bytes | None = None
        self.result_digest: str | None = None
        self.failure: pb.Failure | None = None
        self.waiters: list[Waiter] | tuple[()] = NO_LINKS
        self.created_at = time.time()
        self.started_at: float | None = None
        self.ended_at: float | None = None
        # The running attempt's response future (or, when it ended badly, the task concluding it).
        self.task: asyncio.Future[Any] | None = None
        self.retry_handle: asyncio.TimerHandle | None = None
        self.executor: Any = None  # the ExecutorState running it, while running
        # Resumed under a parent that will execute again: not scheduled until re-created.
        self.dormant = False
        # Whether its arguments reference other calls (set when its dependencies are linked).
        self.has_refs = True
        # Its last progress report, and what it recorded through RequestContext.metrics
        # (summed over its attempts): the JSON shapes of `calls.progress` / `calls.metrics`.
        self.progress: dict[str, Any] | None = None
        self.metrics: dict[str, Any] | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def __repr__(self) -> str:
        return f"<Call {self.function} {self.id} {self.status}>"


def task_done(call: CallState, task: asyncio.Future[Any] | None) -> None:
    """Forget `call`'s attempt future (or task) once it has its outcome: one kept by each of
    a fan-out's calls would hold a few hundred bytes each."""
    if call.task is task:
        call.task = None


@dataclass
class RunState:
    run_id: str
    app: AppSpec
    root_id: str
    calls: dict[str, CallState] = field(default_factory=dict)
    status: str = RunStatus.RUNNING
    counts: Counter[str] = field(default_factory=Counter)
    reused: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    failure: pb.Failure | None = None
    started_at: float = field(default_factory=time.time)
    # Its lease was lost to another process: no longer driven here (`Scheduler._lost`).
    lost: bool = False
    # Its root failed, and with on_failure "finish" the calls that can still progress run to
    # completion first: the failure the run ends with once none is left (`Scheduler._run_failed`).
    failing: pb.Failure | None = None
    # The request context, loaded from the store when a call first asks (`Scheduler.state_of`,
    # `Scheduler.headers_of`): key -> (inline pickled value, blob digest); header pairs.
    state: dict[str, tuple[bytes | None, str | None]] | None = None
    headers: list[tuple[str, str]] | None = None
    # Its limits and their use (`engine.scheduler.budgets`), set when it starts or resumes.
    budget: RunBudget | None = None
    # Its weight in the fair share of each pool between runs (`pools.FairQueue`): this many
    # dispatches in a row when its turn comes.
    priority: int = 1
    # Its signal futures waiting for a signal, in the order they began to wait
    # (`Scheduler._wait_for_signal`).
    waiting: dict[str, CallState] = field(default_factory=dict)
    # Whether it has any signal future: without one, no call waits for a signal, and the
    # check (`Scheduler._waits_for_signal`) need not scan a fan-in's hundred thousand arguments.
    has_signals: bool = False
    # Per function, how many of its calls run now and how many ran at once at most (its width,
    # recorded with the run's end: `Dispatcher.prestart` of the application's next run).
    running: Counter[str] = field(default_factory=Counter)
    widths: dict[str, int] = field(default_factory=dict)
    # A new run (not a resume or a rerun, which have calls finished already): when its root
    # call first gets an executor, the application's warm executors and last widths start
    # (`Dispatcher.prestart`).
    prestart: bool = False

    def progress(self) -> dict[str, int]:
        c = self.counts
        return {
            "total": sum(c.values()),
            "queued": c[PENDING] + c[QUEUED],
            "running": c[RUNNING],
            "done": c[SUCCEEDED] + c[TAIL],
            "failed": c[FAILED] + c[CANCELLED],
            "reused": self.reused,
        }


class Waiter:
    """A parent call blocked in Await on some of its futures."""

    __slots__ = ("ids", "mode", "event")

    def __init__(self, ids: list[str], mode: int) -> None:
        self.ids = ids
        self.mode = mode
        self.event = asyncio.Event()

    def satisfied(self, calls: dict[str, CallState]) -> bool:
        states = [calls[i] for i in self.ids]
        if self.mode == pb.RETURN_WHEN_FIRST_COMPLETED:
            return any(c.final for c in states)
        if self.mode == pb.RETURN_WHEN_FIRST_FAILURE:
            return any(c.status in (FAILED, CANCELLED) for c in states) or all(c.final for c in states)
        return all(c.final for c in states)
