"""A fan-out of calls long enough to run side by side, each reporting where it ran: for the
docker backend's shared network namespace (test_docker_network.py)."""

from __future__ import annotations

import socket
import time

from engine import application, function


def listening_ports() -> list[int]:
    """TCP ports listened on in this network namespace (/proc/net/tcp, state 0A)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


@function(max_containers=4, timeout=120)
def slow(i: int, seconds: float) -> dict:
    time.sleep(seconds)
    return {"i": i, "hostname": socket.gethostname(), "ports": listening_ports()}


@function()
def gather(*seen: dict) -> list[dict]:
    return list(seen)


@application()
@function()
def fan(n: int = 4, seconds: float = 2.0) -> list[dict]:
    return gather.future(*[slow.future(i, seconds) for i in range(n)])  # type: ignore[return-value]
