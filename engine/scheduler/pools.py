"""Executor pools: the live executors of each function, and the calls queued for them.

One pool per (code bundle, function). A pool grows when calls are queued and no executor has a
free slot, up to the function's `max_containers` and the engine-wide `max_executors`; it shrinks
when an executor has been idle for `idle_timeout` seconds, never below the function's warm
minimum (`max(min_containers, warm_containers)`). An executor whose calls are all blocked
waiting on their own futures does not count against `max_executors`, so a recursive fan-out
cannot deadlock the engine by holding every slot while its children wait in the queue.
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
    from engine.scheduler.state import CallState


class ExecutorGone(Exception):
    """The executor's call stream ended: it died, was stopped, or could not be reached."""


class ExecutorState:
    """One live executor: its gRPC channel and the one `Calls` stream every call goes over.

    Requests are written under a lock (gRPC allows one pending write per stream); a reader
    task matches each response to its call by `call_id`. When the stream ends, every call still
    waiting on it fails with `ExecutorGone`, and the scheduler asks the backend why.
    """

    __slots__ = ("handle", "channel", "stub", "inflight", "blocked", "stopping", "reap", "pool",
                 "stream", "pending", "write_lock", "reader", "served")

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
        self.write_lock = asyncio.Lock()
        self.reader: asyncio.Task[None] | None = None
        # Whether a call has been answered here (the first call of a @cls() method's executor
        # waits for the class's constructor, and may take init_timeout longer).
        self.served = False

    def open(self) -> None:
        self.stream = self.stub.Calls()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        error = ExecutorGone("the executor closed its call stream")
        try:
            async for response in self.stream:
                waiter = self.pending.pop(response.call_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(response)
        except grpc.aio.AioRpcError as exc:
            error = ExecutorGone(exc.details() or exc.code().name)
        except asyncio.CancelledError:
            error = ExecutorGone("the executor was stopped")
        finally:
            pending, self.pending = self.pending, {}
            for waiter in pending.values():
                if not waiter.done():
                    waiter.set_exception(error)

    async def call(self, request: pb.RunRequest, timeout: float) -> pb.RunResponse:
        """Send one call and wait for its response. Raises `ExecutorGone`, or the builtin
        `TimeoutError` after `timeout` seconds (the call may still be running)."""
        waiter: asyncio.Future[pb.RunResponse] = asyncio.get_running_loop().create_future()
        self.pending[request.call_id] = waiter
        try:
            try:
                async with self.write_lock:
                    await self.stream.write(request)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError) as exc:
                raise ExecutorGone(f"could not send the call: {exc}") from None
            return await asyncio.wait_for(waiter, timeout)
        finally:
            self.pending.pop(request.call_id, None)

    @property
    def active(self) -> bool:
        """Counts against max_executors: alive, and not entirely blocked on its children."""
        return not self.stopping and (self.inflight == 0 or self.blocked < self.inflight)


class Pool:
    def __init__(self, app: AppSpec, settings: FunctionSettings) -> None:
        self.app = app
        self.settings = settings
        self.function = settings.name
        self.executors: list[ExecutorState] = []
        self.starting = 0
        self.queue: deque[CallState] = deque()
        # Consecutive executor start failures; reset by a successful start.
        self.start_failures = 0
        # The run whose call last queued here: labels the executors this pool starts.
        self.last_run_id = ""
        # Moving average of call durations, and when the first call was dispatched.
        self.avg_call: float | None = None
        self.first_dispatch: float | None = None

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

        Starting an executor costs `start_cost` seconds (a process or container start, measured).
        A new one is worth it only when the queue would otherwise wait longer than that: with
        trivial calls one executor drains a thousand of them faster than a second one starts,
        while slow calls (an LLM request) get an executor each, up to the caps.
        """
        free_slots = sum(self.concurrency - ex.inflight for ex in self.executors if not ex.stopping)
        free_slots += self.starting * self.concurrency
        backlog = len(self.queue) - free_slots
        if backlog <= 0:
            return 0
        need = -(-backlog // self.concurrency)
        cap = self.settings.config.max_containers
        if cap is not None:
            need = min(need, cap - self.live())
        if need <= 0:
            return 0
        if self.live() == 0:
            return 1 if self.avg_call is None else need
        if self.avg_call is not None:
            per_call = self.avg_call
        elif self.first_dispatch is not None:
            per_call = now - self.first_dispatch  # nothing finished yet: at least this slow
        else:
            return 0  # the first executor is still starting
        slots = max(1, self.live() * self.concurrency)
        wait = per_call * len(self.queue) / slots
        if wait <= start_cost:
            return 0
        return min(need, max(1, int(wait / start_cost)))
