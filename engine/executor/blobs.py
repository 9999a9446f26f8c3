"""The executor's side of the Blobs service: large values to and from the scheduler.

An executor need share no filesystem with the scheduler (on Swarm it is on another machine), so a
value too large to travel inline is streamed to the scheduler's `Blobs` service (`put_blob`) and
referenced by its content address (`engine.wire.content`); a reference it receives is streamed
back (`get_blob`). Both directions check the address, and carry the executor's credential: the
scheduler gives a blob only to an executor whose running calls were given it, and the SDK raises
`AccessDenied` for any other. Fetched blobs are kept in a small LRU cache: content-addressed, so
never stale, and a fan-out handing one large value to every call fetches it once per executor.

On the scheduler's own machine an executor may have an exchange directory instead
(`ENGINE_EXCHANGE_DIR`, `engine.scheduler.exchange`): a blob its calls were given is a file in
`in/`, mapped into memory rather than streamed; a value it stores is written to `out/` and
named in `Blobs.Adopt`, and the scheduler moves that file into the store. Whatever the exchange
directory cannot do (a blob not linked there, an adoption refused) falls back to streaming.
A mapped blob's digest is not checked again: the scheduler hashed it when it stored it, and the
file is read-only (docker mounts `in/` read-only). A call's own large result is adopted as
*deferred* (`AdoptBlobRequest.result`): the scheduler answers with a token as soon as the file is
out of reach, and the call returns that token; the next call may map it by that name while the
scheduler still hashes it. No digest computed here ever names a blob: user code runs here.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cloudpickle
import grpc

from engine import pagecache, wire
from engine.errors import AccessDenied, InfrastructureError
from engine.wire import content
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

# Bytes of fetched blobs kept for reuse.
CACHE_BYTES = 256 * 1024 * 1024
# The write-back of a large value to the disk is started every this many bytes (`_write_through`).
WRITEBACK_CHUNK = 8 * 1024 * 1024
# Where the backend mounted this executor's exchange directory, when it has one.
EXCHANGE_ENV = "ENGINE_EXCHANGE_DIR"


class BlobClient:
    """A `wire.BlobStore` backed by the scheduler's Blobs service."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...] = (),
                 cache_bytes: int = CACHE_BYTES, exchange: str | None = None) -> None:
        self.stub = pb_grpc.BlobsStub(channel)
        # The executor's credential (engine.scheduler.access), sent with every request.
        self.metadata = metadata
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()
        path = exchange if exchange is not None else os.environ.get(EXCHANGE_ENV, "")
        self.exchange = Path(path) if path and Path(path, "out").is_dir() else None

    def dumps(self, value: Any) -> bytes | Staged:
        """`value` pickled: its bytes, or — when it is larger than a message may carry and there
        is an exchange directory — a file in `out/` it was pickled straight into (no copy of a
        large value in memory), for `adopt`. Raises what pickling raises."""
        if self.exchange is None:
            return wire.dumps(value)
        spill = _Spill(self.exchange / "out", wire.INLINE_MAX_BYTES)
        try:
            cloudpickle.CloudPickler(spill, protocol=5).dump(value)
        except OSError:
            spill.discard()  # the directory failed us (full?): pickle in memory as usual
            return wire.dumps(value)
        except BaseException:
            spill.discard()
            raise
        return spill.finish()

    def adopt(self, staged: Staged) -> pb.Payload:
        """The reference to `staged`, the value the running call returns, once the scheduler has
        taken it out of reach (streamed instead when it refuses). The reference may be a token
        (`wire.DEFERRED_PREFIX`): the scheduler hashes and stores the file after answering."""
        path = self.exchange / "out" / staged.name if self.exchange is not None else None
        assert path is not None
        digest = self._adopt_file(staged.name, staged.size, result=True)
        if digest is None:
            data = path.read_bytes()
            path.unlink(missing_ok=True)
            digest = self._stream(data)
        return pb.Payload(blob=digest, size=staged.size)

    def put_blob(self, data: bytes) -> str:
        if self.exchange is not None:
            name = secrets.token_hex(16)
            path = self.exchange / "out" / name
            try:
                with open(path, "xb") as fh:
                    pagecache.write(fh.fileno(), data)
            except OSError:
                path.unlink(missing_ok=True)
            else:
                digest = self._adopt_file(name, len(data))
                if digest is not None:
                    return digest
        return self._stream(data)

    def _stream(self, data: bytes) -> str:
        digest = content.address(data)
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

    def _adopt_file(self, name: str, size: int, result: bool = False) -> str | None:
        """Have the scheduler take `out/<name>` into its store; None when it refused (the file
        is then still there, or gone)."""
        assert self.exchange is not None
        path = self.exchange / "out" / name
        try:
            reply = self.stub.Adopt(pb.AdoptBlobRequest(name=name, result=result), metadata=self.metadata)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                path.unlink(missing_ok=True)
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise AccessDenied(f"storing a {size}-byte value: {exc.details()}") from None
            if exc.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED):
                return None
            raise InfrastructureError(f"could not store a {size}-byte value with the scheduler: "
                                      f"{exc.details()}") from None
        if reply.size != size:
            raise InfrastructureError(f"the scheduler stored a different blob ({reply.digest[:12]}, "
                                      f"{reply.size} bytes) than was written ({size} bytes)")
        return reply.digest

    def _mapped(self, digest: str) -> memoryview | None:
        """Blob `digest` from the exchange directory, mapped read-only; None when not there."""
        name = digest.removeprefix(wire.DEFERRED_PREFIX)
        if self.exchange is None or len(name) != (64 if name == digest else 32) or name.strip("0123456789abcdef"):
            return None
        try:
            with open(self.exchange / "in" / digest, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if not size:
                    return None
                # Populated at once: one page-table fill instead of a fault per 4 KiB page.
                return memoryview(mmap.mmap(fh.fileno(), size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                            prot=mmap.PROT_READ))
        except OSError:
            return None

    def get_blob(self, digest: str) -> bytes | memoryview:
        mapped = self._mapped(digest)
        if mapped is not None:
            return mapped
        with self._lock:
            data = self._cache.get(digest)
            if data is not None:
                self._cache.move_to_end(digest)
                return data
        parts: list[bytes] = []
        try:
            for chunk in self.stub.Get(pb.GetBlobRequest(digest=digest), metadata=self.metadata):
                parts.append(chunk.data)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                raise AccessDenied(f"the engine refused value {digest[:12]}: {exc.details()}") from None
            raise InfrastructureError(f"could not fetch value {digest[:12]} from the scheduler: "
                                      f"{exc.details()}") from None
        data = b"".join(parts)
        # (A deferred value's token is no address: the scheduler streamed it once it had one.)
        if not digest.startswith(wire.DEFERRED_PREFIX) and not content.matches(data, digest):
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


def _write_through(fd: int, view: memoryview, offset: int) -> None:
    """Write `view` at `offset` (the file's position) in small pieces (`engine.pagecache`),
    starting the write-back to the disk of every WRITEBACK_CHUNK of the file it fills
    (sync_file_range, SYNC_FILE_RANGE_WRITE: it does not wait) when it is at least that large:
    a write-back for each of many smaller buffers would be many small I/Os, and the fsync does
    those at once. Chunks end at multiples of WRITEBACK_CHUNK in the file, as pieces do."""
    start_writeback = _writeback() if len(view) >= WRITEBACK_CHUNK else None
    start = 0
    while start < len(view):
        end = min(len(view), start + WRITEBACK_CHUNK - (offset + start) % WRITEBACK_CHUNK)
        pagecache.write(fd, view[start:end])
        if start_writeback is not None:
            start_writeback(fd, offset + start, end - start, _SYNC_FILE_RANGE_WRITE)
        start = end


_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _writeback() -> Any:
    """libc's sync_file_range, or None where there is none (not Linux): the fsync then does all."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


@dataclass(frozen=True)
class Staged:
    """A pickled value in the exchange directory's `out/<name>`, not yet the scheduler's."""

    name: str
    size: int


class _Spill:
    """A file object for the pickler: bytes in memory up to `limit`, then a file in `directory`
    from the start. The pickler hands a large bytes-like object straight to `write`, so a large
    value goes from the function's memory into the file with no copy of it in between; it is
    written in small pieces (`engine.pagecache`), and sent on its way to the disk as it is
    written (`_write_through`), so that the scheduler's fsync has little left to wait for."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.buffer = bytearray()
        self.name = ""
        self.fh: BinaryIO | None = None
        self.size = 0

    def write(self, data: Any) -> int:
        n = memoryview(data).nbytes
        self.size += n
        if self.fh is None:
            if self.size <= self.limit:
                self.buffer += data
                return n
            self.name = secrets.token_hex(16)
            self.fh = open(self.directory / self.name, "xb")  # noqa: SIM115 - closed in finish/discard
            self.fh.write(self.buffer)
            self.buffer = bytearray()
        view = memoryview(data)
        if n >= pagecache.PIECE and view.contiguous:
            self.fh.flush()
            _write_through(self.fh.fileno(), view.cast("B"), self.size - n)
        else:
            self.fh.write(data)
        return n

    def finish(self) -> bytes | Staged:
        if self.fh is None:
            return bytes(self.buffer)
        self.fh.close()
        return Staged(self.name, self.size)

    def discard(self) -> None:
        if self.fh is not None:
            self.fh.close()
            (self.directory / self.name).unlink(missing_ok=True)
