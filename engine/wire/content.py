"""Content addresses: the names under which values too large for a message are stored.

A value's address is `b3-` and the hex BLAKE3 (32 bytes) of its bytes. The scheduler computes it
for every value it stores (`engine.store`, `engine.scheduler.exchange`), and an executor checks
each value it fetches against it (`engine.executor.blobs`). The same bytes always get the same
address, so a value stored twice is one blob.

BLAKE3 rather than SHA-256: the engine hashes every large value before its call is checkpointed,
so the hash sits on the path from one function to the next. On one core (x86-64, AVX-512) BLAKE3
hashes 128 MiB in 0.018 s and SHA-256 with the CPU's SHA extensions in 0.066 s; BLAKE3 also splits
a large input across cores (`threaded`: 0.009 s on two), which SHA-256's chain cannot.

Stores written before BLAKE3 name their blobs by bare hex SHA-256. Those addresses stay valid:
they are read as before, and `matches` checks a fetched value by the address's own algorithm.
New values get BLAKE3 addresses, so a value stored under both is two blobs.
"""

from __future__ import annotations

import hashlib
import mmap

import blake3

PREFIX = "b3-"
_HEX = frozenset("0123456789abcdef")
# Below this, starting threads costs more than it saves (measured: 1 MiB hashes in 0.10 ms on
# two threads against 0.12 ms on one; 64 KiB in 23 µs against 8 µs).
THREADED_FROM_BYTES = 1024 * 1024

Buffer = bytes | bytearray | memoryview | mmap.mmap


class Hasher:
    """An address computed piece by piece: `update(...)`, then `address()`."""

    __slots__ = ("_hash",)

    def __init__(self, threaded: bool = False) -> None:
        """`threaded`: hash on every core (worth it when the pieces are large)."""
        self._hash = blake3.blake3(max_threads=blake3.blake3.AUTO if threaded else 1)

    def update(self, data: Buffer) -> None:
        self._hash.update(data)

    def address(self) -> str:
        return PREFIX + self._hash.hexdigest()


def address(data: Buffer) -> str:
    """The address of `data`."""
    hasher = Hasher(threaded=len(data) >= THREADED_FROM_BYTES)
    hasher.update(data)
    return hasher.address()


def matches(data: Buffer, address_: str) -> bool:
    """Whether `data` is the value stored under `address_` (BLAKE3, or a store's SHA-256)."""
    if address_.startswith(PREFIX):
        return address(data) == address_
    return hashlib.sha256(data).hexdigest() == address_


def is_address(text: str) -> bool:
    """Whether `text` is an address (BLAKE3, or a store's SHA-256): safe as a file name."""
    digest = text.removeprefix(PREFIX)
    return len(digest) == 64 and _HEX.issuperset(digest)


def shard(address: str) -> str:
    """A directory to spread blob files over: the digest's first two hex digits."""
    return address.removeprefix(PREFIX)[:2]
