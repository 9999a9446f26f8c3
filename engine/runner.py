"""Drive one run to its end in this process: the glue behind `engine run`, `engine resume`,
`engine rerun` and `run_local_application`.

It opens the store, picks and starts the backend, starts the scheduler, submits (or resumes) the
run, reports progress while it executes and, whatever happens — success, failure, Ctrl-C —
stops every executor before returning. A run interrupted by Ctrl-C is marked `cancelled` and
stays resumable; one whose engine was killed stays `running` in the store until resumed — which
its lease allows once it has run out (`engine.scheduler.leases`): `ENGINE_LEASE_TTL` seconds,
10 by default, after the process died.

`engine run` on docker starts its first blank executors before it even loads the application
(`EarlyStart`, on a thread): the container starts while the application is imported and the
store opened, and the scheduler's warm pool takes them over (`engine.scheduler.warm`).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import tracing, wire
from engine.app import AppSpec
from engine.backends.base import Backend
from engine.backends.early import EarlyStart
from engine.config import EngineConfig
from engine.errors import InfrastructureError, SDKUsageError
from engine.paths import default_state_dir
from engine.scheduler import Scheduler
from engine.scheduler.context import headers_json
from engine.scheduler.scheduler import default_max_executors
from engine.sdk.ai import MODEL_HEADER
from engine.store import open_store, store_url
from engine.timeouts import within
from engine.wire.v1 import engine_pb2 as pb

Progress = Callable[[str, dict[str, int]], None]


@dataclass
class RunOutcome:
    run_id: str
    status: str
    result: Any = None
    failure: pb.Failure | None = None

    def error(self) -> Exception | None:
        if self.failure is None:
            return None
        return wire.exception_from_failure(self.failure, self.run_id)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while a run executed: its executors are stopped and it is marked `cancelled`."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


def choose_backend(requested: str | None, app: AppSpec | None) -> tuple[str, str | None]:
    """The backend to use and, when it was a fallback, a one-line note saying so."""
    name = requested or os.environ.get("ENGINE_BACKEND") or (app.config.backend if app else None) or "auto"
    if name not in ("auto", "process", "docker", "swarm"):
        raise SDKUsageError(f"unknown backend {name!r}: use process, docker or swarm")
    if name != "auto":
        return name, None
    try:
        from engine.images import docker_client

        docker_client()
    except Exception:  # noqa: BLE001 - any failure to reach Docker means: fall back
        return "process", "no Docker engine answers: running functions as local processes (--backend process)"
    return "docker", None


def make_backend(name: str, state_dir: Path, app: AppSpec | None,
                 progress_line: Callable[[str], None] | None = None,
                 config: EngineConfig | None = None, early: EarlyStart | None = None) -> Backend:
    """The backend `name`, set up for `app` (a run) or for any application (`engine server`,
    app None). `config` is the engine.yaml whose `swarm:` section applies (default: the app's).
    `early`: blank executors started before the application was loaded (docker)."""
    if name == "process":
        from engine.backends.process import ProcessBackend

        made = early.backend() if early is not None and early.name == "process" else None
        return made if made is not None else ProcessBackend(log_dir=state_dir / "executors")
    if name == "docker":
        return _docker_backend(app, progress_line, early if early is not None and early.name == "docker" else None)
    if name == "swarm":
        from engine.backends.swarm import swarm_backend

        if config is None and app is not None:
            config = app.config
        return swarm_backend(config.swarm if config is not None else None, app)
    raise SDKUsageError(f"unknown backend {name!r}: use process, docker or swarm")


def _docker_backend(app: AppSpec | None, say: Callable[[str], None] | None,
                    early: EarlyStart | None = None) -> Backend:
    """The docker backend, with every image the application needs built (offline, cached: a
    no-op when they exist) and each function pointed at its image. `early`: the one it made."""
    import uuid

    from engine import images
    from engine.backends.docker import DockerBackend

    # The early start's container runs the runtime image it found: the backend takes its
    # instance id (and with it the container) and that image.
    found = early.docker_image() if early is not None else None
    if found is not None:
        runtime_tag = found
    else:
        runtime_tag = images.runtime_image_tag()
        if not _image_exists(runtime_tag) and say:
            say(f"building the runtime image {runtime_tag} (once; `engine image build` does it ahead)")
        runtime_tag = images.build_runtime_image(progress=None)
    if app is not None:
        app.resolve_images(lambda image: images.build_function_image(image, progress=say))
    # The tag of exactly what was built: the tag derives from the engine's source, and must not
    # be recomputed later.
    made = early.backend() if found is not None else None  # type: ignore[union-attr]
    if made is not None:
        return made  # made beside the early container's start, with its instance id and image
    instance_id = early.instance_id if found is not None else uuid.uuid4().hex[:12]  # type: ignore[union-attr]
    return DockerBackend(instance_id=instance_id, image_for=lambda spec: runtime_tag)


def _image_exists(tag: str) -> bool:
    import docker.errors

    from engine.images import docker_client

    try:
        docker_client().api.inspect_image(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def execute(
    app: AppSpec,
    *,
    kwargs: dict[str, Any] | None = None,
    resume_id: str | None = None,
    state_dir: Path | None = None,
    backend: str | None = None,
    progress: Progress | None = None,
    note: Callable[[str], None] | None = None,
    budget: Mapping[str, int | float | None] | None = None,
    model: str | None = None,
    rerun: tuple[str, str] | None = None,
    early: EarlyStart | None = None,
    process_ends: bool = False,
) -> RunOutcome:
    """Run (or resume) `app` to the end. Blocks. Safe to call from a thread with a running loop.
    `budget` (`budgets.parse_budget`'s form) replaces limits of the application's budget, or of
    the resumed run's. `model` is a new run's model for `engine.ai`: kept with the run as the
    submission header `X-Engine-Model` is, so that a resume keeps it too. `rerun=(run_id,
    function)` makes a new run that reruns `run_id` from `function` with `app`'s code
    (`engine.scheduler.rerun`). `early`: blank executors started before `app` was loaded (the
    caller discards it afterwards). `process_ends`: the caller's process ends right after (the
    CLI), so the executors' removal need not be waited for (`Backend.close_without_waiting`)."""
    state_dir = Path(state_dir or default_state_dir())
    backend_name, fallback = choose_backend(backend, app)
    if fallback and note:
        note(fallback)
    started: dict[str, str] = {}
    coro = _drive(app, kwargs=kwargs, resume_id=resume_id, state_dir=state_dir,
                  backend_name=backend_name, progress=progress, note=note, started=started,
                  budget=budget, model=model, rerun=rerun,
                  early=early if early is not None and early.name == backend_name else None,
                  process_ends=process_ends)
    box: dict[str, Any] = {}

    async def main() -> None:
        # The outcome is handed back in `box`, not as the task's result: on the main thread,
        # Python 3.11's `asyncio.run` ends by formatting a repr of its SIGINT handler, which
        # holds the task, result and all (the whole research tree's value: 15 ms; a large
        # value's repr takes seconds and gigabytes).
        box["value"] = await coro

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            asyncio.run(main())
            return box["value"]  # type: ignore[no-any-return]
        except KeyboardInterrupt:
            if "run_id" in started:
                raise RunInterrupted(started["run_id"]) from None
            raise
    # Called from inside an event loop (a notebook, an async test): run in a thread of its own.

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="engine-run")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


