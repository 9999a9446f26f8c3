"""The store: runs, calls, checkpoints (results) and logs.

Chosen by URL; `sqlite:///<path>` is the one implemented (the default is
`sqlite:///<state_dir>/engine.db`, blobs beside it in `<state_dir>/blobs/`). The schema lives in
`engine.store.schema`; the implementation in `engine.store.sqlite`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.errors import SDKUsageError
from engine.store.sqlite import CallRow, RunRow, SQLiteStore

__all__ = ["CallRow", "RunRow", "SQLiteStore", "open_store", "store_url"]


def store_url(state_dir: Path) -> str:
    return f"sqlite:///{Path(state_dir).resolve() / 'engine.db'}"


def open_store(url: str) -> SQLiteStore:
    """Open (creating if needed) the store at `url`."""
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise SDKUsageError(f"unsupported store URL {url!r}: use sqlite:///PATH")
    path = Path(url[len(prefix):])
    try:
        return SQLiteStore(path, path.parent / "blobs")
    except (OSError, sqlite3.Error) as exc:
        raise SDKUsageError(
            f"cannot use state directory {path.parent}: {getattr(exc, 'strerror', None) or exc} "
            "(pass --state-dir DIR or set ENGINE_STATE_DIR)"
        ) from None
