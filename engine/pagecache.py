"""Writing a large file in 64 KiB pieces, and releasing its pages: the page cache on a VM.

Every large value the engine checkpoints on this machine becomes a file written through the
page cache: the executor pickling a result into its exchange directory
(`engine.executor.blobs`) and the SQLite store writing a blob that streamed in
(`engine.store.sqlite`). One `write` of megabytes lets the kernel hold the new pages in large
folios (ext4 takes up to 2 MiB), each a high-order block of free memory; a write of 64 KiB gets
folios of 64 KiB at most, which the small free blocks left between the pages in use can hold.

On a virtual machine that hands its free memory back to the host (virtio-balloon free page
reporting, here for free blocks of 128 KiB and up) every large block has to come back from the
host page by page first: measured on one, a new 128 MiB file took 0.31–0.33 s written in pieces
of 128 KiB to 8 MiB, and 0.03 s in pieces of 64 KiB, as long as such small blocks were free
(there, for the first 1.25 GB of new files after memory was last freed; then 0.32 s as well:
`benchmarks/README.md`, "Round eight"). When free memory is at hand, the smaller pieces cost
the extra system calls: ~2,000 for 128 MiB, a few milliseconds.

Past those 1.25 GB, only pages freed again help: a value handed on and stored has its pages
released (`release`, by `engine.scheduler.exchange.release_pages`), so that the next value's
file is written into them (round ten).

Pieces are aligned to the file, not to the buffer: a pickled value starts after a few bytes of
opcodes, and 64 KiB writes at offset 20 straddle two folios each, which the page cache then
holds in single pages (128 MiB: 0.046-0.050 s against 0.031 s aligned). So the first piece of
a write ends at the next multiple of the piece size, and every later one starts at one.
"""

from __future__ import annotations

import os

# The largest piece one `write` puts in the page cache.
PIECE = 64 * 1024


def write(fd: int, data: bytes | bytearray | memoryview, piece_bytes: int = PIECE) -> None:
    """Write all of `data` (contiguous) at `fd`'s position, in pieces of at most `piece_bytes`
    (another size than `PIECE` only to measure it: `benchmarks/pagecache_pieces.py`), each
    ending at a multiple of `piece_bytes` in the file: a value pickled after a 20-byte header
    would otherwise straddle every folio, which the page cache then holds in single pages
    (128 MiB at offset 20: 0.046-0.050 s against 0.031 s aligned, round ten)."""
    view = memoryview(data).cast("B")
    first = -position(fd) % piece_bytes  # the first piece only up to a boundary
    if first:
        _write_all(fd, view[:first])
    for start in range(first, len(view), piece_bytes):
        _write_all(fd, view[start:start + piece_bytes])


def position(fd: int) -> int:
    """`fd`'s offset in its file (0 for a pipe or socket)."""
    try:
        return os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return 0


def _write_all(fd: int, piece: memoryview) -> None:
    done = 0
    while done < len(piece):
        done += os.write(fd, piece[done:])


def release(fd: int) -> None:
    """Drop the file's cached pages (`POSIX_FADV_DONTNEED`; written-back pages only, which an
    fsynced file's all are), so that the next large file written takes them, recycled, rather
    than fresh ones. Nothing where the call does not exist (macOS)."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        advise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
