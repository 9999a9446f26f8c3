"""The warm pool: blank executors, started before any function asks for one.

A blank executor is an executor with no application in it yet: the runtime image (docker) or
this machine's Python (process), started from the *blank spec* — default resources (1 CPU, 1 GB,
10 GB of scratch disk), no GPU, no secrets, no placement constraints. When a function needs a new
executor and its own spec is the blank one but for its name, the scheduler takes a blank
executor from here and gives it the function by `Initialize` (the code bundle, the module, the
callback address, a credential): milliseconds instead of a container start
(`Dispatcher._start_executor_async`, `engine.scheduler.dispatch`). A function with its own
image, resources, secrets or constraints starts its own executor, as before.

- **Started early**: when the scheduler is told to (`Scheduler.start_warm_pool`: `engine server`
  once it listens, `engine run` before it submits the run). A function that needs an executor
  while blank ones are still starting waits for one of those rather than start another.
- **Held**: each blank executor's `Calls` stream is opened as soon as it accepts connections
  (the executor accepts it before `Initialize`), so that, like every executor, it ends by
  itself within the orphan grace when its engine dies (`engine.executor.lifetime`), and the
  next engine sweeps whatever container is left (`Backend.cleanup_orphans`). It is ready only
  once it has answered the stream's opening (`_held`): before that, an engine killed would
  leave it waiting to be initialised.
- **Bounded**: at most `size` blank executors, ready or starting (`warm_executors` in
  engine.yaml, or `ENGINE_WARM_EXECUTORS`; 0 turns the pool off). They count against
  `max_executors`; a function that cannot use one, when there is no other room, makes ready
  ones go (`evict`).
- **Refilled** (`engine server`; not for the one run of `engine run`) in the background whenever
  one is taken, when room comes free, and on the scheduler's tick; never while calls wait for
  executors (`Dispatcher._warm_room`: their ramp comes first). A start that fails is not retried
  for `RETRY_AFTER_S` (a missing image must not loop).
- **Stopped** with the scheduler (`close`): those starting stop what they started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from engine.backends.base import BLANK, WARM_ENV, Backend, ExecutorHandle, ExecutorSpec, blank_spec, warm_size
from engine.scheduler.exchange import Exchange, Exchanges
from engine.scheduler.pools import ExecutorGone, ExecutorState

log = logging.getLogger("engine.scheduler")

#: Seconds before starting blank executors again after a start failed.
RETRY_AFTER_S = 30.0


class WarmPool:
    """Blank executors of one backend, ready or starting. Runs on the scheduler's loop.

    `room()` says how many more executors the engine may start now (its `max_executors` less
    every live executor, these included).
    """

    def __init__(self, backend: Backend, size: int, env: dict[str, str], room: Callable[[], int],
                 exchanges: Exchanges | None = None) -> None:
        self.backend = backend
        # Executors on this machine get their exchange directory when they start (a mount cannot
        # be added later): a blank one too, handed on with it (`ExecutorState.exchange`).
        self.exchanges = exchanges
        self.size = max(0, size)
        self.spec = blank_spec(env)
        self.room = room
        self.ready: deque[ExecutorState] = deque()
        self.starting = 0
        # Functions waiting for a blank executor that is still starting, first come first served.
        self._waiters: deque[asyncio.Future[ExecutorState | None]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._paused_until = 0.0
        # Blank executors handed to functions (the tests and benchmarks read it).
        self.taken = 0
        # Whether to start more as they are taken (`Scheduler.start_warm_pool`).
        self.refill = True
        self._filled = False

    def live(self) -> int:
        """Blank executors ready or starting: what counts against `max_executors`."""
        return len(self.ready) + self.starting

    def fits(self, spec: ExecutorSpec) -> bool:
        """Whether a blank executor can serve `spec`: the same in all but its function."""
        return self.size > 0 and dataclasses.replace(
            spec, function=BLANK, run_id="", concurrency=self.spec.concurrency, exchange_dir=None) == self.spec

    def fill(self) -> None:
        """Start blank executors up to `size`, as far as there is room."""
        if self._closed or self.size <= 0 or time.monotonic() < self._paused_until:
            return
        if self._filled and not self.refill:
            return
        self._filled = True
        missing = min(self.size - self.live(), self.room())
        for _ in range(max(0, missing)):
            self.starting += 1
            task = asyncio.ensure_future(self._start_one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def take(self, spec: ExecutorSpec) -> ExecutorState | None:
        """A blank executor for `spec`, its stream open, not yet initialised; None when `spec`
        needs one of its own or none is ready or on its way. Refills the pool."""
        if not self.fits(spec) or self._closed:
            return None
        try:
            while self.ready:
                ex = self.ready.popleft()
                if ex.reader is not None and not ex.reader.done():
                    self.taken += 1
                    return ex
                await self._stop(ex)  # it died while it waited: its stream ended
            if self.starting <= len(self._waiters):
                return None
            waiter: asyncio.Future[ExecutorState | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                given = await waiter
            except asyncio.CancelledError:
                handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed is not None:
                    self.ready.appendleft(handed)  # handed over as it was cancelled
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
            if given is not None:
                self.taken += 1
            return given
        finally:
            self.fill()

    def evict(self, wanted: int) -> int:
        """Stop up to `wanted` ready blank executors, to make room for executors that cannot
        use one. Returns how many go."""
        gone = 0
        while gone < wanted and self.ready:
            ex = self.ready.pop()
            task = asyncio.ensure_future(self._stop(ex))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            gone += 1
        return gone

    async def close(self, *, stop: bool = True) -> None:
        """Stop every blank executor, those starting included. `stop=False` when the backend is
        about to stop everything it started anyway (`Backend.close`, which removes them all at
        once): the ready ones are only let go of here."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        ready, self.ready = list(self.ready), deque()
        await asyncio.gather(*tasks, *(self._stop(ex) if stop else self._let_go(ex) for ex in ready),
                             return_exceptions=True)

    @staticmethod
    async def _let_go(ex: ExecutorState) -> None:
        ex.stopping = True
        if ex.reader is not None:
            ex.reader.cancel()
        await ex.channel.close()

    def adopt(self, handles: list[Awaitable[ExecutorHandle | None]], spec: ExecutorSpec) -> None:
        """Take over blank executors started before this pool (`engine.backends.early`, from
        `spec`, on this pool's backend): each counts as starting until its awaitable gives it
        (None: it did not start). Those that do not fit (another spec, more than `size`) are
        stopped."""
        if self._closed:
            return
        for i, pending in enumerate(handles):
            self.starting += 1
            task = asyncio.ensure_future(self._adopt(pending, spec, fits=spec == self.spec and i < self.size))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _adopt(self, pending: Awaitable[ExecutorHandle | None], spec: ExecutorSpec, *, fits: bool) -> None:
        try:
            handle = await pending
        except BaseException:
            self.starting -= 1
            raise
        if handle is not None and fits:
            await self._start_one(given=handle)
            return
        self.starting -= 1
        if handle is not None:
            await self.backend.stop_executor(handle)
        self._release_waiters()

    async def _start_one(self, given: ExecutorHandle | None = None) -> None:
        """Start a blank executor (or take over one started elsewhere: `given`), and give it to
        the first function waiting for one, else keep it ready."""
        handle = given
        ex: ExecutorState | None = None
        # (One started before the scheduler, by engine.backends.early, has no exchange directory:
        # its large values stream.)
        exchange = self.exchanges.new() if self.exchanges is not None and given is None else None
        try:
            if handle is None:
                spec = self.spec if exchange is None else dataclasses.replace(
                    self.spec, exchange_dir=str(exchange.root))
                handle = await self.backend.start_executor(spec)
            ex = ExecutorState(handle, self.backend.channel(handle), None)  # type: ignore[arg-type] # its pool is the taker's
            ex.exchange = exchange
            ex.open()
            await self._held(ex)  # held from now on: it ends with this engine
        except asyncio.CancelledError:
            self.starting -= 1
            await asyncio.shield(self._discard(ex, exchange, handle))
            raise
        except Exception as exc:  # noqa: BLE001 - a blank executor is an optimisation: log, go on
            self.starting -= 1
            self._paused_until = time.monotonic() + RETRY_AFTER_S
            log.warning("could not start a blank executor for the warm pool (again in %.0f s): %s",
                        RETRY_AFTER_S, exc)
            await self._discard(ex, exchange, handle)
            self._release_waiters()
            return
        self.starting -= 1
        if self._closed:
            await self._stop(ex)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(ex)
                return
        self.ready.append(ex)

    async def _discard(self, ex: ExecutorState | None, exchange: Exchange | None, handle: ExecutorHandle | None) -> None:
        """Undo a start that did not finish: whatever of it exists is nobody's yet, and nothing
        else would stop it."""
        if ex is not None:
            await self._stop(ex)  # its stream, channel, exchange directory and executor
            return
        if exchange is not None:
            exchange.remove()
        if handle is not None:
            await self.backend.stop_executor(handle)

    @staticmethod
    async def _held(ex: ExecutorState) -> None:
        """Wait until the executor has its end of the `Calls` stream: it answers the stream's
        opening with its (empty) initial metadata once it counts the stream as its hold
        (`engine.executor.lifetime`). Until then an engine killed would leave it waiting for
        `INIT_TIMEOUT_S` (or the next engine's sweep), so only then is it ready. Raises
        `ExecutorGone` when the stream ends first."""
        await ex.stream.initial_metadata()
        if ex.gone is not None or ex.stream.done():
            raise ex.gone or ExecutorGone("the executor closed its call stream")

    def _release_waiters(self) -> None:
        """A start failed: functions waiting beyond what is still on its way start their own."""
        while len(self._waiters) > self.starting:
            waiter = self._waiters.pop()
            if not waiter.done():
                waiter.set_result(None)

    async def _stop(self, ex: ExecutorState) -> None:
        ex.stopping = True
        if ex.exchange is not None:
            ex.exchange.remove()
        if ex.reader is not None:
            ex.reader.cancel()
        await ex.channel.close()
        await self.backend.stop_executor(ex.handle)


__all__ = ["BLANK", "WARM_ENV", "WarmPool", "blank_spec", "warm_size"]
