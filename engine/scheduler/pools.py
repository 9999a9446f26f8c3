"""Executor pools: the live executors of each function, and the calls queued for them.

One pool per (code bundle, function). A pool grows when calls are queued and no executor has a
free slot, up to the function's `max_containers` and the engine-wide `max_executors`; it shrinks
when an executor has been idle for `idle_timeout` seconds, never below the function's warm
minimum (`max(min_containers, warm_containers)`). An executor whose calls are all blocked
waiting on their own futures does not count against `max_executors`, so a recursive fan-out
cannot deadlock the engine by holding every slot while its children wait in the queue.

A pool's queued calls are a `FairQueue`: the runs that share the pool take turns (weighted by
their priority), so a run of twenty thousand calls does not make a run of ten wait behind it.

How many executors a queue is worth depends on how long its calls take (`Pool.wanted`): what
they took in this engine, or — before one has finished — at least the first one's age, and what
they took in the application's last run (`Pool.prior`: the store's `call_durations`, which the
scheduler writes as each run ends and gives the dispatcher as an application's first run here
starts). The same record says how many of a function's calls ran at once in that run: a new
run starts that many executors as soon as its root has its own (`Dispatcher.prestart`), before
its fan-out is made.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import grpc

from engine.backends.base import ExecutorHandle
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from engine.app import AppSpec, FunctionSettings
    from engine.scheduler.state import CallState, RunState


class ExecutorGone(Exception):
    """The executor's call stream ended: it died, was stopped, or could not be reached."""


class ExecutorState:
    """One live executor: its gRPC channel and the one `Calls` stream every call goes over.

    Calls dispatched in one loop turn leave together: `send` puts each request in `outbox`, and
    one writer task writes everything waiting there as one `RunRequests` message (gRPC allows one
    pending write per stream; what arrives meanwhile goes in the next message). A reader task
    matches each response to its call by `call_id`. When the stream ends, every call still
    waiting on it fails with `ExecutorGone`, and the scheduler asks the backend why.
    """

    __slots__ = ("handle", "channel", "stub", "inflight", "blocked", "stopping", "reap", "pool",
                 "stream", "pending", "outbox", "writer", "reader", "served", "gone", "exchange")

    def __init__(self, handle: ExecutorHandle, channel: grpc.aio.Channel, pool: Pool) -> None:
        self.handle = handle
        self.channel = channel
        self.stub = pb_grpc.FunctionExecutorStub(channel)
        self.inflight = 0
        # Calls on this executor currently blocked in Await.
        self.blocked = 0
        self.stopping = False
        self.reap: asyncio.TimerHandle | None = None
        self.pool = pool
        self.stream: Any = None
        self.pending: dict[str, asyncio.Future[pb.RunResponse]] = {}
        # Requests not yet written, and the task writing them.
        self.outbox: list[pb.RunRequest] = []
        self.writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        # Whether a call has been answered here (the first call of a @cls() method's executor
        # waits for the class's constructor, and may take init_timeout longer).
        self.served = False
        # Why the stream ended, once it has: later calls fail at once with it.
        self.gone: ExecutorGone | None = None
        # A blank executor's exchange directory (engine.scheduler.warm), until a function takes
        # it and its grant owns the directory (engine.scheduler.access).
        self.exchange: Any = None

    def open(self) -> None:
        self.stream = self.stub.Calls()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        error = ExecutorGone("the executor closed its call stream")
        try:
            async for batch in self.stream:
                for response in batch.responses:
                    waiter = self.pending.pop(response.call_id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(response)
        except grpc.aio.AioRpcError as exc:
            error = ExecutorGone(exc.details() or exc.code().name)
        except asyncio.CancelledError:
            error = ExecutorGone("the executor was stopped")
        finally:
            self.gone = error
            self._fail_pending(error)

    def _fail_pending(self, error: ExecutorGone) -> None:
        pending, self.pending = self.pending, {}
        self.outbox = []
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, request: pb.RunRequest) -> asyncio.Future[pb.RunResponse]:
        """Queue one call for the executor; the future is its response (or `ExecutorGone`)."""
        waiter: asyncio.Future[pb.RunResponse] = asyncio.get_running_loop().create_future()
        if self.gone is not None:
            waiter.set_exception(self.gone)
            return waiter
        self.pending[request.call_id] = waiter
        self.outbox.append(request)
        if self.writer is None:
            self.writer = asyncio.ensure_future(self._write())
        return waiter

    async def _write(self) -> None:
        try:
            while self.outbox:
                batch, self.outbox = self.outbox, []
                try:
                    await self.stream.write(pb.RunRequests(requests=batch))
                except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError) as exc:
                    self.gone = ExecutorGone(f"could not send the call: {exc}")
                    self._fail_pending(self.gone)
                    return
        finally:
            self.writer = None

    def expire(self, call_id: str, waiter: asyncio.Future[pb.RunResponse]) -> None:
        """The call's time is up: its future fails with the builtin `TimeoutError` (the call
        may still be running there; the scheduler replaces the executor)."""
        if self.pending.get(call_id) is waiter:
            del self.pending[call_id]
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    @property
    def active(self) -> bool:
        """Counts against max_executors: alive, and not entirely blocked on its children."""
        return not self.stopping and (self.inflight == 0 or self.blocked < self.inflight)


