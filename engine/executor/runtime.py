"""The SDK runtime inside an executor: futures become Submit and Await calls to the scheduler.

While a call runs, the SDK's `Future.run()`, `.result()`, `await` and `Future.wait` land here.
Starting a future encodes it, and every unstarted future it depends on, as `FutureSpec`s (values
cloudpickled — large ones put in the scheduler's Blobs service first — futures as references to
their ids) and submits them to the scheduler's `SchedulerCallback` service; waiting asks the
scheduler for outcomes.

The request context (`engine.sdk.context`) lands here too: headers, state and progress are
unary calls to the same service, answered from the scheduler's memory. A run's headers are asked
for once per executor and kept (`_HEADERS`).

Only the executor's own process may do so: a process forked inside a call has a copy of the
executor's connection, and writing to it would corrupt the executor's (see "Forking inside a
call" in `engine.executor.server`). There, starting or waiting raises `SDKUsageError`.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import grpc

from engine import wire
from engine.errors import (
    AccessDenied,
    BudgetExceeded,
    DeserializationError,
    InfrastructureError,
    SDKUsageError,
    SerializationError,
)
from engine.sdk.future import RETURN_WHEN, Future
from engine.sdk.runtime import Runtime
from engine.sdk.signal import SignalSource
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

_RETURN_WHEN = {
    RETURN_WHEN.ALL_COMPLETED: pb.RETURN_WHEN_ALL_COMPLETED,
    RETURN_WHEN.FIRST_COMPLETED: pb.RETURN_WHEN_FIRST_COMPLETED,
    RETURN_WHEN.FIRST_FAILURE: pb.RETURN_WHEN_FIRST_FAILURE,
}


# Headers of the runs this executor served lately: run id -> pairs. A run's headers never change.
_HEADERS: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
_HEADERS_KEPT = 64
_headers_lock = threading.Lock()


class GraphEncoder:
    """Encodes futures into FutureSpecs, dependencies first (post-order), for one message."""

    def __init__(self, blobs: wire.BlobStore) -> None:
        self.specs: list[pb.FutureSpec] = []
        self.started: list[Future[Any]] = []
        self.payloads = wire.PayloadEncoder(blobs)

    def add(self, fut: Future[Any]) -> None:
        if fut.started:
            return
        fut._mark_started()  # before recursing: a graph is a DAG, but be safe against loops
        self.started.append(fut)
        # Arguments are written into the spec in place (a fan-in's are a hundred thousand:
        # building each as its own message to be copied in costs several times more); the spec
        # is listed after its dependencies, which `_fill` adds first.
        spec = pb.FutureSpec(id=fut.id, kind=wire.KIND_VALUES[fut.kind], function=fut.function.name)
        arguments = spec.arguments
        arguments.SetInParent()
        add = arguments.args.add
        for value in fut.args:
            self._fill(add(), value)
        for key in sorted(fut.kwargs):
            self._fill(arguments.kwargs[key], fut.kwargs[key])
        source = fut.function
        if isinstance(source, SignalSource):
            spec.signal.repeatable = source.repeatable
            if source.timeout is not None:
                spec.signal.timeout = source.timeout
        self.specs.append(spec)

    def _fill(self, dst: pb.Arg, value: Any) -> None:
        if isinstance(value, Future):
            self.add(value)
            dst.ref = value.id
            return
        if isinstance(value, (list, tuple)) and any(isinstance(v, Future) for v in value):
            dst.list.SetInParent()
            dst.list.is_tuple = isinstance(value, tuple)
            for v in value:
                self._fill(dst.list.items.add(), v)
            return
        try:
            dst.value.CopyFrom(self.payloads.value(value))
        except (SDKUsageError, InfrastructureError):
            raise
        except Exception as exc:
            raise SerializationError(
                f"an argument of type {type(value).__name__} cannot be serialised with "
                f"cloudpickle: {exc}"
            ) from exc

    def rollback(self) -> None:
        """Submission failed: these futures are not started after all."""
        for fut in self.started:
            fut._started = False  # noqa: SLF001


class ExecutorRuntime(Runtime):
    """Runtime for one call: knows its run, its call id and the scheduler's address."""

    def __init__(self, stub: pb_grpc.SchedulerCallbackStub, blobs: wire.BlobStore, run_id: str,
                 call_id: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.stub = stub
        # The executor's credential, sent with every request (engine.scheduler.access).
        self.metadata = metadata
        self.blobs = blobs
        self.run_id = run_id
        self.call_id = call_id
        self.pid = os.getpid()

    def _check_process(self) -> None:
        if os.getpid() != self.pid:
            raise SDKUsageError(
                "engine functions cannot be called from a process forked inside a call (a "
                "multiprocessing worker, os.fork): call them from the function itself, and "
                "hand the child's results back to it")

    def start(self, futures: Sequence[Future[Any]]) -> None:
        self._check_process()
        encoder = GraphEncoder(self.blobs)
        for fut in futures:
            encoder.add(fut)
        if not encoder.specs:
            return
        try:
            self.stub.Submit(
                pb.SubmitRequest(
                    run_id=self.run_id, parent_call_id=self.call_id, futures=encoder.specs
                ),
                metadata=self.metadata,
            )
        except grpc.RpcError as exc:
            encoder.rollback()
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                # The run's budget refused them; the run has failed (engine.scheduler.budgets).
                raise BudgetExceeded(exc.details(), run_id=self.run_id, call_id=self.call_id) from None
            _raise_if_denied(exc, "submitting futures")
            raise SDKUsageError(f"the scheduler refused these futures: {exc.details()}") from None
        except BaseException:
            encoder.rollback()
            raise

    def wait(
        self, futures: Sequence[Future[Any]], timeout: float | None, return_when: RETURN_WHEN
    ) -> None:
        pending = {f.id: f for f in futures if not f.done()}
        if not pending:
            return
        self._check_process()
        request = pb.AwaitRequest(
            run_id=self.run_id,
            parent_call_id=self.call_id,
            ids=list(pending),
            return_when=_RETURN_WHEN[return_when],
        )
        if timeout is not None:
            request.timeout = max(0.0, timeout)
        try:
            response = self.stub.Await(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            _raise_if_denied(exc, "waiting for futures")
            raise SDKUsageError(f"lost the scheduler while waiting: {exc.details()}") from None
        for outcome in response.outcomes:
            fut = pending.get(outcome.id)
            if fut is None:
                continue
            if outcome.WhichOneof("result") == "value":
                try:
                    value = wire.load_payload(outcome.value, self.blobs)
                except (SDKUsageError, InfrastructureError):
                    raise
                except Exception as exc:  # noqa: BLE001 - whatever unpickling raises
                    raise DeserializationError(
                        f"the value of future {outcome.id} could not be deserialised here: "
                        f"{type(exc).__name__}: {exc}") from exc
                fut._resolve(value=value)  # noqa: SLF001
            else:
                fut._resolve(exception=wire.exception_from_failure(outcome.failure, self.run_id))  # noqa: SLF001

    # --- the request context ------------------------------------------------------------

    def _context_call(self, what: str, method: Any, request: Any) -> Any:
        self._check_process()
        try:
            return method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            _raise_if_denied(exc, what)
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT):
                raise SDKUsageError(f"{what}: {exc.details()}") from None
            raise InfrastructureError(f"{what}: lost the scheduler ({exc.details()})") from None

    def headers(self) -> list[tuple[str, str]]:
        with _headers_lock:
            known = _HEADERS.get(self.run_id)
        if known is not None:
            return known
        reply = self._context_call("reading the request's headers", self.stub.RequestInfo,
                                   pb.RequestInfoRequest(run_id=self.run_id, call_id=self.call_id))
        pairs = [(h.name, h.value) for h in reply.headers]
        with _headers_lock:
            _HEADERS[self.run_id] = pairs
            while len(_HEADERS) > _HEADERS_KEPT:
                _HEADERS.popitem(last=False)
        return pairs

    def get_state(self, key: str) -> tuple[bool, Any]:
        reply = self._context_call(f"reading request state {key!r}", self.stub.GetState,
                                   pb.GetStateRequest(run_id=self.run_id, call_id=self.call_id, key=key))
        if not reply.found:
            return False, None
        try:
            return True, wire.load_payload(reply.value, self.blobs)
        except Exception as exc:  # noqa: BLE001 - whatever unpickling raises
            raise DeserializationError(
                f"request state {key!r} could not be deserialised here: {type(exc).__name__}: {exc}"
            ) from exc

    def set_state(self, key: str, value: Any) -> None:
        try:
            payload = wire.PayloadEncoder(self.blobs).value(value)
        except (SDKUsageError, InfrastructureError):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises
            raise SerializationError(
                f"request state {key!r}: a {type(value).__name__} cannot be serialised with "
                f"cloudpickle: {exc}") from exc
        self._context_call(f"writing request state {key!r}", self.stub.SetState, pb.SetStateRequest(
            run_id=self.run_id, call_id=self.call_id, key=key, value=payload))

    def progress(self, current: float, total: float, message: str | None,
                 attributes: dict[str, str] | None) -> None:
        request = pb.ProgressRequest(run_id=self.run_id, call_id=self.call_id, current=current,
                                     total=total, attributes=attributes or {})
        if message is not None:
            request.message = message
        self._context_call("reporting progress", self.stub.Progress, request)


def _raise_if_denied(exc: grpc.RpcError, what: str) -> None:
    """The scheduler refused a request outside this call's reach: raise `AccessDenied`."""
    if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
        raise AccessDenied(f"{what}: the engine refused: {exc.details()}") from None
