"""`python -m engine.executor --listen HOST:PORT [--port-file PATH] [--parent-pid PID]`."""

from __future__ import annotations

import argparse

from engine.executor.lifetime import INIT_TIMEOUT_S
from engine.executor.server import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.executor")
    parser.add_argument("--listen", default="0.0.0.0:50051", help="address to serve gRPC on")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--max-workers", type=int, default=256)
    parser.add_argument("--parent-pid", type=int,
                        help="exit (even mid-call) when this process is no longer the parent")
    parser.add_argument("--init-timeout", type=float, default=INIT_TIMEOUT_S,
                        help="exit when not initialised within this many seconds")
    args = parser.parse_args()
    serve(args.listen, args.port_file, args.max_workers, args.parent_pid, args.init_timeout)


if __name__ == "__main__":
    main()
