"""The dispatcher: runs the calls that are ready on executors, and manages those executors.

The scheduler (`engine.scheduler.scheduler`) owns the call graph, the runs, their checkpoints and
what an outcome means; the dispatcher owns the executors. It is handed a call once the call is
`queued` (`queue`, `requeue`), puts it in its function's pool (`engine.scheduler.pools`), and
when an executor slot is free sends it there as one `RunRequest` on the executor's `Calls`
stream. Each attempt's outcome — a response, a timeout, or the executor gone (the backend asked
why) — goes back to the scheduler; the dispatcher decides nothing about a call's future.

Its side of the work:

- **Pools.** One per (code bundle, function). `pump` hands queued calls to free slots, the runs
  sharing a pool taking turns (`pools.FairQueue`), under the application's
  `max_concurrent_calls`; it starts executors as the queue needs them (`Pool.wanted`), up to
  `max_executors` engine-wide, `MAX_STARTS_IN_FLIGHT` per function at once. Pumping happens once
  per loop turn (`_want_pump`): a fan-out queues thousands of calls in one turn, handed out
  together. Some executors start ahead of their calls (`prestart`: a new run's warm minimum and
  the widths of the application's last run, once its root has its executor; `start_first`: a
  function's first while its call waits for inputs; `prestart_tail`: a large tail call's).
- **Executor lifecycle.** An executor is started (`_start_executor_async`: a blank one of the
  warm pool, `engine.scheduler.warm`, when one fits, else the function's own), initialised with
  the code bundle and a credential (`engine.scheduler.access`), used, reaped after
  `idle_timeout` idle (never below the function's warm minimum, nor while a call of its
  function waits for its inputs), and retired (`_retire`): stopped, its credential revoked.
- **Attempts.** `_dispatch` → `_send_call` → `_answered` → `_conclude` is the hot path, run once
  per call with no task per call (a fan-out dispatches a hundred thousand); an attempt that
  ends badly continues in a task (`_conclude_slow`).

Invariants, and where they are enforced:

- **One runner per call.** A call is dispatched only from `queued` (`pump` skips any other),
  and only `_dispatch` moves it to `running`; its executor slot (`ExecutorState.inflight`) is
  held until its response arrives, its timeout passes or its stream breaks, and is released
  exactly once per attempt (`_answered`/`_conclude_slow`, or `_attempt_dropped` when the attempt
  is cancelled).
- **A misbehaving executor is not reused.** An executor that timed out, lost its stream, or
  answered that it must go (`wire.retires_executor`) is retired — awaited — before its pool is
  pumped again.
- **Backends report; the scheduler decides.** An executor that died is asked why
  (`Backend.exit_info`), which becomes a typed failure (`_lost_failure`: out of memory or
  executor lost; a timeout in `_conclude_slow`); the scheduler applies the call's retry policy
  to it.
- **Nothing is written here.** The dispatcher holds no store: every change of a call's status,
  and every write, goes through the scheduler's side below, which checkpoints it.
- **Every executor started is stopped.** A start cancelled midway stops what it started; an
  executor retired from a synchronous step is awaited by `stop` (`retire_soon`).

The scheduler's side — the only calls the dispatcher makes into it, each bound once (they are
on the per-call path):

- `attempt_started(call) -> started_at`: `call` was given a slot: its attempt begins (counted,
  in the store too), it is `running`;
- `take_outcome(call, ex, response, failure)`: the attempt ended with `response`, or without
  one with `failure` (timed out, executor lost): act on it, unless the call stopped running
  meanwhile;
- `attempt_failed(call, failure)`: the attempt could not be sent (an argument could not be
  given): a failed attempt, to retry or not;
- `finish_call_failed(call, failure)`: no executor can be started for a queued call: it fails;
- `schedule_flush()`: state changed: commit, then act on it, at the end of this loop turn;
- `expects_calls(pool)`: whether a call of `pool`'s function waits for its inputs (an idle
  executor then stays, for it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from engine import tracing, wire
from engine.backends.base import Backend, ExecutorSpec
from engine.errors import PythonVersionMismatch, SDKUsageError
from engine.scheduler.access import Access
from engine.scheduler.exchange import Exchanges
from engine.scheduler.pools import ExecutorGone, ExecutorState, Pool
from engine.scheduler.state import QUEUED, CallState, task_done
from engine.scheduler.values import Values
from engine.scheduler.warm import WarmPool, warm_size
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.app import AppSpec

log = logging.getLogger("engine.scheduler")

# Executors of one function being started at once (see `pump`): a ramp starts them together
# (as many as the docker backend's API threads).
MAX_STARTS_IN_FLIGHT = 16
# What taking a blank executor from the warm pool and initialising it costs, about (`Pool.wanted`).
WARM_START_COST = 0.02


class Dispatcher:
    """The executors of one scheduler, and the calls queued for them. Runs on its loop."""

    def __init__(
        self,
        backend: Backend,
        access: Access,
        values: Values,
        tracer: tracing.Tracer,
        *,
        exchanges: Exchanges | None,
        max_executors: int,
        idle_timeout: float,
        warm_executors: int | None,
        attempt_started: Callable[[CallState], float],
        take_outcome: Callable[[CallState, ExecutorState, pb.RunResponse | None, pb.Failure | None], None],
        attempt_failed: Callable[[CallState, pb.Failure], None],
        finish_call_failed: Callable[[CallState, pb.Failure], None],
        schedule_flush: Callable[[], None],
        expects_calls: Callable[[Pool], bool],
    ) -> None:
        """`warm_executors`: the size of the warm pool (None: $ENGINE_WARM_EXECUTORS, else the
        backend's default). The keyword callbacks are the scheduler's side (module docstring)."""
        self.backend = backend
        self.access = access
        self.tracer = tracer
        self.exchanges = exchanges
        self.max_executors = max_executors
        self.idle_timeout = idle_timeout
        self.pools: dict[tuple[str, str], Pool] = {}
        # How long each application's calls took in earlier runs, by application and function
        # (the store's `call_durations`, given by the scheduler: `learn_durations`).
        self.durations: dict[str, dict[str, float]] = {}
        # How many of their calls ran at once, at most, in each application's last run, by
        # application and function (the store's `call_durations.width`): `prestart`.
        self.widths: dict[str, dict[str, int]] = {}
        # Seconds an executor takes to start and initialise (moving average; see Pool.wanted).
        self.start_cost = 0.5
        # Where executors reach the scheduler's services (`start`).
        self.callback_address = ""
        self.closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pools_to_pump: set[Pool] = set()
        self._pump_scheduled = False
        # Executor starts in flight (cancelled, and each stops its executor, on `stop`).
        self._starts: set[asyncio.Task[None]] = set()
        # Executors being stopped (`retire_soon`), awaited by `stop`.
        self._retiring: set[asyncio.Task[None]] = set()
        self._resolve_arguments = values.resolve_arguments
        self._attempt_started = attempt_started
        self._take_outcome = take_outcome
        self._attempt_failed = attempt_failed
        self._finish_call_failed = finish_call_failed
        self._schedule_flush = schedule_flush
        self._expects_calls = expects_calls
        self.warm = WarmPool(backend, warm_size(warm_executors, backend.warm_executors), tracer.executor_env(),
                             room=self._warm_room, exchanges=exchanges)

    # =========================================================================================
    # what the scheduler asks

    def start(self, callback_address: str) -> None:
        """Begin (on the loop, once the scheduler's services listen at `callback_address`)."""
        self._loop = asyncio.get_running_loop()
        self.callback_address = callback_address

    def start_warm_pool(self, *, refill: bool, app: AppSpec | None) -> None:
        """See `Scheduler.start_warm_pool`."""
        self.warm.refill = refill
        if app is not None:
            fitting = sum(1 for s in app.functions.values()
                          if self.warm.fits(self._executor_spec(self.pool(app, s.name))))
            self.warm.size = min(self.warm.size, fitting)
        self.warm.fill()

    def queue(self, call: CallState) -> None:
        """`call` is `queued`: run it when its pool has a free slot."""
        pool = self.pool(call.app, call.function)
        pool.last_run_id = call.run.run_id
        pool.queue.append(call)
        self._want_pump(pool)

    def requeue(self, call: CallState) -> None:
        """`call`'s retry is due (its backoff passed): queue it again, if it still waits."""
        call.retry_handle = None
        if call.status != QUEUED or call.run.done.is_set():
            return
        pool = self.pool(call.app, call.function)
        pool.queue.append(call)
        self._want_pump(pool)

    def start_first(self, app: AppSpec, function: str, run_id: str) -> None:
        """Start `function`'s first executor if it has none (live or starting), while its call
        waits for its dependencies: a fan-in's combiner is then warm when its inputs are done."""
        pool = self.pool(app, function)
        if pool.live() == 0:
            pool.last_run_id = run_id
            self._start_executor(pool)

    def prestart(self, app: AppSpec, run_id: str, *, learned: bool) -> None:
        """Start the executors `app`'s functions keep warm (`min_containers`,
        `warm_containers`); with `learned`, also as many of each as the application's last run
        had calls of it running at once (`widths`; up to `max_containers`, what
        `max_executors` leaves and `MAX_STARTS_IN_FLIGHT`), so that a fan-out that ran before
        finds its executors up when it is made rather than starting them then.

        A new run calls it with `learned` once its root call has an executor, so that none of
        these delays the root's own start; a resumed run calls it without, as it resumes (its
        calls finished already would make the last widths too many). An executor no call
        comes to stops after `idle_timeout`, as any idle one does."""
        widths = self.widths.get(app.name, {}) if learned else {}
        room, blank = self.max_executors - self._active_executors(), len(self.warm.ready)
        for function in [*app.functions, *sorted(set(widths) - set(app.functions))]:
            try:
                pool = self.pool(app, function)
            except SDKUsageError:
                continue  # a function this version of the application no longer has
            pool.last_run_id = run_id
            for _ in range(max(0, pool.warm_minimum - pool.live())):
                self._start_executor(pool)
            learned_executors = -(-widths.get(function, 0) // pool.concurrency)
            cap = pool.settings.config.max_containers
            if cap is not None:
                learned_executors = min(learned_executors, cap)
            more = min(max(0, learned_executors - pool.live()), max(0, MAX_STARTS_IN_FLIGHT - pool.starting))
            if not more:
                continue
            # Blank executors of the warm pool add no executor; others need room.
            taken = min(more, blank) if self._warm_fits(pool) else 0
            new = min(more - taken, max(0, room))
            blank, room = blank - taken, room - new
            for _ in range(taken + new):
                self._start_executor(pool)

    def prestart_tail(self, call: CallState, tail: pb.TailCall) -> None:
        """Start the executors that a large tail call's new calls need before they are added
        (as `start_first` would for the first of each function), so that they start while the
        graph is added slice by slice; none for a graph with a signal (a call waiting for one
        holds nothing)."""
        functions: set[str] = set()
        for spec in tail.futures:
            if spec.kind == pb.NODE_KIND_SIGNAL:
                return
            if spec.kind == pb.NODE_KIND_CALL:
                functions.add(spec.function)
        for function in sorted(functions):
            try:
                pool = self.pool(call.app, function)
            except SDKUsageError:
                continue  # no such function: refused when the call is added
            if pool.live() == 0:
                pool.last_run_id = call.run.run_id
                self._start_executor(pool)

    def tick(self) -> None:
        """Re-evaluate pool sizes as queued calls age (scaling also reacts to every event, and a
        ramping pool is judged again on its own timer, `_judge_later`), and refill the warm
        pool: the scheduler's tick."""
        self.pump_all()
        self.warm.fill()

    def executors_live(self) -> int:
        return sum(p.live() for p in self.pools.values()) + self.warm.live()

    async def stop(self) -> None:
        """The first step of closing: start nothing more; stop the executors still starting, the
        warm pool's, and await those being retired."""
        self.closed = True
        for pool in self.pools.values():
            if pool.judge_timer is not None:
                pool.judge_timer.cancel()
        # Executors still starting: each stops the one it started (`_start_executor_async`).
        starts = list(self._starts)
        for task in starts:
            task.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        # Blank executors go with every other executor in `backend.close`, at once.
        await asyncio.gather(self.warm.close(stop=False), *list(self._retiring), return_exceptions=True)

    async def close(self) -> None:
        """The last step of closing (after `stop`): close every executor's channel, and the
        backend, which stops every executor."""
        for pool in self.pools.values():
            for ex in pool.executors:
                await ex.channel.close()
        await self.backend.close()

    # =========================================================================================
    # pools

    def pool(self, app: AppSpec, function: str) -> Pool:
        """The pool of `app`'s `function` (made on first use; raises SDKUsageError for a
        function `app` does not have)."""
        key = (app.code_digest, function)
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = Pool(app, app.settings(function))
            pool.prior = self.durations.get(app.name, {}).get(function)
        return pool

    def learn_durations(self, application: str, durations: dict[str, float],
                        widths: dict[str, int] | None = None) -> None:
        """How long `application`'s calls took (by function): the `prior` of its pools, those
        made already included; and how many ran at once (by function), for its next run's
        `prestart`."""
        self.durations.setdefault(application, {}).update(durations)
        if widths is not None:
            self.widths.setdefault(application, {}).update(widths)
        for pool in self.pools.values():
            if pool.app.name == application and pool.function in durations:
                pool.prior = durations[pool.function]

    def observed_durations(self, application: str) -> dict[str, float]:
        """How long calls of `application`'s functions took here (their pools' moving
        averages), by function."""
        observed: dict[str, float] = {}
        for pool in self.pools.values():
            if pool.app.name == application and pool.avg_call is not None:
                observed[pool.function] = pool.avg_call
        return observed

    def _active_executors(self) -> int:
        return self.warm.live() + sum(
            sum(1 for ex in p.executors if ex.active) + p.starting for p in self.pools.values()
        )

    def _want_pump(self, pool: Pool) -> None:
        """Pump `pool` once this loop turn is done: a fan-out queues thousands of calls in one
        turn, and they are handed out together."""
        self._pools_to_pump.add(pool)
        if not self._pump_scheduled and self._loop is not None:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump_marked)

    def _pump_marked(self) -> None:
        self._pump_scheduled = False
        pools, self._pools_to_pump = self._pools_to_pump, set()
        for pool in pools:
            self.pump(pool)

    def pump(self, pool: Pool) -> None:
        """Hand queued calls to free executor slots, the runs sharing the pool taking turns
        (`pools.FairQueue`); start executors when there are none. An application with
        `max_concurrent_calls` gets no more slots, nor executors, than it has room for."""
        calls_room = self._call_room(pool.app)
        while pool.queue and calls_room > 0:
            ex = pool.free_executor()
            if ex is None:
                break
            call = pool.queue.popleft()
            if call.status != QUEUED:
                continue  # cancelled or failed while queued
            self._dispatch(call, ex)
            calls_room -= 1
        if not pool.queue or calls_room <= 0:
            return
        now = time.time()
        want = pool.wanted(now, self.start_cost)
        warm = self._warm_fits(pool)
        if warm:  # the blank executors ready cost next to nothing to start
            want = max(want, min(len(self.warm.ready), pool.wanted(now, WARM_START_COST)))
        if calls_room < len(pool.queue):
            want = min(want, -(-int(calls_room) // pool.concurrency))
        room = self.max_executors - self._active_executors()
        if warm:
            room += len(self.warm.ready)  # taking a blank executor adds no executor
        elif want > room:
            room += self.warm.evict(want - room)  # blank executors make way for one that cannot use them
        if pool.live() == 0 and want > 0:
            room = max(room, 1)  # every function with work gets at least one executor
        in_flight = max(0, MAX_STARTS_IN_FLIGHT - pool.starting)
        starts = min(want, room, in_flight)
        for _ in range(starts):
            self._start_executor(pool)
        if room > starts and in_flight > starts:  # time alone may make the rest worth starting
            delay = pool.judge_again_in(now, WARM_START_COST if warm else self.start_cost)
            if delay is not None:
                self._judge_later(pool, delay)

    def _judge_later(self, pool: Pool, delay: float) -> None:
        """Pump `pool` again in `delay` seconds (or sooner, if already due sooner)."""
        timer, loop = pool.judge_timer, self._loop
        if loop is None or self.closed:
            return
        if timer is not None:
            if timer.when() <= loop.time() + delay:
                return
            timer.cancel()

        def judge() -> None:
            pool.judge_timer = None
            if not self.closed:
                self._want_pump(pool)

        pool.judge_timer = loop.call_later(delay, judge)

    def _call_room(self, app: AppSpec) -> int | float:
        """How many more calls of `app`'s runs may start now under its `max_concurrent_calls`
        (infinite without one). Calls blocked awaiting their children do not count, as for
        `max_executors`: a call tree deeper than the cap must not deadlock itself."""
        cap = app.max_concurrent_calls
        if cap is None:
            return float("inf")
        executing = sum(ex.inflight - ex.blocked for p in self.pools.values() if p.app.name == app.name
                        for ex in p.executors if not ex.stopping)
        return cap - executing

    def _pump_after_call(self, pool: Pool) -> None:
        """A call of `pool` ended: its slot is free, and under `max_concurrent_calls` so is
        room for any function of its application."""
        self.pump(pool)
        if pool.app.max_concurrent_calls is not None:
            for other in list(self.pools.values()):
                if other is not pool and other.queue and other.app.name == pool.app.name:
                    self.pump(other)

    def pump_all(self) -> None:
        """Pump every pool with queued calls (room may have come free anywhere)."""
        for pool in list(self.pools.values()):
            if pool.queue:
                self.pump(pool)

    # =========================================================================================
    # attempts

    def _dispatch(self, call: CallState, ex: ExecutorState) -> None:
        """Give `call` (queued) a slot of `ex`, and send it there."""
        ex.inflight += 1
        call.executor = ex
        if ex.reap is not None:
            ex.reap.cancel()
            ex.reap = None
        started_at = self._attempt_started(call)
        if ex.pool.first_dispatch is None:
            ex.pool.first_dispatch = started_at
        self._send_call(call, ex)

    def _send_call(self, call: CallState, ex: ExecutorState) -> None:
        """Send the attempt on `ex`'s stream. Its answer, or its timeout, comes back as a
        callback on the response's future (`_answered`): no task per call, since a fan-out
        dispatches thousands of calls in one loop turn. Only an attempt that ends badly (its
        executor gone or to be retired) continues in a task (`_conclude_slow`)."""
        settings = call.settings
        try:
            request = pb.RunRequest(run_id=call.run.run_id, call_id=call.id, attempt=call.attempts,
                                    arguments=self._resolve_arguments(call),
                                    trace_context=self.tracer.attempt_started(call, ex))
        except Exception as exc:  # noqa: BLE001 - an argument that cannot be given fails the call
            ex.inflight -= 1
            call.executor = None
            self._attempt_failed(call, wire.failure_from_exception(
                exc, function=call.function, call_id=call.id, kind=pb.FAILURE_KIND_INTERNAL))
            self._schedule_flush()
            return
        timeout = settings.config.timeout
        if not ex.served and settings.config.init_timeout:
            # A @cls() method: its executor runs the class's constructor before its first call,
            # within init_timeout (the executor keeps that limit and answers if it is passed).
            timeout += settings.config.init_timeout
        self.access.call_started(ex, call, request.arguments)
        waiter = ex.send(request)
        call.task = waiter
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, ex.expire, call.id, waiter)
        waiter.add_done_callback(lambda done: self._answered(call, ex, timer, done))

    def _answered(self, call: CallState, ex: ExecutorState, timer: asyncio.TimerHandle,
                  waiter: asyncio.Future[pb.RunResponse]) -> None:
        """The attempt's response arrived, its executor's stream ended, its timeout passed, or
        the attempt was cancelled (`call.task.cancel()`: the outcome is dropped)."""
        timer.cancel()
        if ex.pending.get(call.id) is waiter:
            del ex.pending[call.id]
        if waiter.cancelled():
            self._attempt_dropped(call, ex, waiter)
            return
        error = waiter.exception()
        response = waiter.result() if error is None else None
        if response is None or wire.retires_executor(response) or self.access.unsettled(ex, call):
            # Timed out, gone, or without the instance its @cls() method needs (the executor
            # is stopped, awaited, before anything else goes to its pool); or it was handed a
            # value not yet checkpointed (`exchange.Deferred`): the rest goes on in a task.
            call.task = asyncio.ensure_future(self._conclude_slow(call, ex, response, error))
            return
        ex.served = True
        ex.inflight -= 1
        call.executor = None
        if call.started_at is not None:
            ex.pool.observe_call(time.time() - call.started_at)
        self._conclude(call, ex, response, waiter)

    def _conclude(self, call: CallState, ex: ExecutorState, response: pb.RunResponse,
                  waiter: asyncio.Future[pb.RunResponse]) -> None:
        self._take_outcome(call, ex, response, None)
        self._after_call(ex, tail=response.HasField("tail_call"))
        self._pump_after_call(ex.pool)
        self._schedule_flush()
        task_done(call, waiter)

    async def _conclude_slow(self, call: CallState, ex: ExecutorState, response: pb.RunResponse | None,
                             error: BaseException | None) -> None:
        """An attempt without a usable answer — its failure (asking the backend why an executor
        died takes a moment), then the executor retired before its pool is pumped again — or
        one whose call was handed a value not yet checkpointed: nothing of it (outcome, retry,
        failure) is acted on or written before that value's call is (`exchange.Deferred`)."""
        failure: pb.Failure | None = None
        if isinstance(error, TimeoutError):
            failure = wire.make_failure(
                pb.FAILURE_KIND_TIMEOUT,
                f"{call.function} timed out after {call.settings.config.timeout:g} s "
                f"(attempt {call.attempts}); its executor was replaced",
                function=call.function, call_id=call.id, type_name="FunctionTimeout")
        elif isinstance(error, ExecutorGone):
            try:
                failure = await self._lost_failure(call, ex, str(error))
            except asyncio.CancelledError:
                self._attempt_dropped(call, ex, asyncio.current_task())
                raise
        elif error is not None:
            raise error
        else:
            ex.served = True
        if self.access.unsettled(ex, call):
            try:
                await self.access.settled(ex, call)
            except asyncio.CancelledError:
                self._attempt_dropped(call, ex, asyncio.current_task())
                raise
        ex.inflight -= 1
        call.executor = None
        if response is not None and call.started_at is not None:
            ex.pool.observe_call(time.time() - call.started_at)
        self._take_outcome(call, ex, response, failure)
        if response is None or wire.retires_executor(response):
            await self._retire(ex)
        else:
            self._after_call(ex, tail=response.HasField("tail_call"))
        self._pump_after_call(ex.pool)
        self._schedule_flush()
        task_done(call, asyncio.current_task())

    def _attempt_dropped(self, call: CallState, ex: ExecutorState, task: asyncio.Future[Any] | None) -> None:
        """The attempt (its response future, or the task that went on with it) was cancelled
        before its outcome was handled."""
        self.access.call_ended(ex, call)
        ex.inflight -= 1
        call.executor = None
        task_done(call, task)
        self.tracer.attempt_ended(call, None, None, dropped=True)

    async def _lost_failure(self, call: CallState, ex: ExecutorState, detail: str) -> pb.Failure:
        """Why `ex` died under `call` (asked of the backend), as a typed failure."""
        name, limit = call.function, call.settings.config
        # The stream breaks the moment the process dies; the container's state (and its
        # OOMKilled flag) may take a moment longer to settle.
        deadline = time.monotonic() + 3.0
        info = await self.backend.exit_info(ex.handle)
        while not info.exited and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            info = await self.backend.exit_info(ex.handle)
        if info.oom_killed:
            return wire.make_failure(
                pb.FAILURE_KIND_OUT_OF_MEMORY,
                f"{name} ran out of memory (limit {limit.memory:g} GB) and was killed (attempt {call.attempts})",
                function=name, call_id=call.id, type_name="OutOfMemory")
        detail = info.detail or detail
        code = f", exit code {info.exit_code}" if info.exit_code is not None else ""
        return wire.make_failure(
            pb.FAILURE_KIND_EXECUTOR_LOST,
            f"the executor of {name} died mid-call ({detail}{code}, attempt {call.attempts})",
            function=name, call_id=call.id, type_name="ExecutorLost")

    # =========================================================================================
    # executors

    def _after_call(self, ex: ExecutorState, *, tail: bool) -> None:
        """An executor slot came free. A caller that handed off by tail call releases its
        executor at once; otherwise idle executors go after `idle_timeout`."""
        pool = ex.pool
        if ex.inflight or pool.queue or ex.stopping:
            return
        idle_others = sum(1 for e in pool.executors if not e.stopping and e is not ex)
        if idle_others + 1 <= pool.warm_minimum:
            return
        if tail:
            self.retire_soon(ex)
        elif self._loop is not None:
            ex.reap = self._loop.call_later(self.idle_timeout, self._reap, ex)

    def _reap(self, ex: ExecutorState) -> None:
        ex.reap = None
        if ex.inflight != 0 or ex.stopping:
            return
        if self._loop is not None and self._expects_calls(ex.pool):
            # The executor started for a fan-in's combiner (`start_first`) stays warm while its
            # call waits for its inputs, rather than being restarted when they are done.
            ex.reap = self._loop.call_later(self.idle_timeout, self._reap, ex)
            return
        # Judged again now, and out of the pool at once (`_retire` takes a loop step): executors
        # that went idle together each have a timer, and must not all go below the warm minimum.
        others = sum(1 for e in ex.pool.executors if not e.stopping and e is not ex)
        if others >= ex.pool.warm_minimum:
            ex.pool.executors.remove(ex)
            self.retire_soon(ex)

    def retire_soon(self, ex: ExecutorState) -> None:
        """Retire `ex` from a synchronous step; `stop` waits for what is still retiring, so
        that the engine never exits with an executor it meant to stop still running."""
        task = asyncio.ensure_future(self._retire(ex))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, ex: ExecutorState) -> None:
        if ex.stopping:
            return
        ex.stopping = True
        if ex.reap is not None:
            ex.reap.cancel()
        pool = ex.pool
        if ex in pool.executors:
            pool.executors.remove(ex)
        self.access.revoke(ex)
        try:
            if ex.reader is not None:
                ex.reader.cancel()
            await ex.channel.close()
            await self.backend.stop_executor(ex.handle)
        finally:
            self.pump_all()
            self.warm.fill()  # room came free

    def _start_executor(self, pool: Pool) -> None:
        if self.closed:
            return  # (an executor retired as the engine closes frees a slot: nothing to fill)
        pool.starting += 1
        task = asyncio.ensure_future(self._start_executor_async(pool))
        self._starts.add(task)
        task.add_done_callback(self._starts.discard)

    def _executor_spec(self, pool: Pool) -> ExecutorSpec:
        settings = pool.settings
        return ExecutorSpec(
            function=settings.name, run_id=pool.last_run_id, cpu=settings.config.cpu,
            memory_gb=settings.config.memory, ephemeral_disk_gb=settings.config.ephemeral_disk,
            gpu=str(settings.config.gpu) if settings.config.gpu else None,
            image=settings.image_tag, concurrency=settings.config.concurrency,
            env={**self.tracer.executor_env(), **settings.env()}, constraints=settings.constraints,
        )

    def _warm_room(self) -> int:
        """Room for blank executors: what `max_executors` leaves, and none while calls wait
        for executors (a ramp comes first; the pool refills once the queues are empty)."""
        if any(p.queue for p in self.pools.values()):
            return 0
        return self.max_executors - self._active_executors()

    def _warm_fits(self, pool: Pool) -> bool:
        """Whether a blank executor of the warm pool is ready for `pool`'s function."""
        if not self.warm.ready:
            return False
        if pool.warm_fits is None:
            pool.warm_fits = self.warm.fits(self._executor_spec(pool))
        return pool.warm_fits

    async def _start_executor_async(self, pool: Pool) -> None:
        app, settings = pool.app, pool.settings
        spec = self._executor_spec(pool)
        handle = None
        ex: ExecutorState | None = None
        exchange = None
        started = time.monotonic()
        try:
            # A blank executor of the warm pool when one fits (its stream already open, its
            # exchange directory made), else one of the function's own.
            ex = await self.warm.take(spec)
            if ex is not None:
                handle, ex.pool, exchange = ex.handle, pool, ex.exchange
            else:
                exchange = self.exchanges.new() if self.exchanges is not None else None
                if exchange is not None:
                    spec = dataclasses.replace(spec, exchange_dir=str(exchange.root))
                handle = await self.backend.start_executor(spec)
                ex = ExecutorState(handle, self.backend.channel(handle), pool)
            reply = await ex.stub.Initialize(pb.InitializeRequest(
                protocol_version=wire.PROTOCOL_VERSION, function=settings.name,
                code_zip=app.code_zip, code_digest=app.code_digest, module=settings.module,
                callback_address=self.callback_address, concurrency=settings.config.concurrency,
                credential=self.access.issue(ex, settings.name, exchange),
            ), timeout=120)
            if reply.python_version.split(".")[:2] != wire.python_version().split(".")[:2]:
                raise PythonVersionMismatch(
                    f"the executor runs Python {reply.python_version} but the engine runs "
                    f"{wire.python_version()}; cloudpickle needs the same minor version on both "
                    "sides: rebuild the image with `engine image build`"
                )
        except asyncio.CancelledError:
            pool.starting -= 1
            if exchange is not None:
                exchange.remove()
            if ex is not None:
                self.access.revoke(ex)
            if handle is not None:  # started, not yet ours: nothing else would ever stop it
                await asyncio.shield(self.backend.stop_executor(handle))
            raise
        except Exception as exc:  # noqa: BLE001 - every start failure fails the queued calls
            pool.starting -= 1
            if exchange is not None:
                exchange.remove()
            if ex is not None:
                self.access.revoke(ex)
            if handle is not None:
                await self.backend.stop_executor(handle)
            if self.closed:
                return  # the engine is stopping (its backend, its channels): not the start's fault
            pool.start_failures += 1
            message = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self._fail_queue(pool, f"could not start an executor for {settings.name}: {message}")
            return
        pool.starting -= 1
        pool.start_failures = 0
        if ex.stream is None:  # not a blank executor: what a start costs (see Pool.wanted)
            self.start_cost = 0.7 * self.start_cost + 0.3 * (time.monotonic() - started)
            ex.open()
        if self.closed:
            self.access.revoke(ex)
            await self.backend.stop_executor(handle)
            return
        pool.executors.append(ex)
        self.pump(pool)
        self._after_call(ex, tail=False)
        self._schedule_flush()

    def _fail_queue(self, pool: Pool, message: str) -> None:
        """An executor of `pool` could not be started: unless another one lives (or is
        starting), its queued calls cannot run, and fail with `message`."""
        if pool.live() > 0:
            return  # other executors can still serve the queue
        while pool.queue:
            call = pool.queue.popleft()
            if call.status == QUEUED:
                failure = wire.make_failure(pb.FAILURE_KIND_INTERNAL, message, function=call.function,
                                            call_id=call.id, type_name="InfrastructureError")
                self._finish_call_failed(call, failure)
        self._schedule_flush()
