"""The scheduler's gRPC callback service: how a running function creates and awaits futures.

`Submit` adds futures (already encoded, dependencies first) as children of the calling call.
`Await` blocks until the requested futures satisfy the wait mode, then returns their outcomes.
`RequestInfo`, `GetState`, `SetState` and `Progress` serve the request context
(`engine.scheduler.context`) to a call that is running. All validate the message before it creates any state; a bad message is INVALID_ARGUMENT and
changes nothing.

Before that, every request must carry its executor's credential and name a call that executor
is running now, and may reach only that call's children and the values it was given
(`engine.scheduler.access`); anything else is PERMISSION_DENIED and logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from engine import wire
from engine.errors import SDKUsageError
from engine.scheduler.access import Access, Denied, outcome_blobs
from engine.scheduler.budgets import BudgetRefused
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from engine.scheduler.scheduler import Scheduler
    from engine.scheduler.state import CallState


class CallbackService(pb_grpc.SchedulerCallbackServicer):
    def __init__(self, scheduler: Scheduler, access: Access) -> None:
        self.scheduler = scheduler
        self.access = access

    async def Submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> pb.SubmitResponse:  # noqa: N802
        grant = await self.access.caller(context, request.run_id, request.parent_call_id, "submitting futures")
        try:
            self.access.check_specs(grant, self.scheduler.runs.get(request.run_id), request.parent_call_id,
                                    request.futures)
        except Denied as exc:
            await self.access.refuse(context, grant, request.run_id, request.parent_call_id,
                                     f"submitting futures: {exc}")
        try:
            await self.scheduler.submit_children(request.run_id, request.parent_call_id, list(request.futures))
        except BudgetRefused as exc:
            # The run has failed with BudgetExceeded; the creating call raises it (executor runtime).
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except (wire.InvalidMessage, SDKUsageError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.SubmitResponse()

    async def RequestInfo(self, request: pb.RequestInfoRequest, context: grpc.aio.ServicerContext) -> pb.RequestInfoResponse:  # noqa: N802
        await self.access.caller(context, request.run_id, request.call_id, "reading the request's headers")
        call = await self._running(request.run_id, request.call_id, context)
        headers = self.scheduler.context.headers_of(call.run)
        return pb.RequestInfoResponse(headers=[pb.Header(name=k, value=v) for k, v in headers])

    async def GetState(self, request: pb.GetStateRequest, context: grpc.aio.ServicerContext) -> pb.GetStateResponse:  # noqa: N802
        grant = await self.access.caller(context, request.run_id, request.call_id, "reading request state")
        call = await self._running(request.run_id, request.call_id, context)
        response = self.scheduler.context.get(call.run, request.key)
        if response.value.blob:
            grant.give(request.run_id, request.call_id, (response.value.blob,))
        return response

    async def SetState(self, request: pb.SetStateRequest, context: grpc.aio.ServicerContext) -> pb.SetStateResponse:  # noqa: N802
        grant = await self.access.caller(context, request.run_id, request.call_id, "writing request state")
        try:
            self.access.check_payload(grant, request.value, f"writing request state {request.key!r} as")
        except Denied as exc:
            await self.access.refuse(context, grant, request.run_id, request.call_id, str(exc))
        call = await self._running(request.run_id, request.call_id, context)
        try:
            self.scheduler.context.set(call, request.key, request.value)
        except wire.InvalidMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.SetStateResponse()

    async def Progress(self, request: pb.ProgressRequest, context: grpc.aio.ServicerContext) -> pb.ProgressResponse:  # noqa: N802
        await self.access.caller(context, request.run_id, request.call_id, "reporting progress")
        call = await self._running(request.run_id, request.call_id, context)
        try:
            self.scheduler.context.progress(call, request)
        except wire.InvalidMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.ProgressResponse()

    async def _running(self, run_id: str, call_id: str, context: grpc.aio.ServicerContext) -> CallState:
        try:
            return self.scheduler.running_call(run_id, call_id)
        except wire.InvalidMessage as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # unreachable: abort raises

    async def Await(self, request: pb.AwaitRequest, context: grpc.aio.ServicerContext) -> pb.AwaitResponse:  # noqa: N802
        grant = await self.access.caller(context, request.run_id, request.parent_call_id, "awaiting futures")
        run = self.scheduler.runs.get(request.run_id)
        if run is not None:
            try:
                self.access.check_children(run, request.parent_call_id, request.ids)
            except Denied as exc:
                await self.access.refuse(context, grant, request.run_id, request.parent_call_id,
                                         f"awaiting futures: {exc}")
        try:
            response = await self.scheduler.await_children(request)
        except wire.InvalidMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises
        # Still running (or the grant ignores it): the values it waited for are now its own.
        grant.give(request.run_id, request.parent_call_id, outcome_blobs(response))
        return response
