"""The store: runs, calls, checkpoints (results), logs, deployments and leases.

Chosen by URL (`--store URL`, `ENGINE_STORE`, or `store:` in engine.yaml):

- `sqlite:///PATH` (the default: `sqlite:///<state_dir>/engine.db`, blobs beside it in
  `<state_dir>/blobs/`): nothing to install; one machine's disk.
- `postgresql://user:pass@host:port/db`: PostgreSQL through psycopg 3; everything a run needs,
  large values and deployed code included, is in the database, so any server on it can take any
  run over.

The schema lives in `engine.store.schema`; what both stores do in `engine.store.base`; each
dialect in `engine.store.sqlite` and `engine.store.postgres`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from engine.errors import SDKUsageError
from engine.store.base import (
    CallRow,
    Delivery,
    DeliveryAttempt,
    DeploymentRow,
    FailedAttempt,
    Lease,
    RunRow,
    RunWebhook,
    SignalRow,
    Store,
    StoreUnavailable,
)
from engine.store.sqlite import SQLiteStore

__all__ = ["CallRow", "Delivery", "DeliveryAttempt", "DeploymentRow", "FailedAttempt", "Lease", "RunRow", "RunWebhook",
           "SignalRow", "SQLiteStore", "Store", "StoreUnavailable", "open_store", "store_url"]


def store_url(state_dir: Path, url: str | None = None) -> str:
    """The store to use: `url` if given, else `ENGINE_STORE`, else SQLite in `state_dir`."""
    chosen = url or os.environ.get("ENGINE_STORE")
    if chosen:
        return chosen
    return f"sqlite:///{Path(state_dir).resolve() / 'engine.db'}"


def open_store(url: str) -> Store:
    """Open (creating or migrating if needed) the store at `url`."""
    if url.startswith(("postgresql://", "postgres://")):
        from engine.store.postgres import PostgresStore

        return PostgresStore(url)
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise SDKUsageError(f"unsupported store URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
    path = Path(url[len(prefix):])
    try:
        return SQLiteStore(path, path.parent / "blobs")
    except (OSError, sqlite3.Error) as exc:
        raise SDKUsageError(
            f"cannot use state directory {path.parent}: {getattr(exc, 'strerror', None) or exc} "
            "(pass --state-dir DIR or set ENGINE_STATE_DIR)"
        ) from None
