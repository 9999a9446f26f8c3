"""What serializes container starts: N containers created and started at once, per network mode.

    python benchmarks/container_starts.py [--n 1,10] [--rounds 2] [--modes bridge,none,host,shared]

Each container runs the runtime image's Python doing nothing (`sleep`), with the executor's
settings that are not about the network (read-only root, no capabilities, an init, a tmpfs).
They are created and started from N threads at once, through the Docker SDK, as the docker
backend does; the figure is when the last `start` returned, from the first `create`.
Network modes: `bridge` (the docker backend's), `none` (a namespace with only loopback), `host`
(the machine's namespace) and `shared` (every container joins one running container's
namespace, `container:ID`, which is on the bridge). Modes alternate within a round, so that a
change in the machine's load hits them alike. Everything it starts is labelled
`engine.bench=container_starts` and removed.

Prints one JSON object per measurement and a markdown table on stderr (medians over rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

LABEL = {"engine.bench": "container_starts"}


def start_many(api: Any, image: str, n: int, network_mode: str) -> dict[str, float]:
    ids: list[str] = []

    def one(_: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        host_config = api.create_host_config(network_mode=network_mode, init=True, read_only=True,
                                             cap_drop=["ALL"], tmpfs={"/tmp": "rw,size=64m"})
        cid = api.create_container(image, entrypoint=["sleep", "60"], host_config=host_config,
                                   labels=LABEL, detach=True)["Id"]
        ids.append(cid)
        t1 = time.perf_counter()
        api.start(cid)
        return t1 - t0, time.perf_counter()

    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(one, range(n)))
    finally:
        for cid in ids:
            api.remove_container(cid, force=True)
    ends = sorted(end - began for _, end in results)
    return {"first_started_s": ends[0], "all_started_s": ends[-1],
            "create_median_s": statistics.median(c for c, _ in results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="1,10")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="bridge,none,host,shared")
    args = parser.parse_args()

    from engine import images

    client = images.docker_client()
    api = client.api
    image = images.build_runtime_image()
    holder = api.create_container(image, entrypoint=["sleep", "3600"], labels=LABEL, detach=True,
                                  host_config=api.create_host_config(network_mode="bridge", init=True))["Id"]
    api.start(holder)
    modes = {"shared": f"container:{holder}"}
    rows: dict[tuple[str, int], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for n in (int(x) for x in args.n.split(",")):
                for mode in args.modes.split(","):
                    out = start_many(api, image, n, modes.get(mode, mode))
                    out.update(mode=mode, n=n, loadavg_1m=os.getloadavg()[0])
                    print(json.dumps(out), flush=True)
                    rows.setdefault((mode, n), []).append(out["all_started_s"])
    finally:
        api.remove_container(holder, force=True)
    print("| network mode | N at once | all started after, s (median) |", file=sys.stderr)
    print("|---|---:|---:|", file=sys.stderr)
    for (mode, n), values in rows.items():
        print(f"| {mode} | {n} | {statistics.median(values):.2f} |", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
