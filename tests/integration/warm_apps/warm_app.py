"""The warm pool's tests deploy this: each call says which executor ran it (the container's
hostname, which Docker sets to its id, and the process id), so a test can tell whether a
blank executor started before the run served it."""

from __future__ import annotations

import os
import socket

from engine import application, function


def here() -> dict[str, object]:
    # (and that the executor's own marker of a blank start is not the function's to see)
    return {"host": socket.gethostname(), "pid": os.getpid(), "blank": os.environ.get("ENGINE_EXECUTOR_BLANK")}


@function()
def child(x: int) -> dict[str, object]:
    return {**here(), "x": x}


@application()
@function()
def first(x: int) -> dict[str, object]:
    return {"root": here(), "child": child(x)}
