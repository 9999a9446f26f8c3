"""The fan-out workload in Tensorlake's local runner, for comparison with `apps/fanout.py`.

Runs in the peers venv (`setup_peers.sh`), not the project's: `.venv-peers/bin/python
tensorlake_fanout.py --n 1000`. Prints one JSON object on stdout.

The application is `apps/fanout.py` with Tensorlake's imports — the engine follows Tensorlake's
names, so the code is otherwise the same: `fanout(n)` returns the tail call
`total.future(*[work.future(i) for i in range(n)])`, n + 2 function calls.
`run_local_application` runs the whole request in this process (Tensorlake's local mode: no
containers, no server, nothing checkpointed across processes):

- `import_s`: importing `tensorlake.applications`;
- `run_s`: `run_local_application(fanout, n)` until `Request.output()` returns — the figure
  compared with the engine's in-run duration.
"""

from __future__ import annotations

import argparse
import json
import time

start = time.perf_counter()
from tensorlake.applications import application, function, run_local_application  # noqa: E402

IMPORT_S = time.perf_counter() - start


@function()
def work(i: int) -> int:
    return i * 2


@function()
def total(*xs: int) -> int:
    return sum(xs)


@application()
@function()
def fanout(n: int) -> int:
    return total.future(*[work.future(i) for i in range(n)])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    from importlib.metadata import version

    start = time.perf_counter()
    request = run_local_application(fanout, args.n)
    result = request.output()
    run_s = time.perf_counter() - start
    if result != args.n * (args.n - 1):
        raise SystemExit(f"tensorlake fanout({args.n}) returned {result}, expected {args.n * (args.n - 1)}")
    print(json.dumps({"tensorlake_version": version("tensorlake"), "n": args.n,
                      "import_s": IMPORT_S, "run_s": run_s}))


if __name__ == "__main__":
    main()
