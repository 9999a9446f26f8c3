"""Large values: the per-message payload encoder and the store's blob files."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import wire
from engine.store import SQLiteStore, open_store, store_url
from engine.wire import content

MB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    s = open_store(store_url(tmp_path))
    yield s
    s.close()


def test_small_values_are_always_inline(store: SQLiteStore) -> None:
    encoder = wire.PayloadEncoder(store, budget=0)
    small = b"s" * wire.SMALL_VALUE_BYTES
    assert all(encoder.data(small).data == small for _ in range(3))
    assert encoder.data(small + b"!").blob  # the message has no room for anything larger
    assert list(store.blob_dir.rglob("*")) == [store.blob_path(content.address(small + b"!")).parent,
                                               store.blob_path(content.address(small + b"!"))]


def test_medium_values_inline_until_the_message_budget_is_spent(store: SQLiteStore) -> None:
    encoder = wire.PayloadEncoder(store)
    value = b"x" * MB  # exactly the inline limit
    payloads = [encoder.data(value) for _ in range(10)]
    inline = [p for p in payloads if not p.blob]
    assert len(inline) == wire.MESSAGE_INLINE_BUDGET // MB == 8
    assert all(p.data == value for p in inline)
    spilled = payloads[8:]
    assert all(p.blob == content.address(value) and p.size == MB and not p.data for p in spilled)
    assert wire.payload_bytes(spilled[0], store) == value


def test_a_large_value_is_never_inline(store: SQLiteStore) -> None:
    value = b"y" * (MB + 1)
    payload = wire.PayloadEncoder(store).data(value)
    assert not payload.data and payload.size == MB + 1
    assert store.get_blob(payload.blob) == value
    assert wire.load_payload(wire.PayloadEncoder(store).value([1, 2]), store) == [1, 2]


def test_a_stored_blob_is_passed_by_reference_without_reading_it(store: SQLiteStore) -> None:
    digest = store.put_blob(b"z" * (2 * MB))

    def read() -> bytes:
        raise AssertionError("a large blob must not be read to be passed on")

    payload = wire.PayloadEncoder(store).reference(digest, 2 * MB, read)
    assert payload.blob == digest and payload.size == 2 * MB


def test_blob_digests_are_checked_before_touching_the_disk(store: SQLiteStore) -> None:
    for bad in ("../../engine.db", "a" * 63, "A" * 64, "g" * 64, "", "b3-" + "a" * 63, "b3-" + "A" * 64,
                "b3-../" + "a" * 61):
        with pytest.raises(KeyError):
            store.blob_path(bad)
        assert not store.has_blob(bad)


def test_a_blob_written_in_pieces_appears_only_when_committed(store: SQLiteStore) -> None:
    writer = store.blob_writer()
    writer.write(b"a" * 1000)
    writer.write(b"b" * 1000)
    digest = content.address(b"a" * 1000 + b"b" * 1000)
    assert not store.has_blob(digest)
    assert writer.commit() == (digest, 2000)
    assert store.get_blob(digest) == b"a" * 1000 + b"b" * 1000 and store.blob_size(digest) == 2000

    aborted = store.blob_writer()
    aborted.write(b"partial")
    aborted.abort()
    assert not store.has_blob(content.address(b"partial"))
    assert [p.name for p in store.blob_dir.iterdir() if p.name.startswith(".tmp-")] == []


def test_what_a_dead_writer_left_is_swept_once_stale(tmp_path: Path) -> None:
    import os
    import time

    store = open_store(store_url(tmp_path))
    stale, fresh = store.blob_writer(), store.blob_writer()
    for writer in (stale, fresh):
        writer.write(b"half")
        writer.fh.close()  # its process died here
    hour_ago = time.time() - 3601
    os.utime(stale.tmp, (hour_ago, hour_ago))
    store.close()
    open_store(store_url(tmp_path)).close()  # as the next engine starts
    assert not Path(stale.tmp).exists() and Path(fresh.tmp).exists()


@pytest.mark.parametrize("value", [
    b"b" * (20 * MB + 3),  # one buffer, written in WRITEBACK_CHUNK pieces
    [b"a" * (3 * MB), bytearray(b"c" * (17 * MB)), "s" * (2 * MB), 7],  # several, between small writes
])
def test_a_large_value_pickled_into_the_exchange_directory_is_the_pickle_of_the_value(
        tmp_path: Path, value: object) -> None:
    import grpc

    from engine.executor.blobs import WRITEBACK_CHUNK, BlobClient, Staged

    (tmp_path / "out").mkdir()
    channel = grpc.insecure_channel("localhost:1")  # never used: nothing is sent
    staged = BlobClient(channel, exchange=str(tmp_path)).dumps(value)
    channel.close()
    assert isinstance(staged, Staged) and staged.size > WRITEBACK_CHUNK
    data = (tmp_path / "out" / staged.name).read_bytes()
    assert len(data) == staged.size
    assert data == wire.dumps(value) and wire.loads(data) == value
