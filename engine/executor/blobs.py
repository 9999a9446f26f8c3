"""The executor's side of the Blobs service: large values to and from the scheduler.

An executor shares no filesystem with the scheduler (on Swarm it is on another machine), so a
value too large to travel inline is streamed to the scheduler's `Blobs` service (`put_blob`) and
referenced by its SHA-256; a reference it receives is streamed back (`get_blob`). Both directions
check the digest, and carry the executor's credential: the scheduler gives a blob only to an
executor whose running calls were given it, and the SDK raises `AccessDenied` for any other.
Fetched blobs are kept in a small LRU cache: content-addressed, so never stale,
and a fan-out handing one large value to every call fetches it once per executor.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import grpc

from engine import wire
from engine.errors import AccessDenied, InfrastructureError
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

# Bytes of fetched blobs kept for reuse.
CACHE_BYTES = 256 * 1024 * 1024


class BlobClient:
    """A `wire.BlobStore` backed by the scheduler's Blobs service."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = (),
                 cache_bytes: int = CACHE_BYTES) -> None:
        self.stub = pb_grpc.BlobsStub(channel)
        # The executor's credential (engine.scheduler.access), sent with every request.
        self.metadata = metadata
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def put_blob(self, data: bytes) -> str:
        digest = wire.digest(data)
        view = memoryview(data)

        def chunks() -> Iterator[pb.BlobChunk]:
            for start in range(0, len(view), wire.BLOB_CHUNK_BYTES):
                yield pb.BlobChunk(data=bytes(view[start:start + wire.BLOB_CHUNK_BYTES]))

        try:
            reply = self.stub.Put(chunks(), metadata=self.metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise AccessDenied(f"storing a {len(data)}-byte value: {exc.details()}") from None
            raise InfrastructureError(f"could not store a {len(data)}-byte value with the scheduler: "
                                      f"{exc.details()}") from None
        if reply.digest != digest or reply.size != len(data):
            raise InfrastructureError(f"the scheduler stored a different blob ({reply.digest[:12]}, "
                                      f"{reply.size} bytes) than was sent ({digest[:12]}, {len(data)} bytes)")
        self._remember(digest, data)
        return digest

    def get_blob(self, digest: str) -> bytes:
        with self._lock:
            data = self._cache.get(digest)
            if data is not None:
                self._cache.move_to_end(digest)
                return data
        hasher = hashlib.sha256()
        parts: list[bytes] = []
        try:
            for chunk in self.stub.Get(pb.GetBlobRequest(digest=digest), metadata=self.metadata):
                hasher.update(chunk.data)
                parts.append(chunk.data)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise AccessDenied(f"the engine refused value {digest[:12]}: {exc.details()}") from None
            raise InfrastructureError(f"could not fetch value {digest[:12]} from the scheduler: "
                                      f"{exc.details()}") from None
        data = b"".join(parts)
        if hasher.hexdigest() != digest:
            raise InfrastructureError(f"value {digest[:12]} arrived corrupted ({len(data)} bytes)")
        self._remember(digest, data)
        return data

    def _remember(self, digest: str, data: bytes) -> None:
        if len(data) > self.cache_bytes // 4:
            return  # one huge value would evict everything else
        with self._lock:
            if digest in self._cache:
                return
            self._cache[digest] = data
            self._cached += len(data)
            while self._cached > self.cache_bytes:
                _, old = self._cache.popitem(last=False)
                self._cached -= len(old)
