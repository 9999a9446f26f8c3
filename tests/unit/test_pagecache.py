"""Large files are written in pieces the page cache holds in small folios, aligned to the file
(`engine.pagecache`): the helper itself, and the two writers of large values on one machine (the
executor pickling into its exchange directory, the SQLite store writing a streamed blob)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from engine import pagecache, wire
from engine.executor.blobs import BlobClient, Staged
from engine.store import open_store, store_url

MB = 1024 * 1024


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every `os.write` from now on (what the buffered file objects write is not
    seen: it does not go through `os.write`)."""
    seen: list[int] = []
    real = os.write

    def write(fd: int, data: object) -> int:
        n = real(fd, data)  # type: ignore[arg-type]
        seen.append(n)
        return n

    monkeypatch.setattr(os, "write", write)
    return seen


def test_write_puts_every_byte_at_the_position_in_pieces(tmp_path: Path, writes: list[int]) -> None:
    data = os.urandom(3 * pagecache.PIECE + 123)
    path = tmp_path / "f"
    with open(path, "wb", buffering=0) as fh:
        fh.write(b"head")
        pagecache.write(fh.fileno(), memoryview(bytearray(data)))
    assert path.read_bytes() == b"head" + data
    # The first piece ends where the file's next piece begins: every later one is aligned.
    assert writes == [pagecache.PIECE - 4, pagecache.PIECE, pagecache.PIECE, 127]


def test_write_finishes_a_piece_the_kernel_took_in_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(memoryview(data)[:1000])))
    data = os.urandom(pagecache.PIECE + 5000)
    path = tmp_path / "f"
    with open(path, "wb", buffering=0) as fh:
        pagecache.write(fh.fileno(), data)
    assert path.read_bytes() == data


@pytest.fixture
def placed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Where in its file every `os.write` from now on wrote: (offset, size)."""
    seen: list[tuple[int, int]] = []
    real = os.write

    def write(fd: int, data: object) -> int:
        at = os.lseek(fd, 0, os.SEEK_CUR)
        n = real(fd, data)  # type: ignore[arg-type]
        seen.append((at, n))
        return n

    monkeypatch.setattr(os, "write", write)
    return seen


def test_the_executor_pickles_a_large_value_into_its_exchange_directory_in_pieces(
        tmp_path: Path, placed: list[tuple[int, int]]) -> None:
    (tmp_path / "out").mkdir()
    value = [b"a" * (20 * MB), bytearray(b"b" * (3 * MB))]
    channel = grpc.insecure_channel("localhost:1")  # never used: nothing is sent
    staged = BlobClient(channel, exchange=str(tmp_path)).dumps(value)
    channel.close()
    assert isinstance(staged, Staged)
    assert (tmp_path / "out" / staged.name).read_bytes() == wire.dumps(value)
    sizes = [n for _, n in placed]
    assert sum(sizes) >= 23 * MB  # both buffers went through `pagecache.write`
    assert max(sizes) <= pagecache.PIECE
    # Every piece but each buffer's last ends at a multiple of a piece in the file, whatever
    # the pickle's opcodes before it: none straddles a folio.
    unaligned = [(at, n) for at, n in placed if (at + n) % pagecache.PIECE]
    assert len(unaligned) == 2, unaligned


def test_the_sqlite_store_writes_a_streamed_blob_in_pieces(tmp_path: Path, writes: list[int]) -> None:
    store = open_store(store_url(tmp_path))
    try:
        chunks = [os.urandom(MB) for _ in range(3)]
        writer = store.blob_writer()
        for chunk in chunks:
            writer.write(chunk)
        digest, size = writer.commit()
        assert size == 3 * MB and store.get_blob(digest) == b"".join(chunks)
        assert sum(writes) == 3 * MB and max(writes) <= pagecache.PIECE
    finally:
        store.close()
