"""The holder of the docker backend's shared network namespace (`ENGINE_DOCKER_NETWORK=shared`).

It runs in a small container of its own on the bridge, and every executor the backend starts
joins its network namespace (`NetworkMode: container:<holder>`, `engine.backends.docker`). It
only waits, and ends by itself once no process has listened on a TCP port in the namespace for
`idle` seconds — at first, for `first` seconds. The backend gives it the executors' orphan grace
(`ENGINE_EXECUTOR_ORPHAN_TIMEOUT`) plus `MARGIN_S` as `idle`, and the executor start timeout
more as `first`. So when its engine is killed, its executors end after the grace
(`engine.executor.lifetime`) and the holder soon after; the next engine's sweep removes the
stopped containers. A living engine never joins a holder that has been without executors for
more than half the grace (it starts a new one), so the holder is not ending as one joins.

Run in the container as `python3 -m engine.backends.holder FIRST IDLE` (seconds); it imports
only the standard library.
"""

from __future__ import annotations

import signal
import sys
import time

# Added to the orphan grace before an empty namespace ends its holder.
MARGIN_S = 5.0


def listening() -> bool:
    """Whether any socket in this network namespace listens on TCP (state 0A in /proc/net)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh, None)  # the header
                if any(line.split()[3] == "0A" for line in fh if line.strip()):
                    return True
        except OSError:
            continue
    return False


def wait(first_s: float, idle_s: float, poll_s: float = 1.0) -> None:
    """Until nothing has listened for `idle_s` seconds (`first_s` before anything has)."""
    deadline = time.monotonic() + first_s
    while time.monotonic() < deadline:
        if listening():
            deadline = time.monotonic() + idle_s
        time.sleep(poll_s)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    wait(float(sys.argv[1]), float(sys.argv[2]))
