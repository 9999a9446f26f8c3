"""What serializes container starts: N containers created and started at once, per network mode.

    python benchmarks/container_starts.py [--n 1,10] [--rounds 2] [--modes bridge,none,host,shared]
    python benchmarks/container_starts.py --flags [--n 1,10] [--rounds 3]

Each container runs the runtime image's Python doing nothing (`sleep`), with the executor's
settings that are not about the network (read-only root, no capabilities, an init, a tmpfs).
They are created and started from N threads at once, through the Docker SDK, as the docker
backend does; the figure is when the last `start` returned, from the first `create`.
Network modes: `bridge` (the docker backend's), `none` (a namespace with only loopback), `host`
(the machine's namespace) and `shared` (every container joins one running container's
namespace, `container:ID`, which is on the bridge). Modes alternate within a round, so that a
change in the machine's load hits them alike. Everything it starts is labelled
`engine.bench=container_starts` and removed.

With `--flags`, every container is the executor's own (`dockerapi.executor_container`, the body
the docker backend sends, with two bind-mounted exchange directories as a run gives it), and each
variant leaves out one of its settings (`engine`: all of them; `no-init`, `writable-root`,
`no-tmpfs`, `caps` (capabilities and no-new-privileges kept), `root-user`, `no-limits`,
`no-binds`, `default-log`, `net-none`), so that what each costs at start is seen apart.

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
from typing import Any, Callable

LABEL = {"engine.bench": "container_starts"}


def start_together(api: Any, n: int, create: Callable[[], str]) -> dict[str, float]:
    """`create` (returns a container id) and start N containers from N threads at once; remove
    them. Times from the first `create`."""
    ids: list[str] = []

    def one(_: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        cid = create()
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
            "create_median_s": statistics.median(c for c, _ in results),
            "start_median_s": statistics.median(end - began - c for c, end in results)}


def start_many(api: Any, image: str, n: int, network_mode: str) -> dict[str, float]:
    """N sleeping containers with the executor's non-network settings, in `network_mode`."""
    host_config = api.create_host_config(network_mode=network_mode, init=True, read_only=True,
                                         cap_drop=["ALL"], tmpfs={"/tmp": "rw,size=64m"})
    return start_together(api, n, lambda: api.create_container(
        image, entrypoint=["sleep", "60"], host_config=host_config, labels=LABEL, detach=True)["Id"])


def flag_variants(image: str, exchange: str) -> dict[str, dict[str, Any]]:
    """The executor's create body, and that body with one setting left out per variant."""
    from engine.backends.dockerapi import executor_container

    binds = {os.path.join(exchange, "in"): {"bind": "/exchange/in", "mode": "ro"},
             os.path.join(exchange, "out"): {"bind": "/exchange/out", "mode": "rw"}}

    def body(**kw: Any) -> dict[str, Any]:
        settings: dict[str, Any] = dict(labels=LABEL, environment={"ENGINE_EXCHANGE_DIR": "/exchange"},
                                        cpu=1.0, memory_gb=1.0, ephemeral_disk_gb=1.0, read_only=True,
                                        entrypoint=["sleep", "60"], binds=binds)
        settings.update(kw)
        return executor_container(image, **settings)

    variants: dict[str, dict[str, Any]] = {"engine": body()}
    edits = {
        "no-init": lambda hc: hc.pop("Init"),
        "writable-root": lambda hc: hc.update(ReadonlyRootfs=False),
        "no-tmpfs": lambda hc: hc.pop("Tmpfs"),
        "caps": lambda hc: (hc.pop("CapDrop"), hc.pop("SecurityOpt")),
        "no-limits": lambda hc: (hc.pop("NanoCpus"), hc.pop("Memory"), hc.pop("MemorySwap")),
        "no-binds": lambda hc: hc.pop("Binds"),
        "default-log": lambda hc: hc.pop("LogConfig"),
        "net-none": lambda hc: hc.update(NetworkMode="none"),
    }
    for name, edit in edits.items():
        config = body()
        edit(config["HostConfig"])
        variants[name] = config
    variants["root-user"] = {**body(), "User": ""}
    return variants


def start_configs(api: Any, config: dict[str, Any], n: int) -> dict[str, float]:
    """N containers of a full create body."""
    return start_together(api, n, lambda: api.create_container_from_config(config, None)["Id"])


def main_flags(args: argparse.Namespace) -> int:
    import tempfile

    from engine import images

    api = images.docker_client().api
    image = images.build_runtime_image()
    rows: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="engine-bench-exchange-") as exchange:
        for sub in ("in", "out"):
            os.mkdir(os.path.join(exchange, sub))
        variants = flag_variants(image, exchange)
        names = args.variants.split(",") if args.variants else list(variants)
        for r in range(args.rounds):
            for n in (int(x) for x in args.n.split(",")):
                # A different order each round: the machine's load drifts.
                for name in names[r % len(names):] + names[: r % len(names)]:
                    out = start_configs(api, variants[name], n)
                    out.update(variant=name, n=n, loadavg_1m=os.getloadavg()[0])
                    print(json.dumps(out), flush=True)
                    rows.setdefault((name, n), []).append(out["all_started_s"])
    print("| variant | N at once | all started after, s (median) |", file=sys.stderr)
    print("|---|---:|---:|", file=sys.stderr)
    for (name, n), values in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"| {name} | {n} | {statistics.median(values):.2f} |", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="1,10")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="bridge,none,host,shared")
    parser.add_argument("--flags", action="store_true",
                        help="the executor's own container, leaving out one setting at a time")
    parser.add_argument("--variants", default="", help="with --flags: which variants (default all)")
    args = parser.parse_args()
    if args.flags:
        return main_flags(args)

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
