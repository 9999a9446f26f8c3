"""The scheduler's gRPC callback service: how a running function creates and awaits futures.

`Submit` adds futures (already encoded, dependencies first) as children of the calling call.
`Await` blocks until the requested futures satisfy the wait mode, then returns their outcomes.
Both validate the message before it creates any state; a bad message is INVALID_ARGUMENT and
changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from engine import wire
from engine.errors import SDKUsageError
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from engine.scheduler.scheduler import Scheduler


class CallbackService(pb_grpc.SchedulerCallbackServicer):
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    async def Submit(self, request: pb.SubmitRequest, context: grpc.aio.ServicerContext) -> pb.SubmitResponse:  # noqa: N802
        try:
            self.scheduler.submit_children(request.run_id, request.parent_call_id, list(request.futures))
        except (wire.InvalidMessage, SDKUsageError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.SubmitResponse()

    async def Await(self, request: pb.AwaitRequest, context: grpc.aio.ServicerContext) -> pb.AwaitResponse:  # noqa: N802
        try:
            return await self.scheduler.await_children(request)
        except wire.InvalidMessage as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # unreachable: abort raises
