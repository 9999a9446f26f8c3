"""The control plane: accepted runs, the durable queue, and the scheduler that executes them.

Run states as the server sees them (the `runs.status` column):

    accepted ──▶ queued ──claimed, capacity──▶ running ──▶ succeeded | failed | cancelled
                   │                                                  │ POST …/resume
                   └──POST …/cancel──▶ cancelled ◀────────────────────┘ (back to queued)

Several servers may share one store (PostgreSQL): each accepts submissions and serves the API
for every run; each run is driven by whichever server holds its lease.

Invariants, and where they are enforced (the queue's own — a burst is never refused, oldest
first, one driver per run, take-over of runs whose driver died — are in `queue.py`):

- **An accepted run is durable.** `submit` commits the run's row (status `queued`, its input,
  its deployed version) *before* answering 202. After that, only a committed transition moves
  it: a `kill -9` at any point leaves it `queued` (claimed by a server with room) or `running`
  (taken over, once its lease runs out, and resumed from its checkpoints).
- **One driver per run.** A run is driven only under its lease (`engine.scheduler.leases`),
  claimed by the queue, and every write is fenced by the lease's epoch. `_scan` runs every
  lease-renewal interval: it takes over runs whose lease ran out and pumps the queue.
- **A run finishes on its version.** The run's row records its deployed version; starting and
  resuming it load that version (`Deployments.for_run`), from the store if this server has not
  seen it, whatever is deployed since.
- **A cancel reaches the driver.** A cancel of a run another process drives is recorded in its
  row (`cancel_requested`); its driver sees it at its next lease renewal and cancels it, and a
  server that takes the run over cancels it at once.

Calls inside runs are the scheduler's business (and its invariants); this module only watches
them, through the scheduler's `on_event` callback, to wake server-sent-event subscribers (the
event hub, `events.py`) and to record metrics (`metrics.py`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine import wire
from engine.app import validate_input
from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.errors import InputError, SDKUsageError
from engine.scheduler import rerun
from engine.scheduler.budgets import Budget, dump_budget, load_budget
from engine.scheduler.context import headers_json
from engine.scheduler.scheduler import Scheduler, root_call_id
from engine.scheduler.signals import SignalRefused, send_signal
from engine.scheduler.state import CallState, RunState
from engine.server.deployments import Deployment, Deployments
from engine.server.events import EventHub
from engine.server.metrics import ServerMetrics
from engine.server.queue import RunQueue
from engine.server.webhooks import Sender
from engine.statuses import CALL_FINAL, RUN_LIVE, CallStatus, RunStatus
from engine.store import RunRow, RunWebhook, Store, StoreUnavailable
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.app import AppSpec
    from engine.sdk.function import Function

log = logging.getLogger("engine.server")


def _sweep_every() -> float:
    """Seconds between sweeps of what dead engines left on the backend (`ControlPlane._sweep`):
    `ENGINE_SWEEP_INTERVAL`, 60 by default."""
    try:
        return max(1.0, float(os.environ.get("ENGINE_SWEEP_INTERVAL") or 60))
    except ValueError:
        return 60.0


class Conflict(SDKUsageError):
    """The request is valid but the run's state does not allow it (HTTP 409)."""


class UnknownApplication(SDKUsageError):
    """No application of that name is deployed (HTTP 404)."""


def new_run_id() -> str:
    # Longer than the CLI's: a burst of hundreds of runs in one second must not collide.
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:12]


def input_kwargs(fn: Function[..., Any], data: Any, present: bool) -> dict[str, Any]:
    """A request body (JSON, already parsed) → the application's keyword arguments, unvalidated.
    With one parameter the body is its value; with several, an object of them."""
    import inspect

    params = list(inspect.signature(fn.fn).parameters.values())
    if not params:
        if present and data not in (None, {}):
            raise InputError(f"{fn.name} takes no input: send an empty body, null or {{}}")
        return {}
    if not present:
        missing = [p.name for p in params if p.default is inspect.Parameter.empty]
        if missing:
            raise InputError(f"{fn.name} needs input ({', '.join(missing)}): send it as the JSON request body")
        return {}  # every parameter has a default
    if len(params) == 1:
        return {params[0].name: data}
    if not isinstance(data, dict):
        names = ", ".join(p.name for p in params)
        raise InputError(f"{fn.name} takes several parameters ({names}): send a JSON object of them")
    return dict(data)


