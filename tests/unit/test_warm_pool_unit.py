"""The warm pool's bookkeeping (`engine.scheduler.warm.WarmPool`) on a fake backend: how many
blank executors it starts, which specs they fit, who gets one that is still starting, and that
everything it started is stopped. The real executors are in tests/integration/test_warm_pool.py."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.errors import SDKUsageError
from engine.scheduler import warm
from engine.scheduler.warm import WarmPool, warm_size


class IdleStream:
    """A `Calls` stream to an executor that waits for calls: it answers the opening (with its
    initial metadata) once the test lets it (`FakeBackend.holds`), then never ends by itself."""

    def __init__(self, holds: asyncio.Event) -> None:
        self.holds = holds
        self.ended = asyncio.Event()

    async def initial_metadata(self) -> tuple[()]:
        await self.holds.wait()
        return ()

    def done(self) -> bool:
        return self.ended.is_set()

    async def write(self, batch: Any) -> None:
        pass

    async def _batches(self) -> Any:
        await self.ended.wait()
        return
        yield

    def __aiter__(self) -> Any:
        return self._batches()


class IdleChannel:
    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def unary_unary(self, *_: Any, **__: Any) -> Any:
        async def refuse(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("the warm pool only opens the stream")
        return refuse

    def stream_stream(self, *_: Any, **__: Any) -> Any:
        def open_stream(*args: Any, **kwargs: Any) -> IdleStream:
            stream = IdleStream(self.backend.holds)
            self.backend.streams.append(stream)
            return stream
        return open_stream

    async def close(self) -> None:
        pass


class FakeBackend(Backend):
    """Starts nothing: a start waits until the test releases it (or fails, if told to); its
    executors hold their stream once `holds` is set (at once, unless the test clears it)."""

    name = "fake"

    def __init__(self) -> None:
        self.started: list[ExecutorSpec] = []
        self.stopped: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False
        self.holds = asyncio.Event()
        self.holds.set()
        self.streams: list[IdleStream] = []

    def channel(self, handle: ExecutorHandle) -> Any:
        return IdleChannel(self)

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        self.started.append(spec)
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("no image")
        return ExecutorHandle(id=f"x{len(self.started)}", address="127.0.0.1:1", function=spec.function)

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        self.stopped.append(handle.id)

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        return ExitInfo(exited=False)


def function_spec(**changes: Any) -> ExecutorSpec:
    return dataclasses.replace(ExecutorSpec(function="f", run_id="r1", concurrency=8), **changes)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_fill_starts_up_to_size_within_room() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = WarmPool(backend, 3, {}, room=lambda: 2)
        pool.fill()
        await settle()
        assert len(backend.started) == 2 and pool.live() == 2  # room, not size, is the limit
        pool.room = lambda: 10
        pool.fill()
        await settle()
        assert len(backend.started) == 3 and len(pool.ready) == 3
        pool.fill()
        await settle()
        assert len(backend.started) == 3  # full
        await pool.close()
        assert sorted(backend.stopped) == ["x1", "x2", "x3"]

    asyncio.run(scenario())


async def one_starting_unheld() -> tuple[FakeBackend, WarmPool]:
    """A pool of one blank executor, started, whose stream it does not hold yet."""
    backend = FakeBackend()
    backend.holds.clear()
    pool = WarmPool(backend, 1, {}, room=lambda: 5)
    pool.fill()
    await settle()
    assert len(backend.started) == 1 and pool.live() == 1 and not pool.ready
    return backend, pool


def test_a_blank_executor_is_ready_only_once_it_holds_its_stream() -> None:
    """Until the executor answers the stream's opening it does not yet count the stream as its
    hold: an engine killed then would leave it waiting to be initialised, so it is not ready."""
    async def scenario() -> None:
        backend, pool = await one_starting_unheld()
        backend.holds.set()
        await settle()
        assert len(pool.ready) == 1
        await pool.close()
        assert backend.stopped == ["x1"]

    asyncio.run(scenario())


def test_a_blank_executor_whose_stream_ends_before_it_holds_it_is_stopped() -> None:
    async def scenario() -> None:
        backend, pool = await one_starting_unheld()
        (stream,) = backend.streams
        # The executor dies before it holds the stream: the stream ends, then the (empty)
        # initial metadata of an ended call arrives.
        stream.ended.set()
        backend.holds.set()
        await settle()
        assert not pool.ready and backend.stopped == ["x1"] and pool.live() == 0
        await pool.close()

    asyncio.run(scenario())


def test_only_a_spec_like_the_blank_one_fits() -> None:
    pool = WarmPool(FakeBackend(), 2, {"TRACE": "1"}, room=lambda: 2)
    assert pool.fits(function_spec(env={"TRACE": "1"}))
    assert not pool.fits(function_spec(env={"TRACE": "1", "API_KEY": "secret"}))
    assert not pool.fits(function_spec(env={"TRACE": "1"}, image="engine-fn-x:1"))
    assert not pool.fits(function_spec(env={"TRACE": "1"}, memory_gb=4.0))
    assert not pool.fits(function_spec(env={"TRACE": "1"}, constraints=("node.labels.gpu==true",)))
    assert not WarmPool(FakeBackend(), 0, {"TRACE": "1"}, room=lambda: 2).fits(function_spec(env={"TRACE": "1"}))


def test_a_taker_waits_for_a_starting_blank_executor_and_the_pool_refills() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        backend.gate.clear()
        pool = WarmPool(backend, 1, {}, room=lambda: 5)
        pool.fill()
        await settle()
        taking = asyncio.ensure_future(pool.take(function_spec()))
        await settle()
        assert not taking.done()  # one is starting: wait for it rather than start another
        assert await pool.take(function_spec()) is None  # a second taker has none on its way
        backend.gate.set()
        ex = await taking
        assert ex is not None and ex.handle.id == "x1" and pool.taken == 1
        await settle()
        assert len(backend.started) >= 2 and pool.live() == 1  # refilled
        assert await pool.take(function_spec(image="own:1")) is None
        await pool.close()
        assert "x1" not in backend.stopped  # taken: the scheduler's to stop now
        ex.reader.cancel()  # type: ignore[union-attr]
        await ex.channel.close()

    asyncio.run(scenario())


def test_a_failed_start_hands_the_taker_nothing_and_pauses_the_pool() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        backend.fail = True
        backend.gate.clear()
        pool = WarmPool(backend, 2, {}, room=lambda: 5)
        pool.fill()
        await settle()
        taking = asyncio.ensure_future(pool.take(function_spec()))
        await settle()
        backend.gate.set()
        assert await taking is None  # it starts its own
        await settle()
        starts = len(backend.started)
        pool.fill()
        await settle()
        assert len(backend.started) == starts  # paused for RETRY_AFTER_S, not looping
        await pool.close()

    asyncio.run(scenario())


def test_evict_stops_ready_blank_executors() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        pool = WarmPool(backend, 3, {}, room=lambda: 3)
        pool.fill()
        await settle()
        pool.room = lambda: 0
        assert pool.evict(2) == 2 and len(pool.ready) == 1
        await settle()
        assert len(backend.stopped) == 2
        await pool.close()
        assert len(backend.stopped) == 3

    asyncio.run(scenario())


def test_warm_size_comes_from_the_environment_then_the_config_then_the_backend(
        monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FakeBackend()
    monkeypatch.delenv(warm.WARM_ENV, raising=False)
    assert warm_size(None, backend.warm_executors) == Backend.warm_executors == 2
    assert warm_size(5, 2) == 5
    monkeypatch.setenv(warm.WARM_ENV, "0")
    assert warm_size(5, 2) == 0
    monkeypatch.setenv(warm.WARM_ENV, "-1")
    with pytest.raises(SDKUsageError, match="whole number"):
        warm_size(None, 2)