async def _drive(
    app: AppSpec, *, kwargs: dict[str, Any] | None, resume_id: str | None, state_dir: Path,
    backend_name: str, progress: Progress | None, note: Callable[[str], None] | None,
    started: dict[str, str], budget: Mapping[str, int | float | None] | None = None,
    model: str | None = None,
    rerun: tuple[str, str] | None = None,
    early: EarlyStart | None = None,
    process_ends: bool = False,
) -> RunOutcome:
    store = open_store(store_url(state_dir))
    try:
        if resume_id is not None:
            row = store.get_run(resume_id)
            if row.status == "succeeded":
                return _outcome_from_store(store, resume_id)
            _refuse_if_driven(store, resume_id)
        backend = await asyncio.to_thread(make_backend, backend_name, state_dir, app, note, None, early)
        backend.close_without_waiting = process_ends
        max_exec = app.config.max_executors or default_max_executors()
        idle = app.config.idle_timeout if app.config.idle_timeout is not None else 10.0
        # A run started here is a child of the caller's trace when TRACEPARENT names one.
        scheduler = Scheduler(store, backend, max_executors=max_exec, idle_timeout=idle,
                              tracer=tracing.tracer(parent_from_env=True),
                              warm_executors=app.config.warm_executors)
        await scheduler.start()
        if early is not None and early.made(backend):
            scheduler.adopt_blank_executors([asyncio.wrap_future(f) for f in early.handles], early.spec)
        # One run: blank executors serve its functions' first calls; refilling them as they are
        # taken would start executors this run will not use (an `engine server` refills).
        scheduler.start_warm_pool(refill=False, app=app)
        run = None
        try:
            if resume_id is not None:
                if not scheduler.leases.claim(resume_id, RESUMABLE):
                    _refuse_if_driven(store, resume_id)
                    raise SDKUsageError(f"run {resume_id} cannot be resumed now: see `engine show {resume_id}`")
                run = scheduler.resume_run(app, resume_id, budget)
            elif rerun is not None:
                run = scheduler.rerun_run(app, *rerun, budget=budget)
            else:
                values = kwargs or {}
                args = pb.Arguments()
                for key, value in values.items():
                    try:
                        args.kwargs[key].value.data = wire.dumps(value)
                    except Exception as exc:  # noqa: BLE001
                        raise SDKUsageError(f"input {key!r} cannot be serialised: {exc}") from None
                headers = headers_json([(MODEL_HEADER, model)]) if model else None
                run = scheduler.submit_run(app, wire.dumps(values), args,
                                           budget=app.budget().updated(budget or {}), headers=headers)
            started["run_id"] = run.run_id
            if progress is not None:
                progress(run.run_id, run.progress())
            while not run.done.is_set():
                try:
                    await within(0.1, run.done.wait())
                except TimeoutError:
                    pass
                if progress is not None:
                    progress(run.run_id, run.progress())
        except asyncio.CancelledError:
            if run is not None and not run.done.is_set():
                scheduler.cancel_run(run.run_id, "interrupted (Ctrl-C): continue it with `engine resume "
                                     f"{run.run_id}`")
                store.commit()
            raise
        finally:
            await scheduler.close()
        if run.lost:
            raise InfrastructureError(
                f"run {run.run_id} was taken over by another process while this one was paused or cut "
                f"off from the store: it is no longer driven here (see `engine show {run.run_id}`)")
        return _outcome_from_store(store, run.run_id)
    finally:
        store.close()


