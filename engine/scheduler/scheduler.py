"""The scheduler: turns futures and tail calls into a call graph and drives it to completion.

It runs on one asyncio event loop, which also serves the `SchedulerCallback` gRPC service that
running functions use to submit futures and wait for them, and the `Blobs` service through which
values too large to travel inline move (`engine.scheduler.blobs`). Nothing here blocks the loop
for long: the store's writes are grouped into one commit per loop turn, backends push their
blocking work to threads, and a tail call too large to add in one turn is added in slices
(`_add_tail`), the loop served between them.

The scheduler keeps the call graph, the runs, their checkpoints and what each outcome means
(retries, tail calls, failures, the run's end). Two layers beside it do the rest:

- the dispatcher (`engine.scheduler.dispatch`) is handed each call once it is `queued`, runs it
  on an executor of its function's pool, and manages those executors (start, warm pool, reaping,
  retiring); it tells the scheduler what happened through a few methods (`_attempt_started`,
  `_take_outcome`, `_attempt_failed`, `_finish_call_failed`, `_schedule_flush`,
  `_expects_calls`: its docstring lists them), and writes nothing itself;
- values (`engine.scheduler.values`) reads argument and result values and passes them on,
  inline or by reference.

Invariants, and where they are enforced (the dispatcher's and values' are in their modules:
one runner per call, large values move by reference):

- **Checkpoint before use.** Every state change is written to the store as it happens, but acted
  on (dependants released, waiters woken, the run finished) only in `_flush`, after the
  transaction holding it commits. A crash can therefore lose work, never report work that the
  store does not hold. `_flush` runs once per loop turn, so all completions of one turn share a
  commit (group commit).
- **Deterministic call IDs** (made by the SDK, `engine.sdk.runtime.child_id`). `_add_call` maps a
  re-submitted ID onto the existing call: a finished call is reused from its checkpoint and never
  runs again, unless its arguments changed (then it runs with the new ones).
- **A tail call ends its caller.** Once the `tail` state is committed, the caller is finished:
  resume never re-executes it; its value is its tail call's. A large tail call's graph commits
  in slices before it (`_add_tail`); a crash midway re-runs the caller, which re-creates the
  same ids.
- **One driver per run.** A run is driven only while this process holds its lease
  (`engine.scheduler.leases`); every write of it is fenced by the lease's epoch. A run whose
  lease is lost is abandoned at once (`_lost`): its calls stop, nothing more of it is written.
- **Budgets refuse before creating.** A new future that would cross its run's `max_calls` or
  `max_depth` is refused in `_add_call` before it exists; its creator and the run fail with
  `BudgetExceeded` (`_budget_exceeded`), and nothing of the run starts after that
  (`engine.scheduler.budgets`).
- **A signal is stored before it is used.** A signal future (`NODE_KIND_SIGNAL`) runs on no
  executor: `_wait_for_signal` parks it, and `_deliver_signals` completes it from the `signals`
  table (committed by the sender first, `engine.scheduler.signals`), taking a repeatable signal
  in the same transaction as the value. A call that depends on one starts no executor while it
  waits.
- **A rerun is a resume of a copied graph.** `rerun_run` commits a new run whose checkpoints are
  copied from the old run's under the new run's ids (`engine.scheduler.rerun`), then starts it
  with `resume_run`: reuse and re-execution follow resume's rules, not a second copy of them.
- **Backends report, the scheduler decides.** An executor that died is asked why (`exit_info`,
  by the dispatcher, which makes that a typed failure); the scheduler applies the call's retry
  policy to it (`_attempt_failed`): a retry is queued again only after its backoff
  (`Dispatcher.requeue`).

`self.tracer` (`engine.tracing`) only observes: its hooks are told of runs, calls and attempts
and never change what happens; with tracing off they are empty methods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc

from engine import tracing, wire
from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec
from engine.errors import InfrastructureError, SDKUsageError
from engine.scheduler import rerun
from engine.scheduler.access import Access, Grant
from engine.scheduler.blobs import BlobService
from engine.scheduler.budgets import Budget, BudgetRefused, RunBudget, dump_budget, load_budget
from engine.scheduler.callback import CallbackService
from engine.scheduler.context import RequestContexts
from engine.scheduler.dispatch import Dispatcher
from engine.scheduler.exchange import Deferred, Exchanges, local_blob_dir
from engine.scheduler.leases import Leases
from engine.scheduler.pools import ExecutorState, Pool
from engine.scheduler.state import (
    CANCELLED,
    FAILED,
    FINAL,
    NO_LINKS,
    PENDING,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TAIL,
    CallState,
    RunState,
    Waiter,
    add_link,
    task_done,
)
from engine.scheduler.values import Values
from engine.sdk.runtime import child_id
from engine.statuses import RunStatus
from engine.store import CallRow, RunRow, SignalRow, Store, StoreUnavailable
from engine.timeouts import within
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from engine.app import AppSpec, FunctionSettings

log = logging.getLogger("engine.scheduler")


#: A tail call of more futures than this is added in slices of this many (`Scheduler._add_tail`),
#: with the loop served between two slices: adding a hundred thousand calls at once held it for
#: seconds, long enough for executors' streams, lease renewals and HTTP requests to stall. Its
#: functions' executors start before the first slice (`Dispatcher.prestart_tail`). A call's
#: `Submit` of as many futures is added the same way (`Scheduler.submit_children`).
TAIL_SLICE = 500

#: Calls that run a function's code in an executor (the others are expanded by the scheduler).
RUNS_CODE = (pb.NODE_KIND_CALL, pb.NODE_KIND_APPLICATION)


def local_application(name: str) -> AppSpec:
    """Another application, for `engine run`: one defined in the code this process imported."""
    from engine.app import registered_application

    return registered_application(name)


def root_call_id(run_id: str) -> str:
    return child_id(run_id, 0, "call", "<root>")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@functools.cache
def _freeze_start_up_objects() -> None:
    """Once per process, as its first scheduler starts: what exists then (imported modules,
    the application, the store) lives as long as the process, and out of the collector's sight
    a full collection during a run has none of it to walk (one took 30-140 ms of the research
    tree's run, 0 since: benchmarks/README.md, "Research tree, round two"). These objects are
    still freed by reference counting; only a cycle among them is never collected."""
    gc.freeze()


class Scheduler:
    """Drives runs of applications on a backend, checkpointing into a store."""

    def __init__(
        self,
        store: Store,
        backend: Backend,
        *,
        max_executors: int = 16,
        idle_timeout: float = 10.0,
        on_event: Callable[[RunState, CallState], None] | None = None,
        tracer: tracing.Tracer | None = None,
        warm_executors: int | None = None,
    ) -> None:
        """`warm_executors`: the size of the warm pool of blank executors (`engine.scheduler.warm`;
        None: $ENGINE_WARM_EXECUTORS, else the backend's default); it starts with
        `start_warm_pool`."""
        self.store = store
        self.backend = backend
        self.on_event = on_event
        self.runs: dict[str, RunState] = {}
        self._to_notify: list[CallState] = []
        self._flush_scheduled = False
        self._server: grpc.aio.Server | None = None
        # Each executor's credential, and the calls and values it may reach (`access`).
        self.access = Access()
        self.blobs = BlobService(store, self.access)
        # Executors on this machine exchange large values through a directory beside the blobs.
        blob_dir = local_blob_dir(store)
        self.exchanges = Exchanges(blob_dir) if blob_dir is not None and backend.shares_filesystem else None
        if self.exchanges is not None:
            self.access.deferred = self.exchanges.deferred
        # Reads argument and result values, and passes them on (inline or by reference).
        self.values = Values(store, self.access)
        self.callback_address = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # Runs whose root failed, finishing what can still progress (`_run_failed`).
        self._failing: dict[str, RunState] = {}
        self._ticker: asyncio.Task[None] | None = None
        self.leases = Leases(store)
        # Set when the store stopped answering; the driver reconnects and clears it.
        self.store_failed = False
        self.leases.on_lost = self._lost
        store.on_lost = self._lost
        self.context = RequestContexts(store, self._emit, self._schedule_flush)
        # Resolves the name of another application a function calls inside its run
        # (`run_remote_application`): one defined in the same code for `engine run`; the
        # deployed version for `engine server`, which sets this.
        self.applications: Callable[[str], AppSpec] = local_application
        # OpenTelemetry spans of runs and call attempts; does nothing unless OTEL_* ask for it.
        self.tracer = tracer if tracer is not None else tracing.tracer()
        # Runs the calls that are ready on executors, and manages those (engine.scheduler.dispatch);
        # these are all it is told of the scheduler.
        self.dispatcher = Dispatcher(
            backend, self.access, self.values, self.tracer, exchanges=self.exchanges,
            max_executors=max_executors, idle_timeout=idle_timeout, warm_executors=warm_executors,
            attempt_started=self._attempt_started, take_outcome=self._take_outcome,
            attempt_failed=self._attempt_failed, finish_call_failed=self._finish_call_failed,
            schedule_flush=self._schedule_flush, expects_calls=self._expects_calls,
        )

    # =========================================================================================
    # lifecycle

    async def start(self) -> None:
        _freeze_start_up_objects()
        self._loop = asyncio.get_running_loop()
        self._server = grpc.aio.server(options=wire.GRPC_OPTIONS)
        pb_grpc.add_SchedulerCallbackServicer_to_server(CallbackService(self, self.access), self._server)
        pb_grpc.add_BlobsServicer_to_server(self.blobs, self._server)
        port = self._server.add_insecure_port(f"{self.backend.callback_bind_host}:0")
        await self._server.start()
        self.callback_address = f"{self.backend.callback_host}:{port}"
        self.dispatcher.start(self.callback_address)
        self._ticker = asyncio.ensure_future(self._tick())
        if self.exchanges is not None:
            await asyncio.to_thread(self.exchanges.sweep)
        self.leases.start()
        removed = await self.backend.cleanup_orphans()
        if removed:
            log.warning("removed %d executor(s) left behind by an engine that died", removed)

    async def _tick(self) -> None:
        """Re-evaluate pool sizes as queued calls age (scaling also reacts to every event), and
        look for signals other processes stored, every lease-renewal interval."""
        next_poll = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            self.dispatcher.tick()
            if time.monotonic() >= next_poll and not self.store_failed:
                next_poll = time.monotonic() + self.leases.renew_every
                try:
                    self._poll_signals()
                except StoreUnavailable as exc:
                    self.store_down(exc)
                except Exception:  # noqa: BLE001 - the next poll tries again; pumping goes on
                    log.exception("looking for signals failed")

    def start_warm_pool(self, *, refill: bool = True, app: AppSpec | None = None) -> None:
        """Start the warm pool's blank executors (after `start`; in the background). With
        `refill=False` and `app` (the one run of `engine run`) the pool is not refilled as they
        are taken, and holds no more than `app` has functions a blank executor fits."""
        self.dispatcher.start_warm_pool(refill=refill, app=app)

    def adopt_blank_executors(self, handles: list[Awaitable[ExecutorHandle | None]], spec: ExecutorSpec) -> None:
        """Blank executors started before this scheduler (`engine.backends.early`), by `spec`,
        each handle as it comes up: the warm pool takes them over."""
        self.dispatcher.warm.adopt(handles, spec)

    async def close(self) -> None:
        """Stop every executor and the callback server. Runs in flight stay resumable."""
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        await self.dispatcher.stop()
        for run in self.runs.values():
            for call in run.calls.values():
                if call.task is not None and not call.task.done():
                    call.task.cancel()
                if call.retry_handle is not None:
                    call.retry_handle.cancel()
        self.store.commit()
        await self.leases.stop()
        await self.dispatcher.close()
        if self.exchanges is not None:
            await asyncio.to_thread(self.exchanges.close)
        if self._server is not None:
            await self._server.stop(grace=0)
        await self.tracer.close()

    # =========================================================================================
    # runs

    def submit_run(
        self, app: AppSpec, input_data: bytes, args_message: pb.Arguments, *,
        run_id: str | None = None, idempotency_key: str | None = None, queued: bool = False,
        budget: Budget | None = None,
        priority: int = 1,
        headers: str | None = None,
    ) -> RunState:
        """Create a run of `app` whose root call gets `args_message` (values only).

        `queued=True` starts a run whose row already exists as `queued` (written by the server's
        durable queue when it accepted the request), keeping its id, input and creation time;
        the caller holds its lease (`leases.claim`). The row's move to `running` and the root
        call commit in one transaction, so a crash leaves the run either still queued or
        started with its root call, never in between. A new run is created, then claimed.
        `budget` is the run's (`engine.scheduler.budgets`; default: the application's).
        `priority` is the run's weight in the fair share between runs (`pools.FairQueue`).
        `headers` (`context.headers_json`) are kept with a new run as a submission's are: what
        `engine run --model` sets (the server's durable queue writes them itself).
        """
        self._learn_durations(app)
        run_id = run_id or new_run_id()
        root = pb.FutureSpec(
            id=root_call_id(run_id), kind=pb.NODE_KIND_CALL, function=app.name,
            arguments=args_message,
        )
        now = time.time()
        budget = budget if budget is not None else app.budget()
        if queued:
            self.store.update_run(run_id, status=RunStatus.RUNNING, started_at=now, backend=self.backend.name,
                                  budget=dump_budget(budget, 0.0))
        else:
            self.store.create_run(RunRow(
                run_id=run_id, application=app.name, status=RunStatus.RUNNING, root_call_id=root.id,
                app_file=str(app.app_file), module=app.module,
                config_path=str(app.config_path) if app.config_path else None,
                backend=self.backend.name, input=input_data, created_at=now, started_at=now,
                idempotency_key=idempotency_key, budget=dump_budget(budget, 0.0), headers=headers,
            ))
            self.store.commit()
            if not self.leases.claim(run_id):
                raise InfrastructureError(f"run {run_id} was taken by another process as it was created")
        self.values.spill_large_values(root.arguments)
        run = RunState(run_id=run_id, app=app, root_id=root.id, priority=priority, prestart=True)
        run.budget = RunBudget(budget)
        self.runs[run_id] = run
        self.tracer.run_started(run, self.context.headers_of)
        self._add_call(run, root, parent_id=None)  # its first attempt starts the rest (`prestart`)
        self._arm_budget(run)
        self._schedule_flush()
        return run

    def resume_run(self, app: AppSpec, run_id: str,
                   budget: Mapping[str, int | float | None] | None = None) -> RunState:
        """Continue a run from its checkpoints: finished calls are reused, never re-executed;
        every other call goes back to `pending` and runs when its dependencies allow. The
        caller holds the run's lease (`leases.claim`). `budget` replaces limits of the run's
        stored budget (`budgets.parse_budget`'s form): a raised limit lets it go on."""
        self._learn_durations(app)
        row = self.store.get_run(run_id)
        run = RunState(run_id=run_id, app=app, root_id=row.root_call_id, priority=row.priority or 1)
        self.runs[run_id] = run
        rows = self.store.load_calls(run_id)
        now = time.time()
        for r in rows:  # creation order: a call's parent is known before it
            spec = pb.FutureSpec.FromString(r.spec)
            call_app = self._app_of(run, spec, r.parent_id)
            call = CallState(run, spec, r.parent_id, r.args_digest, self._settings_of(call_app, spec))
            call.app = call_app
            if call.kind == pb.NODE_KIND_SIGNAL:
                run.has_signals = True
            call.executions = r.executions
            call.created_at = r.created_at
            call.progress = json.loads(r.progress) if r.progress else None
            call.metrics = json.loads(r.metrics) if r.metrics else None
            if r.status == SUCCEEDED:
                call.status = SUCCEEDED
                call.result, call.result_digest = r.result, r.result_digest
                call.started_at, call.ended_at = r.started_at, r.ended_at
                run.reused += 1
            elif r.status == TAIL:
                call.status = TAIL
                call.tail_id = r.tail_id
                call.started_at, call.ended_at = r.started_at, r.ended_at
            else:
                call.status = PENDING
            run.calls[call.id] = call
            run.counts[call.status] += 1
        if row.status == SUCCEEDED:
            run.status = SUCCEEDED
            run.done.set()
            return run
        run.budget = self._resumed_budget(run, row, rows, budget)
        self.tracer.run_started(run, self.context.headers_of, resumed=True)
        # A rerun's first start (`rerun_run`) starts it; anything else resumes it.
        started = {"started_at": now} if row.started_at is None else {"resumed_at": now, "resumes": row.resumes + 1}
        self.store.update_run(
            run_id, status=RunStatus.RUNNING, ended_at=None, failure=None, error_kind=None,
            error_message=None, budget=dump_budget(run.budget.budget, run.budget.elapsed_before),
            **started,
        )
        self.store.reset_unfinished(run_id)
        self.dispatcher.prestart(app, run_id, learned=False)
        # Relink the graph. Calls are in creation order, so dependencies come first.
        for call in run.calls.values():
            if call.status == TAIL:
                target = run.calls.get(call.tail_id or "")
                if target is None:
                    self._set_status(call, PENDING)  # map, or a tail graph never committed
                else:
                    self._link_tail(call, target)
        # A call whose parent will execute again waits for that parent to create it again
        # (`_add_call` wakes it): the parent may now pass other arguments, or take another path.
        for call in run.calls.values():  # creation order: parents before their children
            parent = run.calls.get(call.parent_id or "")
            if call.status == PENDING and parent is not None and (
                parent.dormant or parent.status not in (SUCCEEDED, TAIL)
            ):
                call.dormant = True
        for call in list(run.calls.values()):
            if call.status == PENDING and not call.dormant:
                self._link_dependencies(call)
        for call in list(run.calls.values()):
            if call.status == PENDING and not call.dormant and call.deps_pending == 0:
                self._on_ready(call)
        for call in run.calls.values():
            # As for new calls: a function's first executor starts while its calls still wait.
            if (call.status == PENDING and not call.dormant and call.kind in RUNS_CODE
                    and not self._waits_for_signal(call)):
                self.dispatcher.start_first(call.app, call.function, run_id)
        for call in list(run.calls.values()):
            if call.status == SUCCEEDED and (call.tail_parents or call.collectors):
                self._notify(call)
        root = run.calls.get(run.root_id)
        if root is not None and root.status == SUCCEEDED:
            self._notify(root)
        self._arm_budget(run)
        self._schedule_flush()
        return run

    def _learn_durations(self, app: AppSpec) -> None:
        """Give the dispatcher how long `app`'s calls took in earlier runs and how many ran at
        once (once per application; from then on its own runs keep it up to date,
        `_finish_run`)."""
        if app.name not in self.dispatcher.durations:
            self.dispatcher.learn_durations(app.name, self.store.call_durations(app.name),
                                            self.store.call_widths(app.name))

    def rerun_run(self, app: AppSpec, origin_id: str, function: str,
                  budget: Mapping[str, int | float | None] | None = None) -> RunState:
        """A new run of `app` with the input of run `origin_id`, reusing its checkpoints that do
        not depend on `function`'s calls and executing the rest with `app`'s code
        (`engine.scheduler.rerun`). Its row and copied calls commit together, then it is
        claimed and started as a resumed run. `budget` replaces limits of `app`'s budget."""
        run_id = new_run_id()
        rerun.prepare(self.store, origin_id, function, app, run_id=run_id, root_id=root_call_id(run_id),
                      status=RunStatus.RUNNING, backend=self.backend.name)
        if budget:
            self.store.update_run(run_id, budget=dump_budget(app.budget().updated(budget), 0.0))
        self.store.commit()
        if not self.leases.claim(run_id):
            raise InfrastructureError(f"run {run_id} was taken by another process as it was created")
        return self.resume_run(app, run_id)

    def _resumed_budget(self, run: RunState, row: RunRow, rows: list[CallRow],
                        changes: Mapping[str, int | float | None] | None) -> RunBudget:
        """The budget a resumed run goes on with: its stored one (the application's for a run
        from before budgets) with `changes`, and its use so far. A run whose driver died
        (still `running`) counts that try up to the last call event it checkpointed."""
        stored, elapsed = load_budget(row.budget)
        limits = (stored if stored is not None else run.app.budget()).updated(changes or {})
        since = row.resumed_at or row.started_at
        if row.status == RunStatus.RUNNING and since is not None:
            last = max((t for r in rows for t in (r.created_at, r.started_at, r.ended_at) if t is not None),
                       default=since)
            elapsed += max(0.0, last - since)
        budget = RunBudget(limits, elapsed)
        budget.load(run.calls.values())
        return budget

    def _arm_budget(self, run: RunState) -> None:
        if run.budget is not None and self._loop is not None:
            run.budget.arm(self._loop, run, lambda r, failure: self._budget_exceeded(r.calls[r.root_id], failure))

    def _budget_exceeded(self, call: CallState, failure: pb.Failure) -> None:
        """`call` crossed its run's budget (`engine.scheduler.budgets`): it fails with
        `BudgetExceeded`, and so does the run, at once. Its executor is stopped if it is running
        (as a cancel stops it), and `_finish_run` stops every other call of the run: nothing of
        the run starts after this. A resume runs `call` again and reuses every finished call."""
        run = call.run
        if run.done.is_set():
            return
        if call.status == RUNNING and call.executor is not None:
            self.dispatcher.retire_soon(call.executor)
            if call.task is not None and not call.task.done():
                call.task.cancel()
        log.info("run %s: %s", run.run_id, failure.message)
        self._finish_call_failed(call, failure)
        root = run.calls[run.root_id]
        if root.status == TAIL:
            self._finish_call_failed(root, failure)
        self._finish_run(run, RunStatus.FAILED, failure=failure)
        self._schedule_flush()

    def cancel_run(self, run_id: str, reason: str = "cancelled") -> None:
        run = self.runs.get(run_id)
        if run is None or run.done.is_set():
            return
        failure = wire.make_failure(pb.FAILURE_KIND_CANCELLED, reason, function="", call_id="")
        for call in run.calls.values():
            if call.status not in FINAL and call.status != TAIL:
                self._cancel_call(call, failure)
        root = run.calls[run.root_id]
        if root.status == TAIL:
            self._finish_call_failed(root, failure, error_kind="cancelled")
        self._finish_run(run, RunStatus.CANCELLED, failure=failure)
        self._schedule_flush()

    def _lost(self, run_ids: set[str], why: str = "its lease was taken over by another process") -> None:
        """Another process holds these runs now (this one was paused or cut off past its
        lease): stop driving them at once, writing nothing. Their running calls' executors are
        stopped, so that their code stops too; the new owner runs those calls again."""
        for run_id in run_ids:
            run = self.runs.get(run_id)
            if run is None or run.done.is_set():
                continue
            log.warning("run %s: %s; stopped driving it", run_id, why)
            run.lost = True
            for call in run.calls.values():
                if call.retry_handle is not None:
                    call.retry_handle.cancel()
                    call.retry_handle = None
                if call.status == RUNNING and call.executor is not None:
                    self.dispatcher.retire_soon(call.executor)
                if call.task is not None and not call.task.done():
                    call.task.cancel()
                if call.status not in FINAL:
                    call.status = CANCELLED
                for w in call.waiters:
                    w.event.set()
            run.done.set()
            self.tracer.run_ended(run)
            if self.on_event is not None:
                self.on_event(run, run.calls[run.root_id])

    # =========================================================================================
    # the graph

    def _add_call(self, run: RunState, spec: pb.FutureSpec, parent_id: str | None) -> CallState:
        """Add a future to the run, or map it onto the existing call with the same id."""
        digest = wire.args_digest(spec.arguments)
        existing = run.calls.get(spec.id)
        if existing is not None and existing.dormant:
            # Resumed, and waiting for its re-executed parent to create it again: now it has.
            existing.dormant = False
            if existing.args_digest != digest:
                existing.spec, existing.args_digest = spec, digest
                self.store.update_call(run.run_id, existing.id, spec=spec.SerializeToString(), args_digest=digest)
            self._link_dependencies(existing)
            if existing.status == PENDING and existing.deps_pending == 0:
                self._on_ready(existing)
            return existing
        if existing is not None:
            if existing.args_digest == digest or existing.status not in (SUCCEEDED, PENDING, QUEUED):
                return existing  # a checkpoint: counted in `run.reused` when it was loaded
            if existing.status in (PENDING, QUEUED):
                # Not started yet: it runs with the arguments its parent gives it now.
                existing.spec, existing.args_digest = spec, digest
                self.store.update_call(run.run_id, existing.id, spec=spec.SerializeToString(), args_digest=digest)
                return existing
            # Same id, new arguments: the parent took another path. The checkpoint does not
            # answer this call; run it again with the new arguments.
            log.info("call %s (%s): arguments changed, running it again", spec.id, spec.function)
            self._set_status(existing, PENDING)
            existing.spec, existing.args_digest = spec, digest
            existing.result = existing.result_digest = None
            self.store.update_call(run.run_id, existing.id, spec=spec.SerializeToString(), args_digest=digest,
                                   status=PENDING, result=None, result_digest=None)
            self._link_dependencies(existing)
            if existing.deps_pending == 0:
                self._on_ready(existing)
            return existing

        if run.budget is not None:
            refused = run.budget.admit(run, spec, parent_id)
            if refused is not None:
                raise BudgetRefused(refused)  # before it exists: it never runs (budgets.py)
        app = self._app_of(run, spec, parent_id)
        call = CallState(run, spec, parent_id, digest, self._settings_of(app, spec))
        call.app = app
        if call.kind == pb.NODE_KIND_SIGNAL:
            run.has_signals = True
        run.calls[call.id] = call
        run.counts[PENDING] += 1
        self.tracer.call_added(call)
        self.store.insert_call(CallRow(
            call_id=call.id, run_id=run.run_id, parent_id=parent_id, function=call.function,
            kind=wire.KIND_NAMES[call.kind], spec=spec.SerializeToString(), args_digest=digest,
            status=PENDING, created_at=call.created_at,
        ))
        self._emit(call)
        self._link_dependencies(call)
        if call.kind in RUNS_CODE and not self._closed and not self._waits_for_signal(call):
            # Start the function's first executor now, while the call waits for its
            # dependencies: a fan-in's combiner is then warm when its inputs are done. Not for
            # a call that waits for a signal: that may take days, and nothing is held meanwhile.
            self.dispatcher.start_first(call.app, call.function, run.run_id)
        if call.status == PENDING and call.deps_pending == 0:
            self._on_ready(call)
        return call

    def _app_of(self, run: RunState, spec: pb.FutureSpec, parent_id: str | None) -> AppSpec:
        """The application whose code runs a new call: for a call of another application, that
        one (resolved by name: `self.applications`); else its creator's (the run's for the
        root), so that what another application's call creates runs on its code too."""
        if spec.kind == pb.NODE_KIND_APPLICATION:
            try:
                return self.applications(spec.function)
            except (SDKUsageError, KeyError) as exc:
                raise wire.InvalidMessage(f"cannot call application {spec.function!r}: {exc}") from None
        parent = run.calls.get(parent_id or "")
        return parent.app if parent is not None else run.app

    @staticmethod
    def _settings_of(app: AppSpec, spec: pb.FutureSpec) -> FunctionSettings:
        """The settings a call runs with. A signal runs nothing: it carries its application's
        entry point's, which nothing reads."""
        if spec.kind == pb.NODE_KIND_SIGNAL:
            return app.settings(app.name)
        return app.settings(spec.function)

    @staticmethod
    def _waits_for_signal(call: CallState) -> bool:
        """Whether `call` takes the value of a signal future that has none yet."""
        if not call.has_refs or not call.run.has_signals:
            return False  # (has_refs is set by `_link_dependencies`, which runs first)
        for ref in wire.refs(call.spec.arguments):
            dep = call.run.calls.get(ref)
            if dep is not None and dep.kind == pb.NODE_KIND_SIGNAL and dep.status != SUCCEEDED:
                return True
        return False

    def _link_dependencies(self, call: CallState) -> None:
        call.deps_pending = 0
        refs = wire.refs(call.spec.arguments)
        call.has_refs = bool(refs)
        for ref in refs:
            dep = call.run.calls.get(ref)
            if dep is None:
                raise wire.InvalidMessage(f"future {call.id} depends on unknown future {ref}")
            if dep.status == SUCCEEDED:
                continue
            if dep.status in (FAILED, CANCELLED) and dep.failure is not None:
                self._finish_call_failed(call, dep.failure, error_kind="dependency_failed")
                return
            dep.dependants = add_link(dep.dependants, call)
            call.deps_pending += 1

    def _link_tail(self, call: CallState, target: CallState) -> None:
        call.tail_id = target.id
        if target.status == SUCCEEDED:
            self._succeed(call, target.result, target.result_digest)
        elif target.status in (FAILED, CANCELLED) and target.failure is not None:
            self._finish_call_failed(call, target.failure)
        else:
            target.tail_parents = add_link(target.tail_parents, call)

    def _on_ready(self, call: CallState) -> None:
        """All dependencies have values: queue a call, wait for a signal, or expand a map/reduce."""
        if call.kind == pb.NODE_KIND_SIGNAL:
            self._wait_for_signal(call)
            return
        if call.kind in RUNS_CODE:
            self._set_status(call, QUEUED)
            self.dispatcher.queue(call)
            return
        try:
            self._expand(call)
        except BudgetRefused as refused:
            self._budget_exceeded(call, refused.failure)
        except Exception as exc:  # noqa: BLE001 - a bad map input fails the call, not the engine
            self._finish_call_failed(call, wire.failure_from_exception(
                exc, function=call.function, call_id=call.id, kind=pb.FAILURE_KIND_REQUEST_ERROR))

    def _expand(self, call: CallState) -> None:
        run = call.run
        args = call.spec.arguments.args
        items = self.values.items(run, args[0])
        fn = call.function
        if call.kind == pb.NODE_KIND_MAP:
            self._set_status(call, TAIL)
            self.store.update_call(call.run.run_id, call.id, status=TAIL)
            children = []
            for i, item in enumerate(items):
                spec = pb.FutureSpec(id=child_id(call.id, i, "call", fn), kind=pb.NODE_KIND_CALL,
                                     function=fn, arguments=pb.Arguments(args=[item]))
                children.append(self._add_call(run, spec, parent_id=call.id))
            call.children = children
            call.deps_pending = 0
            for child in children:
                if child.status in (FAILED, CANCELLED) and child.failure is not None:
                    self._finish_call_failed(call, child.failure, error_kind="dependency_failed")
                    return
                if child.status != SUCCEEDED:
                    child.collectors = add_link(child.collectors, call)
                    call.deps_pending += 1
            if call.deps_pending == 0:
                self._collect(call)
            return
        # reduce: [initial] + items, folded left
        seq = ([args[1]] if len(args) > 1 else []) + items
        if not seq:
            raise ValueError(f"reduce of {fn} over an empty list with no initial value")
        self._set_status(call, TAIL)
        self.store.update_call(call.run.run_id, call.id, status=TAIL)
        acc = seq[0]
        for i, item in enumerate(seq[1:], start=1):
            spec = pb.FutureSpec(id=child_id(call.id, i, "call", fn), kind=pb.NODE_KIND_CALL,
                                 function=fn, arguments=pb.Arguments(args=[acc, item]))
            acc = pb.Arg(ref=self._add_call(run, spec, parent_id=call.id).id)
        if acc.WhichOneof("kind") == "ref":
            self.store.update_call(call.run.run_id, call.id, tail_id=acc.ref)
            self._link_tail(call, run.calls[acc.ref])
        else:
            self._finish_with_payload(call, acc.value)

    def _collect(self, call: CallState) -> None:
        values = [wire.loads(self.values.result_bytes(c)) for c in call.children]
        self._finish_call_ok(call, wire.dumps(values))

    # =========================================================================================
    # signals (engine.scheduler.signals)

    def _wait_for_signal(self, call: CallState) -> None:
        """Park a signal future until a signal of its name is in the store (or its timeout,
        counted from its creation, passes). It stays `pending`: nothing runs it."""
        run = call.run
        run.waiting[call.id] = call
        options = call.spec.signal
        if options.HasField("timeout") and self._loop is not None:
            delay = max(0.0, call.created_at + options.timeout - time.time())
            call.retry_handle = self._loop.call_later(delay, self._signal_due, call)
        self._deliver_signals(run)

    def signal_arrived(self, run_id: str) -> None:
        """A signal of `run_id` was just committed (by this process's API): deliver it now
        rather than at the next poll."""
        run = self.runs.get(run_id)
        if run is not None:
            self._deliver_signals(run)
            self._schedule_flush()

    def _poll_signals(self) -> None:
        """Signals stored by other processes (`engine signal` against the state directory, a
        server that does not drive the run): looked for every lease-renewal interval."""
        for run in list(self.runs.values()):
            if run.waiting:
                self._deliver_signals(run)
        self._schedule_flush()

    def _deliver_signals(self, run: RunState, rows: list[SignalRow] | None = None) -> None:
        """Complete every waiting signal future of `run` that a stored signal answers, in the
        order they began to wait. A one-shot name's signal answers every future of it; a
        repeatable name's are taken one per future, oldest first, the taking written with the
        future's value (so a resumed future takes the same one)."""
        if not run.waiting or run.done.is_set() or run.lost:
            return
        if rows is None:
            rows = self.store.signals(run.run_id)
        by_name: dict[str, list[SignalRow]] = {}
        for row in rows:
            by_name.setdefault(row.name, []).append(row)
        for call in list(run.waiting.values()):
            sent = by_name.get(call.function)
            if not sent:
                continue
            if call.spec.signal.repeatable:
                chosen = (next((s for s in sent if s.call_id == call.id), None)
                          or next((s for s in sent if s.call_id is None), None))
                if chosen is None:
                    continue
                if chosen.call_id is None:
                    self.store.take_signal(run.run_id, chosen.name, chosen.seq, call.id)
                    sent[sent.index(chosen)] = dataclasses.replace(chosen, call_id=call.id)
            else:
                chosen = sent[0]
            del run.waiting[call.id]
            if call.retry_handle is not None:
                call.retry_handle.cancel()
                call.retry_handle = None
            call.started_at = call.created_at
            self.store.update_call(run.run_id, call.id, started_at=call.started_at)
            self._finish_call_ok(call, wire.dumps(json.loads(chosen.payload)))

    def _signal_due(self, call: CallState) -> None:
        """A signal future's timeout passed: one last look in the store, then it fails with
        `SignalTimeout` (and so does what depends on it)."""
        call.retry_handle = None
        run = call.run
        if call.id not in run.waiting or run.done.is_set() or run.lost:
            return
        try:
            self._deliver_signals(run)
        except StoreUnavailable as exc:
            self.store_down(exc)
            return
        if run.waiting.pop(call.id, None) is None:
            self._schedule_flush()
            return
        failure = wire.make_failure(
            pb.FAILURE_KIND_SIGNAL_TIMEOUT,
            f"no signal {call.function!r} arrived within {call.spec.signal.timeout:g} s",
            function=call.function, call_id=call.id)
        self._finish_call_failed(call, failure)
        self._schedule_flush()

    # =========================================================================================
    # the dispatcher's side (engine.scheduler.dispatch): what it tells the scheduler. With
    # `_attempt_failed`, `_finish_call_failed` (outcomes) and `_schedule_flush`, all it calls here.

    def _attempt_started(self, call: CallState) -> float:
        """The dispatcher gave `call` an executor slot: a new attempt begins, counted in the store
        too, and `call` is running (a new run's root: its application's other executors start
        now, those kept warm and those its last run used, `Dispatcher.prestart`). Returns when
        it started."""
        call.attempts += 1
        call.executions += 1
        call.started_at = started_at = time.time()
        self._set_status(call, RUNNING)
        run = call.run
        if run.prestart and call.id == run.root_id:
            run.prestart = False
            self.dispatcher.prestart(run.app, run.run_id, learned=True)
        self.context.clear_progress(call)
        self.store.count_execution(call.run.run_id, call.id, call.attempts, started_at)
        return started_at

    def _take_outcome(self, call: CallState, ex: ExecutorState, response: pb.RunResponse | None,
                      failure: pb.Failure | None) -> None:
        """Act on an attempt's response (or failure), unless the call was cancelled meanwhile."""
        dropped = call.status != RUNNING or call.run.done.is_set()
        if dropped:
            pass  # cancelled while running: drop the outcome
        elif response is not None:
            if response.logs:
                self.store.append_log(call.run.run_id, call.id, call.function, call.attempts, response.logs)
            if response.HasField("metrics"):
                self.context.record_metrics(call, response.metrics)
            self.access.screen_response(ex, call, response)
            outcome = response.WhichOneof("outcome")
            if outcome == "value":
                self._finish_with_payload(call, response.value)
            elif outcome == "tail_call":
                self._tail_call(call, response.tail_call, self.access.frozen(ex))
            else:
                self._attempt_failed(call, response.failure)
        elif failure is not None:
            self._attempt_failed(call, failure)
        self.access.call_ended(ex, call)
        self.tracer.attempt_ended(call, response, failure, dropped)

    def _expects_calls(self, pool: Pool) -> bool:
        """Whether a call of `pool` waits for its dependencies (not for a signal, which may take
        days) in a run being driven. A scan of the runs' calls, once per idle timeout, newest
        first: a fan-in's combiner is created after its hundred thousand inputs."""
        for run in self.runs.values():
            if run.done.is_set() or run.lost or not run.counts[PENDING]:
                continue
            for call in reversed(run.calls.values()):
                if (call.status == PENDING and call.function == pool.function and not call.dormant
                        and call.kind in RUNS_CODE and call.app.code_digest == pool.app.code_digest
                        and not self._waits_for_signal(call)):
                    return True
        return False

    # =========================================================================================
    # outcomes

    def _tail_call(self, call: CallState, tail: pb.TailCall, grant: Grant | None = None) -> None:
        """`call` returned a tail call: add its graph, then hand the caller's value over to it.
        `grant`: what the caller's executor could read when it returned (`Access.frozen`),
        which the futures may pass on. A graph of up to `TAIL_SLICE` futures is added now; a
        larger one by `_add_tail`, in slices, on a task of its own (the call's `task`:
        cancelling the call stops it)."""
        if len(tail.futures) > TAIL_SLICE and self._loop is not None:
            call.task = asyncio.ensure_future(self._add_tail(call, tail, grant))
            return
        if self._screen_futures(call, tail.futures, grant) and self._add_futures(call, tail.futures):
            self._tail_added(call, tail)

    async def _add_tail(self, call: CallState, tail: pb.TailCall, grant: Grant | None) -> None:
        """Check a large tail call's futures, then add them, `TAIL_SLICE` at a time, serving
        the loop (and committing) between two slices; the calls of a slice that are ready are
        dispatched while the next ones are added.

        Every future is checked, and the run's budget for all of them, before any is added, so
        a refused graph adds nothing. Adding is not atomic, and need not be: until the caller's
        `tail` state commits — with the last slice — the caller is `running` in the store, so a
        crash midway leaves it to run again on resume, while the calls committed so far wait
        (dormant) for it to create them again under the same deterministic ids; those that
        finished are reused, never run twice.
        Futures come in the SDK's order, dependencies first, so a slice references only calls
        that exist. It stops when the caller stops being `running` (cancelled, its run finished
        or lost) or the scheduler closes."""
        run = call.run
        try:
            self.dispatcher.prestart_tail(call, tail)
            futures = tail.futures
            slices = [futures[i:i + TAIL_SLICE] for i in range(0, len(futures), TAIL_SLICE)]
            for adding in (False, True):
                for part in slices:
                    await asyncio.sleep(0)  # serve the loop: starts, streams, commits, dispatch
                    if call.status != RUNNING or run.done.is_set() or self._closed:
                        return
                    done = self._add_futures(call, part) if adding else self._screen_futures(call, part, grant)
                    self._schedule_flush()
                    if not done:
                        return
                if not adding and run.budget is not None:
                    # Refused whole, before its first slice starts (`RunBudget.admit_all`).
                    refused = run.budget.admit_all(run, futures, call.id)
                    if refused is not None:
                        self._budget_exceeded(call, refused)
                        return
            self._tail_added(call, tail)
            self._schedule_flush()
        finally:
            task_done(call, asyncio.current_task())

    def _screen_futures(self, call: CallState, specs: Iterable[pb.FutureSpec], grant: Grant | None) -> bool:
        """Whether futures of `call`'s tail call may be added: well formed, and passing only
        values its executor could read (`Access.screen_futures`). If not, `call` failed."""
        try:
            for spec in specs:
                wire.validate_spec(spec)
        except wire.InvalidMessage as exc:
            self._bad_tail(call, exc)
            return False
        refused = self.access.screen_futures(grant, call, specs)
        if refused is not None:
            self._attempt_failed(call, refused)
            return False
        return True

    def _add_futures(self, call: CallState, specs: Iterable[pb.FutureSpec]) -> bool:
        """Add futures of `call`'s tail call; False when one is refused (then `call` failed)."""
        run = call.run
        try:
            for spec in specs:
                self._add_call(run, spec, parent_id=call.id)
        except (wire.InvalidMessage, KeyError) as exc:
            self._bad_tail(call, exc)
            return False
        except BudgetRefused as refused:
            self._budget_exceeded(call, refused.failure)
            return False
        return True

    def _tail_added(self, call: CallState, tail: pb.TailCall) -> None:
        """Every future of the tail call exists: the caller is finished (`tail`), with its
        target's value once that has one."""
        target = call.run.calls.get(tail.root_id)
        if target is None:
            self._bad_tail(call, wire.InvalidMessage(f"tail call to unknown future {tail.root_id}"))
            return
        call.ended_at = time.time()
        self._set_status(call, TAIL)
        self.store.update_call(call.run.run_id, call.id, status=TAIL, tail_id=target.id, ended_at=call.ended_at)
        self._link_tail(call, target)

    def _bad_tail(self, call: CallState, exc: Exception) -> None:
        self._finish_call_failed(call, wire.make_failure(
            pb.FAILURE_KIND_INTERNAL, f"bad tail call from {call.function}: {exc}",
            function=call.function, call_id=call.id))

    def _attempt_failed(self, call: CallState, failure: pb.Failure) -> None:
        # For the reader (the dashboard's timeline): the calls row keeps only the latest attempt.
        self.store.record_failed_attempt(call.run.run_id, call.id, call.attempts, call.started_at,
                                         wire.failure_kind_name(failure.kind), failure.message)
        policy = call.settings.retries
        # A failure that escaped from one of this call's children names that child: the child
        # already had its retries, and re-running the parent would only meet the same outcome.
        own = not failure.call_id or failure.call_id == call.id
        if own and failure.kind in wire.RETRYABLE and call.attempts <= policy.max_retries:
            delay = policy.delay(call.attempts)
            log.info("%s %s failed (attempt %d): %s; retrying in %.2fs", call.function, call.id,
                     call.attempts, failure.message, delay)
            self._set_status(call, QUEUED)
            self.store.update_call(call.run.run_id, call.id, status=QUEUED, failure=failure.SerializeToString(),
                                   error_kind=wire.failure_kind_name(failure.kind),
                                   error_message=failure.message)
            if self._loop is not None:
                call.retry_handle = self._loop.call_later(delay, self.dispatcher.requeue, call)
            return
        self._finish_call_failed(call, failure)
        if own and failure.kind == pb.FAILURE_KIND_REQUEST_ERROR:
            # RequestError fails the request, not only the call: a caller does not get to catch
            # it and go on (Tensorlake's semantics). Everything else of the run stops now.
            run = call.run
            root = run.calls[run.root_id]
            if root.status == TAIL:
                self._finish_call_failed(root, failure)
            self._finish_run(run, RunStatus.FAILED, failure=failure)

    def _finish_call_ok(self, call: CallState, data: bytes) -> None:
        result, digest = self.store.keep(data)
        self._succeed(call, result, digest)

    def _finish_with_payload(self, call: CallState, payload: pb.Payload) -> None:
        if not payload.blob:
            self._finish_call_ok(call, payload.data)
        elif payload.blob.startswith(wire.DEFERRED_PREFIX) and payload.blob in self.access.deferred:
            self._succeed_deferred(call, self.access.deferred[payload.blob])
        elif self.store.has_blob(payload.blob):
            self._succeed(call, None, payload.blob)  # put by the executor through Blobs
        else:
            self._attempt_failed(call, wire.make_failure(
                pb.FAILURE_KIND_EXECUTOR_LOST, f"{call.function} returned blob {payload.blob[:12]}, "
                "which never reached the scheduler", function=call.function, call_id=call.id))

    def _succeed_deferred(self, call: CallState, deferred: Deferred) -> None:
        """`call` returned a value adopted before it was hashed (`exchange.Deferred`). The calls
        that wait only for it are queued now and given it by its token; `call` stays running —
        in the store too — until `_commit_deferred` checkpoints it with the value's digest.
        Everything else that waits for `call` (awaiting parents, tail callers, the run's end)
        waits for that checkpoint, as for any call."""
        deferred.owner.deferred.discard(deferred.token)  # type: ignore[attr-defined]
        call.result_digest = deferred.token  # in memory only, for `Values.resolve_arguments`
        early = [dep for dep in call.dependants
                 if dep.deps_pending == 1 and dep.status == PENDING and dep.kind in RUNS_CODE]
        if early:
            handed = {id(dep) for dep in early}
            call.dependants = [dep for dep in call.dependants if id(dep) not in handed] or NO_LINKS
            for dep in early:
                dep.deps_pending = 0
                self._on_ready(dep)
        call.task = asyncio.ensure_future(self._commit_deferred(call, deferred, early))

    async def _commit_deferred(self, call: CallState, deferred: Deferred, early: list[CallState]) -> None:
        """Checkpoint `call` once its deferred value is hashed, fsynced and named, then let the
        calls given it early go on (`deferred.committed`). If the value cannot be stored, `call`
        fails and so do they (their attempts are dropped); if the run stopped meanwhile (cancelled,
        lease lost), nothing is written."""
        try:
            try:
                assert deferred.digest is not None
                digest = await asyncio.shield(deferred.digest)
            except OSError as exc:
                call.result_digest = None
                if call.status == RUNNING and not call.run.done.is_set():
                    failure = wire.make_failure(
                        pb.FAILURE_KIND_INTERNAL, f"the value {call.function} returned could not be stored: {exc}",
                        function=call.function, call_id=call.id)
                    self._finish_call_failed(call, failure)
                    for dep in early:
                        self._finish_call_failed(dep, failure, error_kind="dependency_failed")
                    self._flush()
                return
            if call.status == RUNNING and not call.run.done.is_set():
                self._succeed(call, None, digest)
                self._flush()  # committed now, not at the end of this loop turn
        finally:
            if call.result_digest == deferred.token:
                call.result_digest = None
            self.access.deferred.pop(deferred.token, None)
            deferred.committed.set()
            task_done(call, asyncio.current_task())

    def _succeed(self, call: CallState, result: bytes | None, digest: str | None) -> None:
        """Record the call's value: `result` inline or the blob `digest` (one of the two)."""
        call.ended_at = time.time()
        self._set_status(call, SUCCEEDED)
        call.result, call.result_digest = result, digest
        self.store.update_call(call.run.run_id, call.id, status=SUCCEEDED, result=result, result_digest=digest,
                               ended_at=call.ended_at, failure=None, error_kind=None,
                               error_message=None)
        self._notify(call)

    def _finish_call_failed(self, call: CallState, failure: pb.Failure, error_kind: str | None = None) -> None:
        if call.status in FINAL:
            return
        call.run.waiting.pop(call.id, None)
        if call.retry_handle is not None:
            call.retry_handle.cancel()
            call.retry_handle = None
        # A caller that handed off by tail call fails with its tail, but its stored state stays
        # `tail`: it finished executing, and resume must relink it, never run it again.
        stored = TAIL if call.status == TAIL else FAILED
        call.failure = failure
        call.ended_at = time.time()
        self._set_status(call, FAILED)
        self.store.update_call(call.run.run_id, call.id, status=stored, failure=failure.SerializeToString(),
                               error_kind=error_kind or wire.failure_kind_name(failure.kind),
                               error_message=failure.message, ended_at=call.ended_at)
        self._notify(call)

    def _cancel_call(self, call: CallState, failure: pb.Failure) -> None:
        if call.status == RUNNING and call.executor is not None:
            # Its code is still running there: stop the executor, so that nothing of a
            # cancelled run keeps working, nor takes a slot another call would be given.
            self.dispatcher.retire_soon(call.executor)
        if call.task is not None and not call.task.done():
            call.task.cancel()
        if call.retry_handle is not None:
            call.retry_handle.cancel()
            call.retry_handle = None
        call.run.waiting.pop(call.id, None)
        call.failure = failure
        call.ended_at = time.time()
        self._set_status(call, CANCELLED)
        self.store.update_call(call.run.run_id, call.id, status=CANCELLED, error_kind="cancelled",
                               error_message=failure.message, ended_at=call.ended_at)
        for w in call.waiters:
            w.event.set()

    def _notify(self, call: CallState) -> None:
        """Act on a final call once its state is committed (see `_flush`)."""
        self._to_notify.append(call)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Commit, then release everything that depended on what was committed. Acting may
        write more (a tail caller finishing, a dependant failing): loop until quiet."""
        self._flush_scheduled = False
        try:
            while True:
                self.context.write_progress()
                self.store.commit()
                batch, self._to_notify = self._to_notify, []
                if not batch:
                    break
                for call in batch:
                    self._propagate(call)
            if self._failing:
                self._finish_failing()
        except StoreUnavailable as exc:
            self.store_down(exc)

    def store_down(self, exc: Exception) -> None:
        """The store stopped answering: what was not committed is gone, and nothing says this
        process still holds its runs when it comes back. Stop driving every run (as if each
        lease were lost); whoever holds them next — this process again, once the store answers
        and it claims them, or another — resumes them from their checkpoints."""
        log.error("the store stopped answering (%s): stopped driving %d run(s)", exc, len(self.runs))
        self.store_failed = True
        self.store.rollback()
        self._to_notify = []
        for run_id in list(self.store.fences):
            self.store.fences[run_id] = None
        self._lost({r for r, run in self.runs.items() if not run.done.is_set()},
                   "the store stopped answering, so its lease may be another's by now")

    def _propagate(self, call: CallState) -> None:
        run = call.run
        if run.lost:
            return
        for w in call.waiters:
            if w.satisfied(run.calls):
                w.event.set()
        if call.status == SUCCEEDED:
            dependants, call.dependants = call.dependants, NO_LINKS
            for dep in dependants:
                dep.deps_pending -= 1
                if dep.deps_pending == 0 and dep.status == PENDING:
                    self._on_ready(dep)
            parents, call.tail_parents = call.tail_parents, NO_LINKS
            for parent in parents:
                if parent.status == TAIL:
                    self._succeed(parent, call.result, call.result_digest)
            collectors, call.collectors = call.collectors, NO_LINKS
            for collector in collectors:
                collector.deps_pending -= 1
                if collector.deps_pending == 0 and collector.status == TAIL:
                    self._collect(collector)
            if call.id == run.root_id:
                self._finish_run(run, RunStatus.SUCCEEDED, result=call.result, result_digest=call.result_digest)
        elif call.status == FAILED and call.failure is not None:
            for dep in call.dependants:
                self._finish_call_failed(dep, call.failure, error_kind="dependency_failed")
            for parent in [*call.tail_parents, *call.collectors]:
                self._finish_call_failed(parent, call.failure)
            call.dependants, call.tail_parents, call.collectors = NO_LINKS, NO_LINKS, NO_LINKS
            if call.id == run.root_id:
                self._run_failed(run, call.failure)

    def _run_failed(self, run: RunState, failure: pb.Failure) -> None:
        """The root failed, so the run will. With on_failure "cancel", end it now: every call
        still running is stopped. With "finish" (the default), every call that can still
        progress — it does not depend on the failed one — runs to completion and is
        checkpointed first, so that a resume re-runs only the failed branch; the run ends in
        `_flush` once no call is queued or running."""
        if run.app.on_failure == "cancel" or not self._progressing(run):
            self._finish_run(run, RunStatus.FAILED, failure=failure)
            return
        if run.failing is None:
            run.failing = failure
            self._failing[run.run_id] = run
            log.info("run %s will fail (%s); letting %d call(s) that do not depend on the failure "
                     "finish first", run.run_id, wire.describe(failure),
                     run.counts[QUEUED] + run.counts[RUNNING])

    @staticmethod
    def _progressing(run: RunState) -> bool:
        """Whether a call of the run is queued (or backing off) or running: when none is, no
        pending call can become ready either."""
        return bool(run.counts[QUEUED] + run.counts[RUNNING])

    def _finish_failing(self) -> None:
        for run in list(self._failing.values()):
            if run.done.is_set():
                del self._failing[run.run_id]
            elif not self._progressing(run) and run.failing is not None:
                del self._failing[run.run_id]
                self._finish_run(run, RunStatus.FAILED, failure=run.failing)

    def _finish_run(self, run: RunState, status: str, *, result: bytes | None = None,
                    result_digest: str | None = None, failure: pb.Failure | None = None) -> None:
        if run.done.is_set():
            return
        run.status = status
        run.failure = failure
        fields: dict[str, Any] = {"status": status, "ended_at": time.time()}
        if result is not None or result_digest is not None:
            fields.update(result=result, result_digest=result_digest)
        if failure is not None:
            fields.update(failure=failure.SerializeToString(),
                          error_kind=wire.failure_kind_name(failure.kind),
                          error_message=wire.describe(failure))
        if run.budget is not None:
            fields["budget"] = run.budget.ended()
        self.store.update_run(run.run_id, **fields)
        observed = self.dispatcher.observed_durations(run.app.name)
        if observed:
            # (A width is kept with its function's duration: what a restarted engine reads too.)
            widths = {function: n for function, n in run.widths.items() if function in observed}
            self.store.record_call_durations(run.run_id, run.app.name, observed, widths)
            self.dispatcher.learn_durations(run.app.name, observed, widths)  # for later runs
        # Calls nobody needs any more (started with .run() and never awaited) stop here.
        cancel = wire.make_failure(pb.FAILURE_KIND_CANCELLED, f"run {status} before this call finished",
                                   function="", call_id="")
        for call in run.calls.values():
            if call.status in (PENDING, QUEUED, RUNNING):
                self._cancel_call(call, cancel)
        self.store.commit()
        self.tracer.run_ended(run)
        if run.lost:
            return  # the final state was not ours to write (see `_lost`)
        self.leases.release(run.run_id)
        run.done.set()
        if self.on_event is not None:
            self.on_event(run, run.calls[run.root_id])

    # =========================================================================================
    # the callback service's side

    async def submit_children(self, run_id: str, parent_id: str, specs: list[pb.FutureSpec]) -> None:
        """Add the futures a running call started (`Submit`); returns once all of them exist.
        Every one is checked first — well formed, naming functions of the app, and the run's
        budget for all of them — so a refused batch adds nothing (raises InvalidMessage,
        SDKUsageError or BudgetRefused). A batch of more than
        `TAIL_SLICE` is added as a large tail call is, that many at a time with the loop served
        between slices; a crash midway leaves the parent running in the store, so resume runs
        it again and it creates the same ids. Raises InvalidMessage if the parent stops running
        meanwhile."""
        run = self._live_run(run_id)
        parent = run.calls.get(parent_id)
        if parent is None or parent.status != RUNNING:
            raise wire.InvalidMessage(f"call {parent_id} is not running in run {run_id}")
        for spec in specs:
            wire.validate_spec(spec)
            if spec.kind == pb.NODE_KIND_APPLICATION:
                self._app_of(run, spec, parent_id)  # raises InvalidMessage naming what is missing
            elif spec.kind != pb.NODE_KIND_SIGNAL and spec.function not in parent.app.functions:
                parent.app.settings(spec.function)  # raises with a clear message
        try:
            if run.budget is not None:
                refused = run.budget.admit_all(run, specs, parent_id)
                if refused is not None:
                    raise BudgetRefused(refused)
            for start in range(0, len(specs), TAIL_SLICE):
                if start:
                    self._schedule_flush()
                    await asyncio.sleep(0)  # serve the loop: starts, streams, commits, dispatch
                    if parent.status != RUNNING or run.done.is_set() or self._closed:
                        raise wire.InvalidMessage(f"call {parent_id} stopped while its futures were added")
                for spec in specs[start:start + TAIL_SLICE]:
                    self._add_call(run, spec, parent_id=parent_id)
        except BudgetRefused as refused:
            self._budget_exceeded(parent, refused.failure)
            raise  # the callback service answers the creating call with it
        self._schedule_flush()

    async def await_children(self, request: pb.AwaitRequest) -> pb.AwaitResponse:
        run = self._live_run(request.run_id)
        missing = [i for i in request.ids if i not in run.calls]
        if missing:
            raise wire.InvalidMessage(f"unknown futures {missing[:3]}")
        parent = run.calls.get(request.parent_call_id)
        mode = request.return_when or pb.RETURN_WHEN_ALL_COMPLETED
        waiter = Waiter(list(request.ids), mode)
        timeout = request.timeout if request.HasField("timeout") else None
        if not waiter.satisfied(run.calls):
            for i in waiter.ids:
                awaited = run.calls[i]
                awaited.waiters = add_link(awaited.waiters, waiter)
            ex = self._executor_of(parent)
            if ex is not None:
                ex.blocked += 1
                self.dispatcher.pump_all()  # a blocked executor frees room for the children it waits on
            try:
                await within(timeout, waiter.event.wait())
            except TimeoutError:
                pass
            finally:
                if ex is not None:
                    ex.blocked -= 1
                for i in waiter.ids:
                    c = run.calls.get(i)
                    if c is not None and isinstance(c.waiters, list) and waiter in c.waiters:
                        c.waiters.remove(waiter)
        response = pb.AwaitResponse()
        encoder = wire.PayloadEncoder(self.store)
        for i in request.ids:
            c = run.calls[i]
            if c.status == SUCCEEDED:
                response.outcomes.add(id=i, value=self.values.result_payload(c, encoder))
            elif c.status in (FAILED, CANCELLED) and c.failure is not None:
                response.outcomes.add(id=i, failure=c.failure)
        return response

    def _live_run(self, run_id: str) -> RunState:
        run = self.runs.get(run_id)
        if run is None:
            raise wire.InvalidMessage(f"unknown run {run_id}")
        if run.done.is_set():
            raise wire.InvalidMessage(f"run {run_id} is already {run.status}")
        return run

    # =========================================================================================
    # what the control plane reads (engine.server.control): counts and ids, never the graph

    def subscribe(self, *, on_event: Callable[[RunState, CallState], None],
                  on_metrics: Callable[[RunState, CallState, pb.CallMetrics], None]) -> None:
        """Be told of every call transition and run end (`on_event`, on the loop, inside the
        scheduler's step: record and wake, never act), and of each attempt's
        RequestContext.metrics (`on_metrics`)."""
        self.on_event = on_event
        self.context.on_metrics = on_metrics

    def calls_in(self, status: str) -> int:
        """Calls of every run in memory with `status` (e.g. queued, running)."""
        return sum(r.counts[status] for r in self.runs.values())

    def executors_live(self) -> int:
        return self.dispatcher.executors_live()

    def executors_warm(self) -> int:
        """Blank executors of the warm pool ready now (`engine.scheduler.warm`)."""
        return len(self.dispatcher.warm.ready)

    def queued_call_ids(self, run_id: str) -> frozenset[str]:
        """Calls of a live run waiting for an executor slot: a state the store does not keep."""
        run = self.runs.get(run_id)
        if run is None or not run.counts[QUEUED]:
            return frozenset()
        return frozenset(c.id for c in run.calls.values() if c.status == QUEUED)

    def forget(self, run_id: str) -> None:
        """Drop a finished run's call graph from memory (a long-lived server must not keep every
        run it drove; the store has them)."""
        run = self.runs.get(run_id)
        if run is not None and run.done.is_set():
            del self.runs[run_id]

    def running_call(self, run_id: str, call_id: str) -> CallState:
        """The call `call_id` of run `run_id`, which must be running: what the request context's
        services accept a message from."""
        run = self._live_run(run_id)
        call = run.calls.get(call_id)
        if call is None or call.status != RUNNING:
            raise wire.InvalidMessage(f"call {call_id} is not running in run {run_id}")
        return call

    def _executor_of(self, call: CallState | None) -> ExecutorState | None:
        if call is None or call.status != RUNNING:
            return None
        return call.executor  # type: ignore[no-any-return]

    # =========================================================================================

    def _set_status(self, call: CallState, status: str) -> None:
        run = call.run
        counts = run.counts
        counts[call.status] -= 1
        counts[status] += 1
        if status == RUNNING:
            running = run.running[call.function] = run.running[call.function] + 1
            if running > run.widths.get(call.function, 0):
                run.widths[call.function] = running
        elif call.status == RUNNING:
            run.running[call.function] -= 1
        call.status = status
        if self.on_event is not None:
            self.on_event(call.run, call)

    def _emit(self, call: CallState) -> None:
        if self.on_event is not None:
            self.on_event(call.run, call)


def default_max_executors() -> int:
    return max(4, 4 * (os.cpu_count() or 1))


__all__ = ["InfrastructureError", "Scheduler", "new_run_id", "root_call_id"]
