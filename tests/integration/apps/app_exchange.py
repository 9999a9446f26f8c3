"""Large values through an executor's exchange directory (engine/scheduler/exchange.py): results
pickled into `out/` and adopted by the scheduler, arguments mapped from `in/`; and what an
executor tries when it would read or plant what it was never given."""

from __future__ import annotations

import errno
import os
import random
import time
from pathlib import Path
from typing import Any

import grpc
from sidefx import record

from engine import application, function
from engine.sdk import runtime as sdk_runtime
from engine.wire import content
from engine.wire.v1 import engine_pb2 as pb


def blob(size: int, seed: int) -> bytes:
    """`size` bytes that do not compress, the same for the same seed (the test recomputes them)."""
    return random.Random(seed).randbytes(size)


class Stall:
    """Pickled after a large value, it stalls the pickler: the result's file is already in `out/`
    and growing, not yet adopted. It says so by touching `marker` (a path of the test's)."""

    def __init__(self, marker: str, seconds: float) -> None:
        self.marker, self.seconds = marker, seconds

    def __reduce__(self) -> Any:
        Path(self.marker).touch()
        time.sleep(self.seconds)
        return (str, ("stalled",))


@function()
def make(size: int, seed: int, log: str | None = None, marker: str = "", stall: float = 0.0) -> Any:
    if log:
        record(log, "make", seed)
    value = blob(size, seed)
    return [value, Stall(marker, stall)] if marker else value


@function()
def measure(value: Any, log: str | None = None) -> dict[str, Any]:
    """What arrived, and where from: the exchange directory's `in/` as this executor sees it."""
    if log:
        record(log, "measure")
    data = value[0] if isinstance(value, list) else value
    base = os.environ.get("ENGINE_EXCHANGE_DIR", "")
    return {"size": len(data), "seed_ok": data == blob(len(data), 1) or data == blob(len(data), 2),
            "head": bytes(data[:16]), "exchange": base,
            "in": sorted(os.listdir(os.path.join(base, "in"))) if base else None}


@application()
@function()
def pass_on(size: int, log: str | None = None, marker: str = "", stall: float = 0.0) -> dict[str, Any]:
    return measure.future(make.future(size, 1, log, marker, stall), log)  # type: ignore[return-value]


@application()
@function()
def victim(size: int) -> bytes:
    return make.future(size, 7)  # type: ignore[return-value]


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def _adopt(name: str) -> str:
    """Blobs.Adopt of `out/<name>`, with this executor's own credential: OK or the status code."""
    own = sdk_runtime.current_context().runtime
    try:
        own.blobs.stub.Adopt(pb.AdoptBlobRequest(name=name), metadata=own.metadata)
        return "OK"
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"


@application()
@function()
def intruder(secret_digest: str, blob_dir: str, own: bytes) -> dict[str, Any]:
    """Handed another run's blob digest and the scheduler's blob directory (host paths), tries
    every way in through its exchange directory. `own` is a large value it was given."""
    base = Path(os.environ.get("ENGINE_EXCHANGE_DIR", ""))
    out: dict[str, Any] = {"exchange": str(base), "in": sorted(os.listdir(base / "in")),
                           "own": len(own)}
    for label, path in (("by_name", base / "in" / secret_digest),
                        ("by_host_path", Path(blob_dir) / content.shard(secret_digest) / secret_digest),
                        ("by_parent", base / "in" / ".." / ".." / ".." / content.shard(secret_digest) / secret_digest)):
        try:
            out[label] = f"read {len(path.read_bytes())} bytes"
        except OSError as exc:
            out[label] = _errno_name(exc)
    try:
        (base / "in" / "planted").write_bytes(b"x")
        out["write_in"] = "wrote"
    except OSError as exc:
        out["write_in"] = _errno_name(exc)
    # Plant a name pointing at the secret and ask the scheduler to adopt it.
    link = base / "out" / "pointer"
    link.symlink_to(Path(blob_dir) / content.shard(secret_digest) / secret_digest)
    out["adopt_symlink"] = _adopt("pointer")
    out["adopt_escape"] = _adopt("../in")
    # A file it still holds open could change after the scheduler checked it: refused.
    with open(base / "out" / "open", "wb") as fh:
        fh.write(b"y" * 100_000)
        fh.flush()
        out["adopt_open"] = _adopt("open")
    # The refused file was dropped; a closed one of its own is taken (its own bytes: no secret).
    (base / "out" / "closed").write_bytes(b"z" * 100_000)
    out["adopt_closed"] = _adopt("closed")
    return out
