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
from typing import TYPE_CHECKING

import grpc

from engine.backends.base import ExecutorHandle
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from engine.app import AppSpec, FunctionSettings
    from engine.scheduler.state import CallState


class ExecutorState:
    __slots__ = ("handle", "channel", "stub", "inflight", "blocked", "stopping", "reap", "pool")

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

    def wanted(self) -> int:
        """How many more executors the queue could use right now."""
        free_slots = sum(self.concurrency - ex.inflight for ex in self.executors if not ex.stopping)
        free_slots += self.starting * self.concurrency
        backlog = len(self.queue) - free_slots
        if backlog <= 0:
            return 0
        need = -(-backlog // self.concurrency)
        cap = self.settings.config.max_containers
        if cap is not None:
            need = min(need, cap - self.live())
        return max(0, need)
