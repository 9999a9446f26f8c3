"""Content addresses (`engine.wire.content`): BLAKE3 for new values, and stores written with
SHA-256 addresses still read and checked (`tests/unit/test_blobs.py` covers the blob files)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from engine.errors import InfrastructureError
from engine.executor.blobs import BlobClient
from engine.store import SQLiteStore, open_store, store_url
from engine.wire import content
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

MB = 1024 * 1024


def test_an_address_is_the_blake3_of_the_bytes() -> None:
    # BLAKE3's published test vectors (github.com/BLAKE3-team/BLAKE3, test_vectors.json: input 0).
    assert content.address(b"") == "b3-af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert content.address(b"abc") == "b3-6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"


def test_threads_and_pieces_give_the_same_address() -> None:
    data = os.urandom(3 * MB + 17)
    whole = content.address(data)  # threaded: above THREADED_FROM_BYTES
    single = content.Hasher(threaded=False)
    single.update(data)
    pieces = content.Hasher(threaded=True)
    for start in range(0, len(data), 100_000):
        pieces.update(memoryview(data)[start:start + 100_000])
    assert whole == single.address() == pieces.address()
    assert content.address(data[:-1]) != whole


def test_addresses_are_told_from_anything_else() -> None:
    new, old = content.address(b"x"), hashlib.sha256(b"x").hexdigest()
    assert content.is_address(new) and content.is_address(old)
    for bad in ("", "b3-", new[:-1], new + "0", new.upper(), "b3-" + "g" * 64, "adopting-" + "0" * 32,
                "../" + old[3:], "b2-" + old):
        assert not content.is_address(bad), bad
    assert content.shard(new) == new[3:5] and content.shard(old) == old[:2]


def test_a_value_is_checked_by_its_address_algorithm() -> None:
    data = b"value" * 1000
    assert content.matches(data, content.address(data))
    assert content.matches(data, hashlib.sha256(data).hexdigest())
    assert not content.matches(data + b"!", content.address(data))
    assert not content.matches(data + b"!", hashlib.sha256(data).hexdigest())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = open_store(store_url(tmp_path))
    yield s
    s.close()


def _legacy_blob(store: SQLiteStore, data: bytes) -> str:
    """A blob as stores written before BLAKE3 hold it: named by its SHA-256."""
    digest = hashlib.sha256(data).hexdigest()
    path = store.blob_dir / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


class _StoreBlobs(pb_grpc.BlobsServicer):
    """The Blobs service's `Get`, straight from a store: the scheduler's side, without its grants."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    def Get(self, request: pb.GetBlobRequest,  # noqa: N802
            context: grpc.ServicerContext) -> Iterator[pb.BlobChunk]:
        data = self.store.get_blob(request.digest)
        for start in range(0, len(data), MB):
            yield pb.BlobChunk(data=data[start:start + MB])


@pytest.fixture
def client(store: SQLiteStore) -> Iterator[BlobClient]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_BlobsServicer_to_server(_StoreBlobs(store), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield BlobClient(channel, cache_bytes=0, exchange="")  # every fetch streams
    finally:
        channel.close()
        server.stop(None)


def test_an_executor_fetches_blobs_of_both_kinds_and_refuses_corrupt_ones(store: SQLiteStore,
                                                                          client: BlobClient) -> None:
    old_value, new_value = os.urandom(3 * MB), os.urandom(3 * MB)
    old, new = _legacy_blob(store, old_value), store.put_blob(new_value)
    assert new == content.address(new_value) and store.has_blob(old) and store.blob_size(old) == 3 * MB
    assert bytes(client.get_blob(old)) == old_value
    assert bytes(client.get_blob(new)) == new_value

    for digest in (old, new):  # one byte changed on the disk
        path = store.blob_path(digest)
        damaged = bytearray(path.read_bytes())
        damaged[MB] ^= 1
        path.write_bytes(bytes(damaged))
    for digest in (old, new):
        with pytest.raises(InfrastructureError, match="arrived corrupted"):
            client.get_blob(digest)
