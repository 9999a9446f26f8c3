"""The scheduler's Blobs service: values too large to travel inline, streamed over gRPC.

Served beside `SchedulerCallback` on the same port, so every executor that can call back (on any
Swarm node) can reach it. The bytes live in the store's blob directory — the store of record
stays where the scheduler runs — named by content address (`engine.wire.content`), written under
a temporary name, fsynced and renamed before `Put` answers: an executor that was told "stored"
may die at once and lose nothing. `Get` streams a blob in `wire.BLOB_CHUNK_BYTES` pieces; the
receiver checks its address.

File work runs on threads: the event loop keeps dispatching calls while a large value moves.

An executor on the scheduler's machine writes a large value into its exchange directory and
names it in `Adopt` instead of streaming it (`engine.scheduler.exchange`): the file is moved into
the store, hashed and fsynced before `Adopt` answers, with the same promise as `Put`. Except
for a call's own result (`AdoptBlobRequest.result`): `Adopt` answers as soon as the file is out of
the executor's reach, with a token, and hashes and fsyncs it meanwhile; the scheduler checkpoints
the call once that is done, and holds back what the calls handed the value do until then
(`engine.scheduler.exchange.Deferred`).

Only executors use it, each with its own credential (`engine.scheduler.access`): `Put` is open
to any of them (and the blob becomes readable by its putter), `Get` only of a blob that one of
the executor's running calls was given, or that it put itself. Content addressing alone would
let anyone holding a digest read the value, and digests appear in logs and in the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from engine import wire
from engine.scheduler.access import Access
from engine.scheduler.exchange import Deferred, NotAdopted
from engine.store import Store
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc


@dataclass
class BlobStats:
    """What moved through the service (exported as metrics by `engine server`)."""

    puts: int = 0
    put_bytes: int = 0
    # Of those, put by adopting a file of the executor's exchange directory (no streaming).
    adopted: int = 0
    gets: int = 0
    get_bytes: int = 0


class BlobService(pb_grpc.BlobsServicer):
    def __init__(self, store: Store, access: Access) -> None:
        self.store = store
        self.access = access
        self.stats = BlobStats()

    async def Get(self, request: pb.GetBlobRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.BlobChunk]:  # noqa: N802
        grant = self.access.grant_of(context)
        if grant is None or not grant.may_read(request.digest):
            why = "no valid executor credential" if grant is None else "which this executor was never given"
            await self.access.refuse(context, grant, "", "", f"reading blob {request.digest[:12]}, {why}")
        digest = request.digest
        if digest.startswith(wire.DEFERRED_PREFIX):
            # Given before it was stored (its executor could not link it): once it is.
            deferred = self.access.deferred.get(digest)
            try:
                digest = await asyncio.shield(deferred.digest) if deferred and deferred.digest else ""
            except OSError:
                digest = ""
            if not digest:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {request.digest}")
                return
        try:
            fh = await asyncio.to_thread(self.store.open_blob, digest)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc.args[0]))
            return
        except FileNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {request.digest}")
            return
        self.stats.gets += 1
        with fh:
            while True:
                data = await asyncio.to_thread(fh.read, wire.BLOB_CHUNK_BYTES)
                if not data:
                    return
                self.stats.get_bytes += len(data)
                yield pb.BlobChunk(data=data)

    async def Put(self, request_iterator: AsyncIterator[pb.BlobChunk], context: grpc.aio.ServicerContext) -> pb.PutBlobResponse:  # noqa: N802
        grant = self.access.grant_of(context)
        if grant is None:
            await self.access.refuse(context, None, "", "", "storing a blob: no valid executor credential")
        writer = await asyncio.to_thread(self.store.blob_writer)
        try:
            async for chunk in request_iterator:
                await asyncio.to_thread(writer.write, chunk.data)
            digest, size = await asyncio.to_thread(writer.commit)
        except BaseException:
            writer.abort()
            raise
        grant.put.add(digest)
        self.stats.puts += 1
        self.stats.put_bytes += size
        return pb.PutBlobResponse(digest=digest, size=size)

    async def Adopt(self, request: pb.AdoptBlobRequest, context: grpc.aio.ServicerContext) -> pb.PutBlobResponse:  # noqa: N802
        grant = self.access.grant_of(context)
        if grant is None:
            await self.access.refuse(context, None, "", "", "storing a blob: no valid executor credential")
        exchange = grant.exchange
        if exchange is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this executor has no exchange directory")
            return pb.PutBlobResponse()  # (abort raises)
        if request.result:
            try:
                claimed = await asyncio.to_thread(exchange.claim, request.name)
            except NotAdopted as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            deferred = Deferred(claimed, grant)
            deferred.digest = asyncio.ensure_future(asyncio.to_thread(exchange.settle, claimed))
            deferred.digest.add_done_callback(_retrieve)  # (awaited, or not, by the scheduler)
            self.access.deferred[deferred.token] = deferred
            grant.deferred.add(deferred.token)
            self.stats.puts += 1
            self.stats.adopted += 1
            self.stats.put_bytes += claimed.size
            return pb.PutBlobResponse(digest=deferred.token, size=claimed.size)
        try:
            digest, size = await asyncio.to_thread(exchange.adopt, request.name)
        except NotAdopted as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        grant.put.add(digest)
        self.stats.puts += 1
        self.stats.adopted += 1
        self.stats.put_bytes += size
        return pb.PutBlobResponse(digest=digest, size=size)


def _retrieve(task: asyncio.Future[str]) -> None:
    if not task.cancelled():
        task.exception()
