"""What of a file the kernel holds in its page cache, read with `mincore` (for the tests of the
exchange releasing a handed-on value's pages: engine/scheduler/exchange.py, `release_pages`).

    cached(path)              # the fraction of the file's pages in the page cache, 0.0-1.0
    until_released(path)      # cached(path) once it is 0 (or after 5 s): releases run on a thread
    drops_pages(directory)    # whether this filesystem drops clean pages when told (not tmpfs)
"""

from __future__ import annotations

import ctypes
import mmap
import os
import time
from pathlib import Path

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_FAILED = ctypes.c_void_p(-1).value


def cached(path: Path) -> float:
    """The fraction of `path`'s pages in the page cache (mincore over a mapping never touched,
    so that asking does not bring any in)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, _FAILED):
            raise OSError(ctypes.get_errno(), "mmap failed")
        try:
            pages = -(-size // mmap.PAGESIZE)
            vec = ctypes.create_string_buffer(pages)
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore failed")
            return sum(b & 1 for b in vec.raw) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def until_released(path: Path, timeout: float = 5.0) -> float:
    """`cached(path)` once it reaches 0, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while cached(path) > 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return cached(path)


def drops_pages(directory: Path) -> bool:
    """Whether files in `directory` lose their clean pages when told to (tmpfs keeps them)."""
    probe = directory / ".pagecache-probe"
    probe.write_bytes(os.urandom(1 << 20))
    try:
        fd = os.open(probe, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return cached(probe) < 0.5
    finally:
        probe.unlink()
