"""`python -m engine.executor --listen HOST:PORT [--port-file PATH] [--parent-pid PID [--template-pid PID]]`."""

from __future__ import annotations

import os

# Before anything imports grpc, which reads it once: a call may fork, and gRPC's fork handlers
# crash or deadlock a process that serves gRPC ("Forking inside a call", engine.executor.server).
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"

import argparse  # noqa: E402

from engine.executor.lifetime import INIT_TIMEOUT_S  # noqa: E402
from engine.executor.server import serve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.executor")
    parser.add_argument("--listen", default="0.0.0.0:50051", help="address to serve gRPC on")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--max-workers", type=int, default=256)
    parser.add_argument("--parent-pid", type=int,
                        help="exit (even mid-call) when this process is no longer the parent")
    parser.add_argument("--template-pid", type=int,
                        help="forked from this template (engine.executor.forkserver), whose parent is --parent-pid")
    parser.add_argument("--init-timeout", type=float, default=INIT_TIMEOUT_S,
                        help="exit when not initialised within this many seconds")
    args = parser.parse_args()
    serve(args.listen, args.port_file, args.max_workers, args.parent_pid, args.init_timeout,
          args.template_pid)


if __name__ == "__main__":
    main()
