"""A large value unpickled again and again in one process, glibc's defaults against the executors'
(`engine.executor.memory.GLIBC_TUNABLES`). Reports numbers; asserts nothing.

    python benchmarks/executor_memory.py [--mb 128] [--calls 5] [--gap 4] [--out results/F.json]

Each setting runs in a fresh interpreter: `calls` times, `gap` seconds apart (idle, as an executor
between calls), a thread (as a call) unpickles an MB MiB value from bytes in memory and drops it,
then builds MB MiB with `bytes(n)` and copies it (a function making a value). On a virtual machine
whose host takes free memory back (virtio-balloon free page reporting), what matters is whether
each call gets fresh pages or the ones the last call freed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from engine.executor.memory import GLIBC_TUNABLES  # noqa: E402

CHILD = r"""
import json, pickle, resource, sys, threading, time
mb, calls, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
src = pickle.dumps(bytes(mb << 20), protocol=5)
def call(out):
    t = time.perf_counter(); value = pickle.loads(src); out["unpickle_s"] = time.perf_counter() - t
    del value
    t = time.perf_counter(); made = bytes(mb << 20); copy = bytearray(made)
    out["make_s"] = time.perf_counter() - t
    del made, copy
samples = []
for _ in range(calls):
    time.sleep(gap)
    out = {}
    thread = threading.Thread(target=call, args=(out,)); thread.start(); thread.join()
    samples.append(out)
print(json.dumps({"samples": samples, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--gap", type=float, default=4.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    settings = {"glibc defaults": None, "executor (engine.executor.memory)": GLIBC_TUNABLES,
                "huge pages only (before)": "glibc.malloc.hugetlb=1"}
    results = {}
    for name, tunables in settings.items():
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        proc = subprocess.run([sys.executable, "-c", CHILD, str(args.mb), str(args.calls), str(args.gap)],
                              env=env, capture_output=True, text=True, check=True)
        results[name] = json.loads(proc.stdout)
        row = results[name]["samples"]
        print(f"{name}: unpickle " + " ".join(f"{s['unpickle_s']:.3f}" for s in row)
              + " s; make+copy " + " ".join(f"{s['make_s']:.3f}" for s in row)
              + f" s; peak RSS {results[name]['peak_rss_mb']:.0f} MB", file=sys.stderr)
    report = {"mb": args.mb, "calls": args.calls, "gap_s": args.gap, "loadavg_1m": os.getloadavg()[0],
              "settings": {k: v or "" for k, v in settings.items()}, "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
