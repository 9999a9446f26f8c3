"""`@cls()` against loading on every call: calls per second of N embedding calls, same run.

    python benchmarks/stateful.py [--calls 40]

Runs `apps/stateful_model.py` on the process backend: N calls of a `@cls()` method whose
constructor loads Gemma 3 270M (llama.cpp) once per executor, then N calls of a plain function
that loads it on every call; one executor each. Each is timed from submit to result (the
executor's start and, for `@cls()`, the one load are included). Prints the numbers; asserts
nothing. Needs `make llm-setup`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40)
    args = parser.parse_args()
    os.environ["ENGINE_BACKEND"] = "process"
    os.environ.setdefault("ENGINE_STATE_DIR", tempfile.mkdtemp(prefix="engine-bench-stateful-"))
    sys.path.insert(0, str(Path(__file__).parent / "apps"))
    import stateful_model as app

    from engine import run_local_application

    texts = [f"Short text number {i} about the weather." for i in range(args.calls)]
    rows = []
    for name, entry in (("@cls (load once per executor)", app.with_cls),
                        ("plain function (load every call)", app.without_cls)):
        started = time.perf_counter()
        out = run_local_application(entry, texts).output()
        elapsed = time.perf_counter() - started
        assert len(out) == args.calls
        rows.append((name, elapsed, args.calls / elapsed))
    print(f"{args.calls} embedding calls, one executor each, process backend")
    for name, elapsed, rate in rows:
        print(f"  {name:36s} {elapsed:7.2f} s  {rate:7.1f} calls/s")
    print(f"  speed-up: {rows[0][2] / rows[1][2]:.1f}x")


if __name__ == "__main__":
    main()
