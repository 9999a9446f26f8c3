"""A new file of 128 MiB written in pieces of one size, for several sizes: what `engine.pagecache`'s
64 KiB pieces are for. Reports numbers; asserts nothing.

    python benchmarks/pagecache_pieces.py [--dir DIR] [--mb 128] [--rounds 5] [--out results/pagecache_pieces.json]

Each round writes one new file per piece size (64 KiB to 8 MiB, the order changing every round,
so that a change in the machine hits every size alike) into `DIR` (default: a temporary
directory beside the state directory, `.engine/`), fsyncs it, and keeps it until the end: no file
is deleted between two writes, so that none writes into pages another just freed. The bytes
come from one buffer made (and touched) before the first write. Prints one JSON line per write
and a markdown table of medians on stderr. The file system and the machine's memory decide
the figures: on a virtual machine that hands free memory back to its host, pieces of 128 KiB and
more made the page cache take large folios, each of which came back from the host first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from engine import pagecache  # noqa: E402

SIZES = [64 << 10, 128 << 10, 1 << 20, 8 << 20]


def write_new(path: Path, data: memoryview, piece: int) -> float:
    """Seconds to write `data` into a new file at `path` in `piece`-byte writes (not the fsync),
    as the engine writes one (`engine.pagecache.write`)."""
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        began = time.perf_counter()
        pagecache.write(fd, data, piece)
        took = time.perf_counter() - began
        os.fsync(fd)
    finally:
        os.close(fd)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--mb", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    parent = args.dir or Path(".engine")
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pagecache-pieces-", dir=parent))
    data = memoryview(bytearray(b"\1") * (args.mb << 20))
    rows: list[dict[str, float | int]] = []
    try:
        for rnd in range(args.rounds):
            order = SIZES[rnd % len(SIZES):] + SIZES[:rnd % len(SIZES)]
            for piece in order:
                took = write_new(work / f"r{rnd}-{piece}", data, piece)
                row = {"round": rnd, "piece_bytes": piece, "mb": args.mb, "write_s": round(took, 4),
                       "loadavg_1m": os.getloadavg()[0]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| piece | new {args.mb} MiB file, write (median of {args.rounds}) | range |", file=sys.stderr)
    print("| ---: | ---: | ---: |", file=sys.stderr)
    for piece in SIZES:
        took = [r["write_s"] for r in rows if r["piece_bytes"] == piece]
        print(f"| {piece >> 10} KiB | {statistics.median(took):.3f} s | {min(took):.3f}–{max(took):.3f} s |",
              file=sys.stderr)
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
