"""Where the engine keeps a machine's runs: the state directory.

`--state-dir`, else `$ENGINE_STATE_DIR`, else `.engine/` in the working directory. A module of
its own, importing nothing of the engine: `engine run` needs the directory on its early-start
thread (`engine.backends.early`: the process backend's executor logs go there) before it has
imported the rest of the engine, and importing `engine.runner` for it there cost about 0.4 s
before the first executor's start.
"""

from __future__ import annotations

import os
from pathlib import Path

STATE_DIR_ENV = "ENGINE_STATE_DIR"


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_DIR_ENV) or ".engine")


__all__ = ["STATE_DIR_ENV", "default_state_dir"]
