"""Where a large value's hand-off from `make` to `measure` spends its time. Reports numbers; asserts nothing.

    python benchmarks/large_trace.py [--backends process,docker] [--runs 5] [--mb 128] [--gap 0]
                                     [--out results/large_trace.json]

One scheduler per backend in this process, warm executors, as `large_paired.py`; each run is
`apps/large.py:pass_on(0)` and then `pass_on(MB)`, after `--gap` idle seconds (`large_paired.py`
leaves Ray's run between two of the engine's, some ten seconds). The scheduler's steps are
timestamped by wrapping them in this process, all relative to `make`'s dispatch:

- `claimed`: `Blobs.Adopt` took `make`'s file out of its executor's reach (`Exchange.claim`):
  `make` pickled the value into it in the meantime;
- `measure_dispatched`: `measure` was sent the value by its token;
- `settled`: the file was hashed and fsynced (`Exchange.settle`, on a thread, from `claimed` on);
- `measure_answered`: `measure`'s answer arrived (it mapped the blob and unpickled it);
- `measure_ended`: `measure`'s outcome was taken — held until `make` was checkpointed.

So `measure_answered - measure_dispatched` is `measure`'s own time, `settled - claimed` the
checkpoint's, and the later of the two decides `measure_ended`. Every value is checkpointed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "apps"))

from large_paired import run_pass_on, warm_scheduler  # noqa: E402  (this directory)

from engine.scheduler import Scheduler  # noqa: E402
from engine.scheduler import dispatch as dispatch_module  # noqa: E402
from engine.scheduler import exchange as exchange_module  # noqa: E402

STEPS = ("claimed", "measure_dispatched", "measure_answered", "settled", "measure_ended")
_stamps: dict[str, float] = {}


def _stamp_after(cls: Any, name: str, key: str) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        finally:
            _stamps[key] = time.time()

    setattr(cls, name, wrapped)


def _instrument() -> None:
    _stamp_after(exchange_module.Exchange, "claim", "claimed")
    _stamp_after(exchange_module.Exchange, "settle", "settled")
    answered = dispatch_module.Dispatcher._answered

    def on_answer(self: Any, call: Any, *args: Any) -> None:
        _stamps[f"{call.function}_answered"] = time.time()
        answered(self, call, *args)

    dispatch_module.Dispatcher._answered = on_answer  # type: ignore[method-assign]


async def _pass_on(scheduler: Scheduler, app: Any, mb: int) -> dict[str, float]:
    _stamps.clear()
    make, measure = await run_pass_on(scheduler, app, mb)
    stamps = {**_stamps, "measure_dispatched": measure.started_at, "measure_ended": measure.ended_at}
    return {step: round(stamps[step] - make.started_at, 3) for step in STEPS if step in stamps}


async def _backend(backend: str, runs: int, mb: int, gap: float) -> list[dict[str, Any]]:
    rows = []
    async with warm_scheduler(backend) as (scheduler, app):
        for _ in range(runs):
            await asyncio.sleep(gap)
            zero, big = await _pass_on(scheduler, app, 0), await _pass_on(scheduler, app, mb)
            row = {**big, "zero_measure_ended": zero["measure_ended"], "loadavg_1m": os.getloadavg()[0]}
            rows.append(row)
            print(f"{backend}: " + " ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    return rows


def _summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    def med(f: Any) -> float:
        values = [f(r) for r in rows if "claimed" in r and "settled" in r and "measure_answered" in r]
        return round(median(values), 3) if values else float("nan")

    return {"claimed": med(lambda r: r["claimed"]),
            "measure_own": med(lambda r: r["measure_answered"] - r["measure_dispatched"]),
            "hash_and_fsync": med(lambda r: r["settled"] - r["claimed"]),
            "measure_held": med(lambda r: max(0.0, r["measure_ended"] - r["measure_answered"])),
            "measure_ended": med(lambda r: r["measure_ended"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="process,docker")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--gap", type=float, default=0.0, help="idle seconds before each run")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "large_trace.json")
    args = parser.parse_args()
    _instrument()
    results: dict[str, Any] = {"mb": args.mb, "gap_s": args.gap, "backends": {}}
    for backend in args.backends.split(","):
        rows = asyncio.run(_backend(backend, args.runs, args.mb, args.gap))
        results["backends"][backend] = {"runs": rows, "medians": _summary(rows)}
        print(f"{backend} medians (s): {results['backends'][backend]['medians']}", flush=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
