"""What an executor sees of its own process: forked from the template, it must be what a
spawned `python -m engine.executor` was (tests/integration/test_forkserver.py)."""

from __future__ import annotations

import os
import stat
import sys
import tempfile

from engine import application, function


@function(secrets=["ENGINE_TEST_TOKEN_7F3A"])
def facts(_: int) -> dict:
    stdin, null = os.fstat(0), os.stat(os.devnull)
    with open("/proc/self/comm") as f:
        comm = f.read().strip()
    with open(f"/proc/{os.getppid()}/comm") as f:
        parent_comm = f.read().strip()
    return {
        "pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgrp(), "comm": comm,
        "parent_comm": parent_comm,
        "secret": os.environ.get("ENGINE_TEST_TOKEN_7F3A"),
        "tmpdir": os.environ.get("TMPDIR"), "gettempdir": tempfile.gettempdir(),
        "stdin_is_null": stat.S_ISCHR(stdin.st_mode) and stdin.st_rdev == null.st_rdev,
        "grpc_fork_support": os.environ.get("GRPC_ENABLE_FORK_SUPPORT"),
        "argv": sys.argv,
    }


@application()
@function()
def forked_app(x: int) -> dict:
    return facts.future(x)