# A run `engine resume` may take: one that ended without succeeding, or one whose driver died.
RESUMABLE = ("running", "failed", "cancelled")


def _refuse_if_driven(store: Any, run_id: str) -> None:
    """One clear line when another live process holds the run's lease."""
    lease = store.lease_of(run_id)
    if lease.live:
        until = time.strftime("%H:%M:%S", time.localtime(time.time() + (lease.expires_in or 0)))
        raise SDKUsageError(
            f"run {run_id} is being driven by {lease.owner}; its lease runs out at {until} "
            f"(in {lease.expires_in:.1f} s) unless that process renews it: stop that process, "
            "or resume once it is gone")


def _outcome_from_store(store: Any, run_id: str) -> RunOutcome:
    row = store.get_run(run_id)
    failure = pb.Failure.FromString(row.failure) if row.failure else None
    data = store.run_result(row)
    result = wire.loads(data) if data is not None else None
    return RunOutcome(run_id=run_id, status=row.status, result=result, failure=failure)


def read_outcome(state_dir: Path, run_id: str) -> RunOutcome:
    store = open_store(store_url(state_dir))
    try:
        return _outcome_from_store(store, run_id)
    finally:
        store.close()


__all__ = ["RunOutcome", "choose_backend", "execute", "read_outcome"]