class CountingBackend(Backend):
    """The server's backend, counting executor starts for `/metrics`."""

    def __init__(self, inner: Backend, metrics: ServerMetrics) -> None:
        self.inner = inner
        self.name = inner.name
        self.callback_host = inner.callback_host
        self.callback_bind_host = inner.callback_bind_host
        self.warm_executors = inner.warm_executors
        self.starts = metrics.executor_starts
        self.start_failures = metrics.executor_start_failures

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        try:
            handle = await self.inner.start_executor(spec)
        except BaseException:
            self.start_failures.inc(backend=self.name, function=spec.function)
            raise
        self.starts.inc(backend=self.name, function=spec.function)
        return handle

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        await self.inner.stop_executor(handle)

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        return await self.inner.exit_info(handle)

    async def logs(self, handle: ExecutorHandle) -> str:
        return await self.inner.logs(handle)

    def channel(self, handle: ExecutorHandle) -> Any:
        return self.inner.channel(handle)

    async def close(self) -> None:
        await self.inner.close()

    async def cleanup_orphans(self) -> int:
        return await self.inner.cleanup_orphans()


class ControlPlane:
    def __init__(self, *, store: Store, reader: Store, scheduler: Scheduler,
                 deployments: Deployments, max_concurrent_runs: int, metrics: ServerMetrics,
                 backend_name: str) -> None:
        self.store = store          # the scheduler's connection: every write goes through it
        self.reader = reader        # a second connection: sees only committed state
        self.scheduler = scheduler
        self.deployments = deployments
        self.backend_name = backend_name
        self.metrics = metrics
        self.leases = scheduler.leases
        self.leases.on_cancel = self._cancel_requested
        self.active: set[str] = set()
        self.closing = False
        self.hub = EventHub(reader, self.queued_calls)
        self.queue = RunQueue(store=store, leases=self.leases, max_concurrent_runs=max_concurrent_runs,
                              active=self.active, start=self._start, store_down=self._store_down,
                              open_=lambda: not self.closing and not self.scheduler.store_failed)
        self._queued_at: dict[str, float] = {}
        self._scanner: asyncio.Task[None] | None = None
        self.webhooks = Sender(store, reader, self.result_json,
                               usable=lambda: not self.closing and not self.scheduler.store_failed)
        scheduler.subscribe(on_event=self.on_event, on_metrics=self.on_metrics)
        scheduler.applications = self.application_spec
        blobs = self.scheduler.blobs.stats
        metrics.read_live(
            runs_queued=lambda: self.reader.count_runs(status=RunStatus.QUEUED),
            runs_running=lambda: len(self.active),
            calls_queued=lambda: self.scheduler.calls_in(CallStatus.QUEUED),
            calls_running=lambda: self.scheduler.calls_in(CallStatus.RUNNING),
            executors_live=lambda: {(("backend", backend_name),): self.scheduler.executors_live()},
            blob_bytes=lambda: {(("direction", "put"),): blobs.put_bytes,
                                (("direction", "get"),): blobs.get_bytes},
            blobs=lambda: {(("direction", "put"),): blobs.puts, (("direction", "get"),): blobs.gets})
        metrics.registry.gauge(
            "engine_executors_warm", "Blank executors of the warm pool, ready for a function's first call.",
            lambda: {(("backend", backend_name),): self.scheduler.executors_warm()})

    # =========================================================================================
    # accepting runs

    def submit(self, name: str, data: Any, present: bool, idempotency_key: str | None,
               headers: list[tuple[str, str]] | None = None,
               webhook: RunWebhook | None = None,
               budget: Mapping[str, int | float | None] | None = None, *,
               priority: int = 1) -> tuple[int, dict[str, Any]]:
        """Validate and durably queue a run of `name` with the request body `data` (parsed
        JSON; `present` is False for an empty body). `headers` are the submission's, kept for
        `RequestContext.headers` (less credentials). `webhook`: where to POST the run's end,
        else the application's (`webhook:` in its engine.yaml), else nowhere; committed with
        the run. `budget` replaces limits of the application's budget, and the result is stored
        with the run; `priority` is the run's weight in the fair share between runs, kept
        with it (so resume and take-over keep it). Returns (HTTP status, body)."""
        dep = self.deployment(name)
        if idempotency_key:
            existing = self.store.find_run_by_key(idempotency_key)
            if existing is not None:
                if existing.application != name:
                    raise Conflict(f"Idempotency-Key {idempotency_key!r} was used for a run of "
                                   f"{existing.application}, not {name}")
                return 202, {"run_id": existing.run_id, "status": existing.status, "replayed": True}
        assert dep.function is not None and dep.spec is not None
        self.deployments.activate(dep)
        kwargs = input_kwargs(dep.function, data, present)
        validate_input(dep.function, (), kwargs)  # raises InputError naming the field
        if webhook is None:
            webhook = self.application_webhook(dep)
        run_id = new_run_id()
        spec = dep.spec
        limits = spec.budget().updated(budget or {})
        self.store.create_run(RunRow(
            run_id=run_id, application=name, status=RunStatus.QUEUED, root_call_id=root_call_id(run_id),
            app_file=str(spec.app_file), module=spec.module,
            config_path=str(spec.config_path) if spec.config_path else None,
            backend=self.backend_name, input=wire.dumps(kwargs), created_at=time.time(),
            idempotency_key=idempotency_key or None, version=dep.version,
            headers=headers_json(headers or []), budget=dump_budget(limits, 0.0),
            priority=priority if priority != 1 else None,
        ))
        if webhook is not None:
            self.store.set_run_webhook(run_id, webhook)
        try:
            self.store.commit()  # durable before the 202
        except Exception as exc:
            if idempotency_key and "unique" in str(exc).lower():
                # The same key, accepted meanwhile by another server on this store.
                self.store.rollback()
                return self.submit(name, data, present, idempotency_key, headers, webhook, budget,
                                   priority=priority)
            raise
        self.metrics.runs_accepted.inc(application=name)
        log.info("run accepted", extra={"fields": {"run_id": run_id, "application": name,
                                                   "version": dep.version}})
        self.queue.schedule_pump()
        return 202, {"run_id": run_id, "status": RunStatus.QUEUED}

    def application_spec(self, name: str) -> AppSpec:
        """The deployed version of application `name`, for a call of it inside another run
        (`run_remote_application` in a function). Raises `UnknownApplication`."""
        dep = self.deployment(name)
        self.deployments.activate(dep)
        assert dep.spec is not None
        return dep.spec
    @staticmethod
    def application_webhook(dep: Deployment) -> RunWebhook | None:
        """`webhook:` in the engine.yaml deployed with the application, validated as a
        submission's is (a mistake there is the submitter's 422, naming the file)."""
        from pydantic import ValidationError

        from engine.server.models import WebhookSpec

        config = dep.spec.config.webhook if dep.spec is not None else None
        if config is None:
            return None
        try:
            spec = WebhookSpec.model_validate(config.model_dump())
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"the application's engine.yaml: webhook.{where}: {first['msg']}") from None
        return RunWebhook(spec.url, spec.secret, dict(spec.headers))

    def result_json(self, row: RunRow) -> Any:
        """A succeeded run's result as JSON (what `GET /v1/runs/{id}` shows as `result`).
        Raises when it cannot be decoded here, and `TypeError` for a File (no JSON form)."""
        from engine.app import to_json
        from engine.sdk.file import File

        data = self.reader.run_result(row)
        if data is None:
            return None
        value = self.load_result(row, data)
        if isinstance(value, File):
            raise TypeError("a File has no JSON form")
        return to_json(value)

    def load_result(self, row: RunRow, data: bytes) -> Any:
        """Unpickle a run's result with its version's classes in place."""
        dep = self.deployments.for_run(row)
        if dep is not None:
            self.deployments.activate(dep)
        return wire.loads(data)

    async def wait_finished(self, run_id: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the run to end (as committed); True if it did."""
        return await self.hub.finished(run_id, timeout)

    def deployment(self, name: str) -> Deployment:
        try:
            return self.deployments.get(name)
        except KeyError:
            known = ", ".join(self.deployments.names()) or "none"
            raise UnknownApplication(
                f"no application named {name!r} is deployed (deployed: {known}); "
                "deploy it with `engine deploy FILE.py`") from None

    def cancel(self, run_id: str) -> dict[str, Any]:
        row = self.store.get_run(run_id)
        if row.status == RunStatus.QUEUED:
            failure = wire.make_failure(pb.FAILURE_KIND_CANCELLED, "cancelled before it started",
                                        function="", call_id="")
            if self.store.update_run_if(run_id, (RunStatus.QUEUED,), status=RunStatus.CANCELLED,
                                        ended_at=time.time(),
                                        failure=failure.SerializeToString(), error_kind="cancelled",
                                        error_message=wire.describe(failure)):
                self.metrics.runs_finished.inc(status=RunStatus.CANCELLED)
                log.info("run cancelled", extra={"fields": {"run_id": run_id}})
                self.hub.notify(run_id)
                self.webhooks.wake()
                return {"run_id": run_id, "status": RunStatus.CANCELLED}
            row = self.store.get_run(run_id)  # claimed meanwhile: cancel it where it runs
        if row.status in RUN_LIVE and run_id in self.active:
            # Its running calls' executors are stopped too (`Scheduler._cancel_call`).
            self.scheduler.cancel_run(run_id, "cancelled by request")
            self.store.commit()
            log.info("run cancelled", extra={"fields": {"run_id": run_id}})
            self.hub.notify(run_id)
            return {"run_id": run_id, "status": RunStatus.CANCELLED}
        if row.status in RUN_LIVE:
            # Driven by another process: its driver cancels it at its next lease renewal.
            self.store.request_cancel(run_id)
            self.store.commit()
            log.info("run cancel requested", extra={"fields": {"run_id": run_id, "owner": row.owner}})
            return {"run_id": run_id, "status": "cancelling"}
        raise Conflict(f"run {run_id} is already {row.status}")

    def signal(self, run_id: str, name: str, value: Any) -> dict[str, Any]:
        """Store signal `name` for the run (committed before the answer: it survives a crash of
        this server). A run driven here takes it at once; one driven elsewhere at its driver's
        next lease renewal tick; a queued or orphaned one when it starts again."""
        try:
            sent = send_signal(self.store, run_id, name, value)
        except SignalRefused as exc:
            raise Conflict(str(exc)) from None
        log.info("signal stored", extra={"fields": {"run_id": run_id, "signal": name, "seq": sent.seq}})
        if run_id in self.active:
            self.scheduler.signal_arrived(run_id)
        self.hub.notify(run_id)
        return {"run_id": run_id, "name": name, "seq": sent.seq}

    def _cancel_requested(self, run_ids: set[str]) -> None:
        for run_id in run_ids:
            if run_id in self.active:
                log.info("run cancelled", extra={"fields": {"run_id": run_id, "requested": True}})
                self.scheduler.cancel_run(run_id, "cancelled by request")
        self.store.commit()

    def resume(self, run_id: str, budget: Mapping[str, int | float | None] | None = None) -> dict[str, Any]:
        """Queue a failed or cancelled run again; when it starts, finished calls are reused
        from their checkpoints and only the rest run (`Scheduler.resume_run`). `budget`
        replaces limits of the run's budget (a raised limit lets a run that reached it go on)."""
        row = self.store.get_run(run_id)
        if row.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
            what = "nothing to resume" if row.status == RunStatus.SUCCEEDED else "it is not finished"
            raise Conflict(f"run {run_id} is {row.status}: {what}")
        if row.version is None:
            raise Conflict(f"run {run_id} is not a run of a deployed application's version: "
                           f"continue it with `engine resume {run_id}`")
        changes: dict[str, Any] = {}
        if budget:
            stored, elapsed = load_budget(row.budget)
            changes["budget"] = dump_budget((stored or Budget()).updated(budget), elapsed)
        if not self.store.update_run_if(run_id, (RunStatus.FAILED, RunStatus.CANCELLED), status=RunStatus.QUEUED,
                                        resumed_at=time.time(), ended_at=None, failure=None,
                                        error_kind=None, error_message=None, cancel_requested=None,
                                        **changes):
            raise Conflict(f"run {run_id} changed meanwhile: it is {self.store.get_run(run_id).status}")
        log.info("run resumed", extra={"fields": {"run_id": run_id}})
        self.hub.notify(run_id)
        self.queue.schedule_pump()
        return {"run_id": run_id, "status": RunStatus.QUEUED}

    def rerun(self, run_id: str, function: str, version: int | None = None) -> dict[str, Any]:
        """Queue a new run that reruns `run_id` from `function` on its application's deployed
        code (the latest version, or `version`): its row and the checkpoints it reuses commit
        together before the answer (`engine.scheduler.rerun`); it starts, when the queue has
        room, as a resumed run. Raises RunNotFound, Conflict (the run has not ended),
        UnknownApplication, InputError or RerunRefused (422)."""
        origin = self.store.get_run(run_id)
        name = origin.application
        dep = self.deployment(name)
        if version is not None and version != dep.version:
            try:
                dep = self.deployments.get(name, version)
            except KeyError:
                known = ", ".join(str(d.version) for d in self.deployments.versions(name))
                raise InputError(f"{name} has no version {version} (deployed: {known})") from None
        assert dep.spec is not None
        self.deployments.activate(dep)
        new_id = new_run_id()
        try:
            rerun.prepare(self.store, run_id, function, dep.spec, run_id=new_id, root_id=root_call_id(new_id),
                          status=RunStatus.QUEUED, backend=self.backend_name, version=dep.version)
        except rerun.RunStillRunning as exc:
            raise Conflict(str(exc)) from None
        self.store.commit()  # durable before the 202
        self.metrics.runs_accepted.inc(application=name)
        log.info("rerun accepted", extra={"fields": {"run_id": new_id, "rerun_of": run_id, "from": function,
                                                     "version": dep.version}})
        self.queue.schedule_pump()
        return {"run_id": new_id, "status": RunStatus.QUEUED}

    # =========================================================================================
    # starting runs

    def recover(self) -> None:
        """At start, and then every lease-renewal interval (`_scan`): take over runs whose
        driver died, and start queued runs while there is room."""
        self._scan()
        self._scanner = asyncio.ensure_future(self._keep_scanning())
        self.webhooks.start()

    async def _keep_scanning(self) -> None:
        swept = time.monotonic()
        while not self.closing:
            await asyncio.sleep(self.leases.renew_every)
            self._scan()
            if time.monotonic() - swept > _sweep_every():
                swept = time.monotonic()
                await self._sweep()

    async def _sweep(self) -> None:
        """What engines that died left on this server's backend (their executors stop by
        themselves; their containers stay until swept): a long-lived server does not wait for
        the dead engine's next start to remove them."""
        try:
            removed = await self.scheduler.backend.cleanup_orphans()
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            log.warning("sweeping what dead engines left failed", extra={"fields": {"error": str(exc)}})
            return
        if removed:
            log.info("swept what dead engines left", extra={"fields": {"removed": removed}})

    def _scan(self) -> None:
        if self.closing:
            return
        try:
            if self.scheduler.store_failed:
                self.store.reconnect()
                self.reader.reconnect()
                self.scheduler.store_failed = False
                log.info("the store answers again: taking runs as their leases allow")
            self.queue.take_over()
            self.queue.pump()
        except StoreUnavailable as exc:
            self._store_down(exc)

    def _store_down(self, exc: Exception) -> None:
        if not self.scheduler.store_failed:
            self.scheduler.store_down(exc)

    def _start(self, row: RunRow) -> None:
        """Start (or resume) a run whose lease this server has just claimed."""
        run_id = row.run_id
        dep = self.deployments.for_run(row)
        try:
            if dep is None or dep.spec is None or dep.function is None:
                raise SDKUsageError(f"the deployed version this run was accepted on ({row.application} "
                                    f"version {row.version}) is gone")
            self.deployments.activate(dep)
            has_calls = self.store.has_calls(run_id)
            if has_calls:
                run = self.scheduler.resume_run(dep.spec, run_id)
            else:
                kwargs = validate_input(dep.function, (), wire.loads(row.input))
                args = pb.Arguments()
                for key, value in kwargs.items():
                    args.kwargs[key].value.data = wire.dumps(value)
                run = self.scheduler.submit_run(dep.spec, row.input, args, run_id=run_id, queued=True,
                                                budget=load_budget(row.budget)[0],
                                                priority=row.priority or 1)
                self.metrics.run_queue_wait.observe(time.time() - row.created_at)
        except StoreUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a run that cannot start fails; the server goes on
            message = f"could not start: {exc}"
            log.error("run failed to start", extra={"fields": {"run_id": run_id, "error": str(exc)}})
            failure = wire.make_failure(pb.FAILURE_KIND_INTERNAL, message, function="", call_id="",
                                        type_name="InfrastructureError")
            self.store.update_run(run_id, status=RunStatus.FAILED, ended_at=time.time(),
                                  failure=failure.SerializeToString(), error_kind="internal",
                                  error_message=message)
            self.leases.release(run_id)
            self.metrics.runs_finished.inc(status=RunStatus.FAILED)
            self.hub.notify(run_id)
            self.webhooks.wake()
            return
        self.active.add(run_id)
        log.info("run started", extra={"fields": {"run_id": run_id, "application": row.application,
                                                  "resumed": has_calls}})
        if run.done.is_set():  # resumed a run whose checkpoints already hold its result
            self._run_finished(run)
        elif row.cancel_requested is not None:
            self.scheduler.cancel_run(run_id, "cancelled by request")
        self.hub.notify(run_id)

    # =========================================================================================
    # watching the scheduler

    def on_event(self, run: RunState, call: CallState) -> None:
        """The scheduler's callback, on every call transition and when a run ends. Runs on the
        loop, inside the scheduler's step: it only records and wakes, never acts."""
        if run.done.is_set():
            if run.run_id in self.active:
                if run.lost:
                    self._run_lost(run)
                else:
                    self._run_finished(run)
        else:
            status = call.status
            if status == CallStatus.QUEUED and call.attempts == 0:
                self._queued_at[call.id] = time.monotonic()
            elif status == CallStatus.RUNNING:
                began = self._queued_at.pop(call.id, None)
                if began is not None:
                    self.metrics.dispatch_latency.observe(time.monotonic() - began, backend=self.backend_name)
            elif status in CALL_FINAL:
                self._queued_at.pop(call.id, None)
                self.metrics.calls_finished.inc(outcome=status)
        self.hub.notify(run.run_id)

    def on_metrics(self, run: RunState, call: CallState, metrics: pb.CallMetrics) -> None:
        """One attempt's RequestContext.metrics, added to the server's totals for `/metrics`."""
        self.metrics.record_request_metrics(run.app.name, call.function, metrics)

    def _run_lost(self, run: RunState) -> None:
        """Another process drives it now (or the store stopped answering): forget it here."""
        self.active.discard(run.run_id)
        log.warning("run no longer driven here", extra={"fields": {"run_id": run.run_id}})
        asyncio.get_running_loop().call_soon(self._forget, run.run_id)
        self.queue.schedule_pump()

    def _run_finished(self, run: RunState) -> None:
        self.active.discard(run.run_id)
        self.leases.release(run.run_id)  # (a no-op when the scheduler released it already)
        self.metrics.runs_finished.inc(status=run.status)
        self.webhooks.wake()
        log.info("run finished", extra={"fields": {"run_id": run.run_id, "status": run.status,
                                                   "seconds": round(time.time() - run.started_at, 3)}})
        loop = asyncio.get_running_loop()
        loop.call_soon(self._forget, run.run_id)
        self.queue.schedule_pump()

    def _forget(self, run_id: str) -> None:
        # A long-lived server must not keep every finished run's call graph in memory; the
        # store has it all.
        if run_id not in self.active:
            self.scheduler.forget(run_id)

    def queued_calls(self, run_id: str) -> frozenset[str]:
        """Calls of a live run waiting for an executor slot (see `views.node`)."""
        return self.scheduler.queued_call_ids(run_id)

    async def prepare(self, dep: Deployment) -> None:
        """Make a new version runnable on this backend: on docker, build the images its
        functions name (offline, cached); on swarm, point them at the images pushed to the
        registry (`engine image build --push`); nothing to do on the process backend."""
        if dep.spec is None:
            return
        if self.backend_name == "swarm":
            from engine.backends.swarm import use_pushed_images

            use_pushed_images(dep.spec)
            return
        if self.backend_name != "docker":
            return
        from engine import images

        await asyncio.to_thread(dep.spec.resolve_images, images.build_function_image)

    async def close(self) -> None:
        self.closing = True
        self.hub.close()
        if self._scanner is not None:
            self._scanner.cancel()
        await self.webhooks.close()
        await self.scheduler.close()