class FairQueue:
    """The calls queued for one pool: a FIFO per run, served by weighted round-robin between
    runs (not between calls).

    Runs with queued calls wait in `rotation`; the run at its head is given up to its weight
    (`RunState.priority`, at least 1) calls in a row, then goes to the back. A run that joins
    goes to the back, so it is served within one turn of the runs already there, however many
    calls they hold. Every operation is O(1) (a cancelled run's calls are dropped when its turn
    comes, all at once). Within a run, calls leave in the order they came.

    Runs are told apart by their `RunState`, not their id: a resumed run is a new `RunState`
    under the same id, and must not be dropped with the calls its cancelled former self left
    here (`id()` is unique while its deque holds calls that refer to that `RunState`).

    Fairness here is between the runs that share this pool's executors; executors are still
    started per function, and `max_executors` is shared first come, first served (see
    docs/server.md, "Fair share between runs").
    """

    __slots__ = ("_runs", "_rotation", "_credit", "_len")

    def __init__(self) -> None:
        self._runs: dict[int, deque[CallState]] = {}
        self._rotation: deque[int] = deque()
        # Calls the head of `rotation` may still take in its current turn.
        self._credit = 0
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def append(self, call: CallState) -> None:
        key = id(call.run)
        queue = self._runs.get(key)
        if queue is None:
            queue = self._runs[key] = deque()
            self._rotation.append(key)
        queue.append(call)
        self._len += 1

    def popleft(self) -> CallState:
        """The next call: the head run's oldest. Raises IndexError when empty."""
        while True:
            key = self._rotation[0]  # IndexError when nothing is queued
            queue = self._runs[key]
            if queue[0].run.done.is_set():
                self.discard_run(queue[0].run)  # finished or cancelled: none of its calls will run
                continue
            if self._credit <= 0:
                self._credit = max(1, queue[0].run.priority)
            call = queue.popleft()
            self._len -= 1
            self._credit -= 1
            if not queue:
                del self._runs[key]
                self._rotation.popleft()
                self._credit = 0
            elif self._credit <= 0:
                self._rotation.rotate(-1)
            return call

    def discard_run(self, run: RunState) -> list[CallState]:
        """Take every queued call of `run` out of the queue; returns them."""
        key = id(run)
        queue = self._runs.pop(key, None)
        if queue is None:
            return []
        if self._rotation[0] == key:
            self._rotation.popleft()
            self._credit = 0
        else:
            self._rotation.remove(key)  # O(runs), not O(calls)
        self._len -= len(queue)
        return list(queue)

    def runs(self) -> list[str]:
        """The ids of the runs with queued calls, the next to be served first."""
        return [self._runs[key][0].run.run_id for key in self._rotation]

    def queued(self, run: RunState) -> int:
        return len(self._runs.get(id(run), ()))


