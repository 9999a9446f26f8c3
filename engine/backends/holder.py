"""The holder of the docker backend's shared network namespace (`ENGINE_DOCKER_NETWORK=shared`).

It runs in a small container of its own on the bridge, and every executor the backend starts
joins its network namespace (`NetworkMode: container:<holder>`, `engine.backends.docker`). It
only waits, and ends by itself once no process has listened on a TCP port in the namespace for
the executors' orphan grace (`ENGINE_EXECUTOR_ORPHAN_TIMEOUT`) plus `MARGIN_S` — at first, for
the executor start timeout plus that. So when its engine is killed, its executors end after the
grace (`engine.executor.lifetime`) and the holder soon after; the next engine's sweep removes
the stopped containers. A living engine never joins a holder that has been without executors
for more than half the grace (it starts a new one), so the holder is not ending as one joins.

Run in the container as `python3 -m engine.backends.holder`; it imports only the standard library.
"""

from __future__ import annotations

import os
import signal
import sys
import time

# Added to the orphan grace before an empty namespace ends its holder.
MARGIN_S = 5.0
# How long the first executor may take to listen (engine.backends.dockerapi.START_TIMEOUT_S).
FIRST_LISTENER_S = 30.0
_DEFAULT_GRACE_S = 10.0  # engine.executor.lifetime.DEFAULT_ORPHAN_TIMEOUT_S


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


def grace_s() -> float:
    try:
        grace = float(os.environ.get("ENGINE_EXECUTOR_ORPHAN_TIMEOUT", ""))
    except ValueError:
        grace = _DEFAULT_GRACE_S
    return (grace if grace > 0 else _DEFAULT_GRACE_S) + MARGIN_S


def main(poll_s: float = 1.0) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    grace = grace_s()
    deadline = time.monotonic() + FIRST_LISTENER_S + grace
    while time.monotonic() < deadline:
        if listening():
            deadline = time.monotonic() + grace
        time.sleep(poll_s)


if __name__ == "__main__":
    main()
