"""Blank executors started before an application is even loaded: `engine run`'s head start.

`engine run` spends its first few hundred milliseconds importing the engine and the
application; a container (or an executor process) takes about as long to start.
`EarlyStart.begin` (called by the CLI before it loads the application) starts the warm pool's
first blank executor on a thread of its own, so the two overlap; `engine.runner` then makes the
backend to match (the docker backend under the instance id the container was labelled with, the
process backend made here) and the scheduler's warm pool takes the executor over
(`engine.scheduler.warm.WarmPool.adopt`) and gives it a function when one needs an executor.

`begin` returns once the first start request is about to go out (the container's creation, or
the process's spawn), not at once: on a small machine the thread's work and the CLI's imports,
run together, delayed the container's creation by about half a second; in sequence, the CLI
imports while Docker works. So the thread does little before that request: on docker it reads
the runtime image's tag (cached, `engine.images.tag`) and speaks to the Docker engine through
`engine.backends.dockerapi`'s small client, with the container definition the docker backend
uses, and never imports the Docker SDK or gRPC. This module imports nothing heavy itself, not
even asyncio before its thread runs (nor does what it imports: `tests/unit/test_startup_imports.py`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backends.base import Backend, ExecutorHandle, blank_spec, warm_size
from engine.errors import SDKUsageError

if TYPE_CHECKING:
    from engine.backends.dockerapi import LocalDocker

# At most this long `begin` waits for the first start request to go out (a Docker engine that
# does not answer must not hold `engine run` up; the usual path then reports it).
HEAD_START_S = 1.0


class EarlyStart:
    """Blank executors started on a thread before the application is loaded, for `engine run`:
    `count` blank executors (`begin`: one) of the backend `name` (docker or process), started
    from the warm pool's blank spec while the main thread imports the application and opens the
    store. `engine.runner` makes its backend to match (`docker_image`, `instance_id`,
    `backend`) and hands the executors to the scheduler's warm pool when `made(backend)`.

    Anything going wrong here (no Docker, no runtime image) only means no early start: the
    usual path then reports it. `discard` (always called, after the run) stops every executor
    started here that no backend took over: none is left behind, whatever happened to the run.
    """

    def __init__(self, name: str, count: int, state_dir: Callable[[], Path]) -> None:
        self.name = name
        self.state_dir = state_dir
        self.count = count
        self.spec = blank_spec({})
        # docker: the instance id its containers are labelled with (the docker backend made for
        # the run takes it, and with it their ownership: its `close` removes them).
        self.instance_id = os.urandom(6).hex()
        # docker: the runtime image the first container was created from (None: there was none).
        self._image: concurrent.futures.Future[str | None] = concurrent.futures.Future()
        # The backend made here (None: none was).
        self._backend: concurrent.futures.Future[Backend | None] = concurrent.futures.Future()
        # Set once the first executor's start is about to be requested (or there is no early start).
        self._requested: concurrent.futures.Future[None] = concurrent.futures.Future()
        # One per executor, each set as it is up (None: it could not start).
        self.handles: list[concurrent.futures.Future[Any]] = [concurrent.futures.Future() for _ in range(count)]
        # Every executor started here, whoever took it (what `discard` stops unless a backend
        # took them over). A future above may be cancelled by its taker (the scheduler closing):
        # the executor is still listed here.
        self._started: list[Any] = []
        self._taken = False
        self._backend_started = False  # docker: its thread is making the backend
        target = self._start_docker if name == "docker" else self._start_process
        self._thread = threading.Thread(target=target, name="engine-early-start", daemon=True)
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
        # Let the thread send its first start request before this thread imports the rest of
        # `engine run` (see the module's docstring). Once the request is out, the thread waits
        # on Docker (or the process) and this thread's imports run beside it.
        with contextlib.suppress(concurrent.futures.TimeoutError):
            early._requested.result(timeout=HEAD_START_S)
        return early

    # --- docker: the local engine's API, no Docker SDK --------------------------------------

    def _start_docker(self) -> None:
        try:
            from engine.backends.dockerapi import LocalDocker
            from engine.images.tag import runtime_image_tag

            docker = LocalDocker.here()
            # The tag names the Python version and covers it: an image of another Python is
            # another tag. A missing image fails the container's creation (no early start).
            image = runtime_image_tag() if docker is not None else None
        except Exception:  # noqa: BLE001 - no early start; the usual path says what is wrong
            docker, image = None, None
        try:
            if docker is not None and image is not None:
                for i, future in enumerate(self.handles):
                    try:
                        handle = self._docker_executor(docker, image, first=i == 0)
                    except Exception:  # noqa: BLE001 - one fewer blank executor (a bad setting: the usual path says)
                        handle = None
                    _give(future, handle)
        finally:  # whatever happened, nobody waits forever
            _give(self._image, None)
            self._nothing()
            if not self._backend_started:
                self._backend.set_result(None)

    def _make_docker_backend(self, image: str) -> None:
        """The docker backend for the run, made while Docker starts the first container (its
        Docker SDK import and set-up take 0.2-0.4 s that the run would otherwise wait for)."""
        try:
            from engine.backends.docker import DockerBackend

            backend: Backend | None = DockerBackend(instance_id=self.instance_id, image_for=lambda spec: image)
        except Exception:  # noqa: BLE001 - the runner makes it the usual way, and says what is wrong
            backend = None
        self._backend.set_result(backend)

    def _docker_executor(self, docker: LocalDocker, image: str, *, first: bool) -> ExecutorHandle | None:
        """Create and start one blank container and wait until it accepts connections (the
        docker backend's `start_executor`, on this thread); None when it could not."""
        import socket

        from engine.backends.dockerapi import (
            START_TIMEOUT_S,
            DockerAPIError,
            bridge_ip,
            container_name,
            executor_container,
            owner_labels,
        )
        from engine.executor.lifetime import EXECUTOR_ENV_DEFAULTS, blank_env, executor_env
        from engine.images.common import EXECUTOR_PORT

        body = executor_container(
            image, labels=owner_labels(self.instance_id, self.spec.run_id, self.spec.function),
            environment={**EXECUTOR_ENV_DEFAULTS, **self.spec.env, **executor_env(), **blank_env(self.spec.function)},
            cpu=self.spec.cpu,
            memory_gb=self.spec.memory_gb, ephemeral_disk_gb=self.spec.ephemeral_disk_gb, read_only=True)
        if first:
            _give(self._requested, None)
        try:
            container_id = docker.create(body, container_name(self.spec.function))
        except DockerAPIError:
            return None  # no such image (the usual path builds it), or Docker refused: it says why
        self._started.append(container_id)
        if first:
            # The image is there: the run's docker backend is made now, beside the start.
            _give(self._image, image)
            self._backend_started = True
            threading.Thread(target=self._make_docker_backend, args=(image,),
                             name="engine-early-backend", daemon=True).start()
        try:
            docker.start(container_id)
            ip = bridge_ip(docker.inspect(container_id))
            deadline = time.monotonic() + START_TIMEOUT_S
            next_check = time.monotonic() + 0.5
            while ip:
                with contextlib.suppress(OSError), socket.create_connection((ip, EXECUTOR_PORT), timeout=1.0):
                    return ExecutorHandle(id=container_id, address=f"{ip}:{EXECUTOR_PORT}",
                                          function=self.spec.function, ref=container_id)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if time.monotonic() >= deadline or not (docker.inspect(container_id).get("State") or {}).get("Running"):
                        break  # the usual path starts another, and says what is wrong if it fails too
                time.sleep(0.02)
        except DockerAPIError:
            pass
        with contextlib.suppress(DockerAPIError):
            docker.remove(container_id)
        return None

    def docker_image(self) -> str | None:
        """The runtime image the early start found and started its container from (waits for
        the thread to look), or None: then the docker backend is made the usual way."""
        return self._image.result()

    # --- process ----------------------------------------------------------------------------

    def _start_process(self) -> None:
        import asyncio  # on this thread: `begin`'s caller does not wait for its import

        self._image.set_result(None)
        try:
            from engine.backends.process import ProcessBackend

            backend: ProcessBackend = ProcessBackend(log_dir=self.state_dir() / "executors")
            # Its executors' template imports them in a process of its own, beside this thread.
            backend.start_template()
        except Exception:  # noqa: BLE001 - no early start; the usual path says what is wrong
            self._backend.set_result(None)
            self._nothing()
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
        """The backend made here (waits for it), or None: then the runner makes it."""
        return self._backend.result()

    # --- both -------------------------------------------------------------------------------

    def made(self, backend: Backend) -> bool:
        """Whether `backend` owns the executors started here (then its warm pool may adopt them,
        and its `close` stops them): the process backend made here, or a docker backend with
        this instance id. Marks them taken: `discard` then leaves them to it."""
        mine = backend is self.backend() or (
            backend.name == "docker" and getattr(backend, "instance_id", None) == self.instance_id)
        self._taken = self._taken or mine
        return mine

    def _nothing(self) -> None:
        """Resolve whatever is not yet: no (more) executors from here."""
        _give(self._requested, None)
        for future in self.handles:
            _give(future, None)

    def discard(self) -> None:
        """Stop every executor started here that no backend took over (after the run; one that
        was taken is stopped by its backend's `close`, which has run by now)."""
        self._thread.join()
        if self._taken:
            return
        if self.name == "docker":
            if not self._started:
                return
            from engine.backends.dockerapi import DockerAPIError, LocalDocker

            docker = LocalDocker.here()
            for container_id in self._started if docker is not None else []:
                with contextlib.suppress(DockerAPIError):
                    docker.remove(container_id)  # type: ignore[union-attr]
            return
        backend = self._backend.result()
        if backend is None:
            return
        import asyncio

        # Nobody took it: it has started nothing else (its executors' template included).
        asyncio.run(backend.close())


def _give(future: concurrent.futures.Future[Any], value: Any) -> None:
    """Set `future` unless its taker cancelled it (the scheduler closed before it arrived)."""
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        future.set_result(value)


__all__ = ["EarlyStart"]
