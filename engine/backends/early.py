"""Blank executors started before an application is even loaded: `engine run`'s head start.

`engine run` spends its first few hundred milliseconds importing the engine and the
application; a container (or an executor process) takes about as long to start.
`EarlyStart.begin` (called by the CLI before it loads the application) makes the backend and
starts the warm pool's first blank executors on a thread of its own, so the two overlap;
`engine.runner` then uses that backend, and the scheduler's warm pool takes the executors over
(`engine.scheduler.warm.WarmPool.adopt`) and gives them functions as they need executors.

`begin` returns once the first start request is out (the container being created, or the
process spawned), not at once: on a small machine the thread's imports and the CLI's, run
together, delayed the container's creation by about half a second; in sequence, the CLI
imports while Docker works. This module imports nothing heavy itself (nor does what it imports:
`tests/unit/test_startup_imports.py`): the thread imports the backend (the Docker SDK).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.backends.base import Backend, blank_spec, warm_size
from engine.errors import SDKUsageError

# At most this long `begin` waits for the first start request to go out (a Docker engine that
# does not answer must not hold `engine run` up; the usual path then reports it).
HEAD_START_S = 1.0


class EarlyStart:
    """Blank executors started on a thread before the application is loaded, for `engine run`:
    the backend `name` (docker or process) is made, and `count` blank executors (`begin`: one)
    started from the warm pool's blank spec, while the main thread imports the application and opens the
    store. `engine.runner` uses the backend and hands the executors to the scheduler's warm
    pool when the run's backend is `name`.

    Anything going wrong here (no Docker, no runtime image) only means no early start: the
    usual path then reports it. `discard` (always called, after the run) stops every container
    started here that is still there: none is left behind, whatever happened to the run.
    """

    def __init__(self, name: str, count: int, state_dir: Callable[[], Path]) -> None:
        self.name = name
        self.state_dir = state_dir
        self.count = count
        self.spec = blank_spec({})
        self.runtime_tag = ""
        self._backend: concurrent.futures.Future[Backend | None] = concurrent.futures.Future()
        # Set once the first executor's start is requested (or there is no early start).
        self._requested: concurrent.futures.Future[None] = concurrent.futures.Future()
        # One per executor, each set as it is up (None: it could not start).
        self.handles: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(count)]
        # Every executor started here, whoever took it (what `discard` stops). A future above may
        # be cancelled by its taker (the scheduler closing): the executor is still listed here.
        self._started: list[Any] = []
        self._thread = threading.Thread(target=self._start, name="engine-early-start", daemon=True)
        self._thread.start()

    @classmethod
    def begin(cls, requested: str | None, state_dir: Callable[[], Path]) -> EarlyStart | None:
        """Start early when the run's backend is known to be docker or process (asked for; or
        `auto`, which is docker when Docker answers) and the warm pool is on. `state_dir()`:
        the run's state directory (the process backend's logs go there)."""
        name = requested or os.environ.get("ENGINE_BACKEND") or "auto"
        try:
            count = warm_size(None, Backend.warm_executors)
        except SDKUsageError:
            return None  # the scheduler reports it
        if name == "auto":
            name = "docker"
        # One: the root call's. The application is not loaded yet, so how many of its functions
        # a blank executor fits is not known; the warm pool starts those (`start_warm_pool`),
        # and a one-call run waits for no second container at its end.
        if name not in ("docker", "process") or count <= 0:
            return None
        early = cls(name, 1, state_dir)
        # Let the thread import the backend and send its first start request before this
        # thread imports the rest of `engine run`: on a small machine both importing at once
        # delayed the container's creation by about half a second. Once the request is out, the
        # thread waits on Docker (or the process) and this thread's imports run beside it.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            early._requested.result(timeout=HEAD_START_S)
        return early

    def _make(self) -> Backend:
        if self.name == "process":
            from engine.backends.process import ProcessBackend

            return ProcessBackend(log_dir=self.state_dir() / "executors")
        import uuid

        import docker.errors

        from engine import images
        from engine.backends.docker import DockerBackend

        tag = images.runtime_image_tag()
        try:
            images.docker_client().api.inspect_image(tag)
        except docker.errors.ImageNotFound:
            raise LookupError(tag) from None  # built by the usual path, which says so
        backend = DockerBackend(instance_id=uuid.uuid4().hex[:12], image_for=lambda spec: tag)
        self.runtime_tag = tag
        return backend

    def _start(self) -> None:
        try:
            backend = self._make()
        except Exception:  # noqa: BLE001 - no early start; the usual path says what is wrong
            self._backend.set_result(None)
            self._requested.set_result(None)
            for future in self.handles:
                _give(future, None)
            return
        self._backend.set_result(backend)

        async def start(future: concurrent.futures.Future[Any]) -> None:
            try:
                handle = await backend.start_executor(self.spec)
            except Exception:  # noqa: BLE001 - one fewer blank executor
                handle = None
            if handle is not None:
                self._started.append(handle)
            _give(future, handle)

        async def start_all() -> None:
            # The first alone: the root call needs it first, and on a small machine starting the
            # others beside it would slow it down; the rest once it is up.
            first = asyncio.ensure_future(start(self.handles[0]))
            await asyncio.sleep(0)  # its start request is sent (the backend's thread pool has it)
            self._requested.set_result(None)
            await first
            await asyncio.gather(*(start(f) for f in self.handles[1:]))

        asyncio.run(start_all())

    def backend(self) -> Backend | None:
        """The docker backend made here (waits for it), or None."""
        return self._backend.result()

    def discard(self) -> None:
        """Stop every container started here that is still there (after the run: none is in
        use any more; an adopted one is usually gone already, and stopping is idempotent)."""
        self._thread.join()
        backend = self._backend.result()
        handles = list(self._started)
        if backend is None or not handles:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(backend.stop_executor(h) for h in handles), return_exceptions=True)

        asyncio.run(stop_all())


def _give(future: concurrent.futures.Future[Any], value: Any) -> None:
    """Set `future` unless its taker cancelled it (the scheduler closed before it arrived)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(value)


__all__ = ["EarlyStart"]
