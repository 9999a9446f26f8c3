"""An executor's memory: what a call frees is kept for the next call, and given back when idle.

A large value costs its executor fresh memory: a function builds it, or unpickles it from a
mapped blob (`engine.executor.blobs`), and the C library's default allocator gives every
allocation of 32 MiB or more its own `mmap`, unmapped again when the value is freed. Fresh pages
are slow on a virtual machine whose host takes free memory back (virtio-balloon free page
reporting, as on the machines the benchmarks ran on): the host backs each page again on its
first touch. Measured there (`benchmarks/executor_memory.py`: a 128 MiB value unpickled in a
thread, one call every 4 s): 0.05-0.07 s each time with glibc's defaults, up to 0.3 s when the
host had taken the memory back, and 0.007 s from the second call on with the settings below.

So an executor starts with glibc tuned (`GLIBC_TUNABLES`, a default beneath the environment the
function is given; the backends put it there, `engine.executor.lifetime.EXECUTOR_ENV_DEFAULTS`):

- `mmap_max=0` and `arena_max=1`: every allocation, of every thread (calls run on threads), comes
  from the one heap instead of a mapping of its own or a thread's arena, whose large allocations
  are mapped and unmapped the same way.
- `trim_threshold` at its maximum: freed memory at the heap's top stays with the process.

Memory a call freed is then the next call's, already backed. The cost is that an executor holds
on to the most it has needed; `Trim` gives it back (`malloc_trim`) once no call has run for
`IDLE_TRIM_S` (`ENGINE_EXECUTOR_IDLE_TRIM`), so that an executor between bursts, or a warm one
waiting for work, holds only its live data. An executor whose environment sets `GLIBC_TUNABLES`
otherwise runs with that instead. The executor takes the defaults out of its environment at
start (`forget_defaults`), so that the processes a call starts get the C library's own
behaviour. Other C libraries (musl) ignore the variable and have no `malloc_trim`: nothing
happens there.

Transparent huge pages (`glibc.malloc.hugetlb=1`, the executors' default before this) are not
asked for: on these machines a fresh 2 MiB page cost 4x what its 4 KiB pages did unless the
machine was loaded (benchmarks/README.md, "Round seven").
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

#: The allocator settings an executor starts with (see above).
GLIBC_TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                  "glibc.malloc.trim_threshold=18446744073709551615")

#: Seconds without a running call after which an executor gives its freed memory back (as long
#: as jemalloc's `dirty_decay_ms` by default);
#: `ENGINE_EXECUTOR_IDLE_TRIM` in the engine's environment sets it for every executor (0: after
#: every call; `engine.executor.lifetime` reads it and passes it on).
IDLE_TRIM_S = 10.0
IDLE_TRIM_ENV = "ENGINE_EXECUTOR_IDLE_TRIM"


def forget_defaults() -> None:
    """Take the engine's `GLIBC_TUNABLES` out of this process's environment (the C library read
    it at start), so that what a call starts does not inherit them. A function's own value stays."""
    if os.environ.get("GLIBC_TUNABLES") == GLIBC_TUNABLES:
        del os.environ["GLIBC_TUNABLES"]


class Trim:
    """Gives freed memory back to the system once the executor has been idle for `idle_s`.

    The executor, which counts its running calls, says when it becomes `busy` and when it is
    `idle` again; the lifetime watch calls `tick` (every quarter of a second). Thread-safe."""

    def __init__(self, idle_s: float = IDLE_TRIM_S, clock: Callable[[], float] = time.monotonic,
                 trim: Callable[[], Any] | None = None) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._trim = trim if trim is not None else _malloc_trim
        self._lock = threading.Lock()
        self._idle_since: float | None = None  # None: a call runs, or trimmed since the last
        self.trims = 0

    def busy(self) -> None:
        with self._lock:
            self._idle_since = None

    def idle(self) -> None:
        with self._lock:
            self._idle_since = self._clock()

    def tick(self) -> None:
        with self._lock:
            if self._idle_since is None or self._clock() - self._idle_since < self.idle_s:
                return
            self._idle_since = None
        self._trim()
        self.trims += 1


@functools.cache
def _libc_trim() -> Any:
    import ctypes  # (not at import: the backends read GLIBC_TUNABLES from here)

    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def _malloc_trim() -> None:
    fn = _libc_trim()
    if fn is not None:
        fn(0)