class Pool:
    def __init__(self, app: AppSpec, settings: FunctionSettings) -> None:
        self.app = app
        self.settings = settings
        self.function = settings.name
        self.executors: list[ExecutorState] = []
        self.starting = 0
        self.queue = FairQueue()
        # Consecutive executor start failures; reset by a successful start.
        self.start_failures = 0
        # The run whose call last queued here: labels the executors this pool starts.
        self.last_run_id = ""
        # Moving average of call durations, and when the first call was dispatched.
        self.avg_call: float | None = None
        self.first_dispatch: float | None = None
        # How long the function's calls took in earlier runs (the store's `call_durations`):
        # the estimate until a call of this pool has finished (`wanted`).
        self.prior: float | None = None
        # Whether a blank executor of the warm pool can serve this function (known once asked).
        self.warm_fits: bool | None = None
        # The dispatcher's timer to judge this pool again (`judge_again_in`), when one is set.
        self.judge_timer: asyncio.TimerHandle | None = None

    @property
    def concurrency(self) -> int:
        return self.settings.config.concurrency

    @property
    def warm_minimum(self) -> int:
        c = self.settings.config
        return max(c.min_containers or 0, c.warm_containers or 0)

    def free_executor(self) -> ExecutorState | None:
        best: ExecutorState | None = None
        for ex in self.executors:
            if not ex.stopping and ex.inflight < self.concurrency:
                # Prefer the busiest executor that still has room: idle ones can then be reaped.
                if best is None or ex.inflight > best.inflight:
                    best = ex
        return best

    def live(self) -> int:
        return sum(1 for ex in self.executors if not ex.stopping) + self.starting

    def observe_call(self, seconds: float) -> None:
        self.avg_call = seconds if self.avg_call is None else 0.8 * self.avg_call + 0.2 * seconds

    def wanted(self, now: float, start_cost: float) -> int:
        """How many more executors to start now.

        Starting an executor costs `start_cost` seconds (a process or container start, measured;
        next to nothing when a blank executor of the warm pool is ready). A new one is worth it
        only when the queue would otherwise wait longer than that: with trivial calls one
        executor drains a thousand of them faster than a second one starts, while slow calls (an
        LLM request) get an executor each, up to the caps.

        How many: as many as make the queue last no longer than a start, `per_call × queued /
        start_cost` slots in all, started together (a ramp). A call takes `avg_call` once one
        has finished here. Before that it takes at least as long as the first one has been
        running, and as long as calls of the function took in earlier runs (`prior`), whichever
        is longer: a fan-out of slow calls that ran before gets its executors at its first
        dispatch; one that never ran reaches its `max_containers` within a few start costs of
        its first dispatch, the dispatcher judging the pool again the moment that estimate
        makes the whole queue worth its executors (`judge_again_in`).
        """
        need = self._need()
        if need <= 0:
            return 0
        live = self.live()
        if live == 0 and self.prior is None:
            return 1 if self.avg_call is None else need
        per_call = self._per_call(now)
        if per_call is None:
            return 0  # the first executor is still starting
        slots = max(1, live * self.concurrency)
        wait = per_call * len(self.queue) / slots
        if wait <= start_cost:
            return 0 if live else 1
        enough = per_call * len(self.queue) / (max(start_cost, 1e-3) * self.concurrency)
        return min(need, max(1, int(enough) - live))

    def _per_call(self, now: float) -> float | None:
        """How long a queued call will take, as far as is known (see `wanted`)."""
        if self.avg_call is not None:
            return self.avg_call
        age = now - self.first_dispatch if self.first_dispatch is not None else None
        known = [seconds for seconds in (self.prior, age) if seconds is not None]
        return max(known) if known else None

    def judge_again_in(self, now: float, start_cost: float) -> float | None:
        """Seconds until `wanted` would start every executor the queue needs at once, by time
        alone: while nothing has finished, a queued call's wait is estimated from the first
        call's age, which grows. None when waiting changes nothing (a call finished, the queue
        is covered, the pool is at its `max_containers`, or the estimate already says to start
        them and something else holds them back): only an event can then. The dispatcher judges
        the pool again at that moment rather than at its next tick (which may have started some
        of them before), so that a ramp of slow calls is started in one go as soon as the
        estimate justifies it."""
        if self.avg_call is not None or self.first_dispatch is None or not self.queue:
            return None
        live, need = self.live(), self._need()
        if live == 0 or need <= 0:
            return None
        # `wanted` gives all `need` once per_call * queued / (start_cost * concurrency) reaches
        # live + need (which also makes the queue's wait exceed a start).
        per_call = (live + need) * max(start_cost, 1e-3) * self.concurrency / len(self.queue)
        worth_at = self.first_dispatch + per_call
        return worth_at - now + 1e-3 if worth_at > now else None

    def _need(self) -> int:
        """Executors the queue needs beyond the free slots (those of executors still starting
        included), up to `max_containers`; 0 or less when it needs none."""
        free_slots = sum(self.concurrency - ex.inflight for ex in self.executors if not ex.stopping)
        free_slots += self.starting * self.concurrency
        backlog = len(self.queue) - free_slots
        if backlog <= 0:
            return 0
        need = -(-backlog // self.concurrency)
        cap = self.settings.config.max_containers
        return need if cap is None else min(need, cap - self.live())
