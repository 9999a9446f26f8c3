"""Runs cannot reach into each other (engine/scheduler/access.py), on real executor processes
over real gRPC: two runs on one scheduler, one holding secrets (a large state value, a child's
large result) and one that is handed their ids and digests and tries every way in with its
executor's real credential — awaiting, submitting, reading and writing state, reporting
progress, reading headers, fetching blobs, and laundering a digest through a future or a state
write. Every attempt is refused with `AccessDenied` in the function, the victim finishes as if
nothing happened, and a client with no credential, or a forged one, is refused too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

from engine import wire
from engine.app import app_spec_from_function
from engine.runner import make_backend, read_outcome
from engine.scheduler import Scheduler
from engine.scheduler.state import RUNNING, SUCCEEDED, RunState
from engine.store import open_store, store_url
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc

BIG = 2 * 1024 * 1024
# Through the SDK's runtime (AccessDenied), and through its gRPC stubs with its credential.
ATTACKS = ("await", "submit", "get_state", "set_state", "progress", "headers", "blob", "state_blob")
LAUNDERING = ("launder_submit", "launder_state")


def _submit(scheduler: Scheduler, fn: Any, **kwargs: Any) -> RunState:
    args = pb.Arguments()
    for key, value in kwargs.items():
        args.kwargs[key].value.data = wire.dumps(value)
    return scheduler.submit_run(app_spec_from_function(fn), wire.dumps(kwargs), args)


async def _until(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _raw_client_attempts(address: str, target: dict[str, str]) -> dict[str, grpc.StatusCode]:
    """A client that is no executor of this scheduler's: no credential, then a forged one."""
    codes: dict[str, grpc.StatusCode] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        callback, blobs = pb_grpc.SchedulerCallbackStub(channel), pb_grpc.BlobsStub(channel)
        forged = ((wire.CREDENTIAL_METADATA_KEY, "0123456789abcdef.not-the-secret"),)
        for label, metadata in (("none", ()), ("forged", forged)):
            attempts: dict[str, Any] = {
                "get_state": lambda m=metadata: callback.GetState(pb.GetStateRequest(
                    run_id=target["run_id"], call_id=target["call_id"], key="secret"), metadata=m),
                "submit": lambda m=metadata: callback.Submit(pb.SubmitRequest(
                    run_id=target["run_id"], parent_call_id=target["call_id"]), metadata=m),
                "await": lambda m=metadata: callback.Await(pb.AwaitRequest(
                    run_id=target["run_id"], parent_call_id=target["call_id"],
                    ids=[target["child_id"]]), metadata=m),
                "blob_get": lambda m=metadata: _read_all(blobs.Get(
                    pb.GetBlobRequest(digest=target["blob"]), metadata=m)),
                "blob_put": lambda m=metadata: blobs.Put(_one_chunk(), metadata=m),
            }
            for name, attempt in attempts.items():
                try:
                    await attempt()
                    codes[f"{label}:{name}"] = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    codes[f"{label}:{name}"] = exc.code()
    return codes


async def _read_all(stream: Any) -> None:
    async for _ in stream:
        pass


async def _one_chunk() -> Any:
    yield pb.BlobChunk(data=b"planted")


async def _two_runs(app: ModuleType, state_dir: Path, release: Path) -> dict[str, Any]:
    store = open_store(store_url(state_dir))
    scheduler = Scheduler(store, make_backend("process", state_dir, None), max_executors=8)
    await scheduler.start()
    try:
        victim = _submit(scheduler, app.victim, release=str(release))

        def holding_secrets() -> bool:
            child = next((c for c in victim.calls.values() if c.function == "secret_value"), None)
            root = victim.calls[victim.root_id]
            return (child is not None and child.status == SUCCEEDED and root.status == RUNNING
                    and bool(victim.state) and "secret" in (victim.state or {}))

        await _until(holding_secrets, "the victim to hold its secrets")
        child = next(c for c in victim.calls.values() if c.function == "secret_value")
        assert victim.state is not None
        state_digest = victim.state["secret"][1]
        assert child.result_digest and state_digest, "both secrets must be blobs"
        target = {"run_id": victim.run_id, "call_id": victim.root_id, "child_id": child.id,
                  "blob": child.result_digest, "state_blob": state_digest}

        attacker = _submit(scheduler, app.attacker, target=target)
        await asyncio.wait_for(attacker.done.wait(), 120)
        raw = await _raw_client_attempts(scheduler.callback_address, target)
        # The victim was never disturbed: still running, nothing added to its graph.
        assert victim.calls[victim.root_id].status == RUNNING
        assert {c.function for c in victim.calls.values()} == {"victim", "secret_value"}
        release.touch()
        await asyncio.wait_for(victim.done.wait(), 60)
        return {"victim": victim.run_id, "attacker": attacker.run_id, "raw": raw,
                "refused": scheduler.access.refused, "executions": {
                    c.function: c.executions for c in victim.calls.values()}}
    finally:
        await scheduler.close()
        store.close()


def test_a_run_cannot_reach_into_another(apps, state_dir, tmp_path, caplog) -> None:
    app = apps("app_isolation")
    caplog.set_level(logging.WARNING, logger="engine.scheduler.access")
    seen = asyncio.run(_two_runs(app, state_dir, tmp_path / "release"))

    attacker = read_outcome(state_dir, seen["attacker"])
    assert attacker.status == "succeeded", attacker.error()
    out = attacker.result
    for name in ATTACKS:
        assert out[name].startswith("AccessDenied: "), (name, out[name])
    for name in LAUNDERING:
        assert out[name].startswith("PERMISSION_DENIED: "), (name, out[name])
    assert "not running call" in out["await"] and seen["victim"] in out["await"]
    assert "never given" in out["blob"] and "never given" in out["state_blob"]
    assert "never given" in out["launder_submit"] and "never given" in out["launder_state"]
    # Its own run's view holds no future of another run: an error of its own making, not access.
    assert out["await_from_own_run"].startswith("SDKUsageError"), out["await_from_own_run"]
    assert out["own_child"] == 42 and out["own_state"] is True and out["own_blob"] == BIG

    victim = read_outcome(state_dir, seen["victim"])
    assert victim.status == "succeeded", victim.error()
    assert victim.result == {"child": hashlib.sha256(bytes([7]) * BIG).hexdigest(), "secret": True}
    assert seen["executions"] == {"victim": 1, "secret_value": 1}

    assert set(seen["raw"].values()) == {grpc.StatusCode.PERMISSION_DENIED}, seen["raw"]
    # One log line per refusal, naming the run and call asked about and what was refused.
    lines = [r.getMessage() for r in caplog.records if r.name == "engine.scheduler.access"]
    assert len(lines) == seen["refused"] == len(ATTACKS) + len(LAUNDERING) + len(seen["raw"])
    assert any(f"run {seen['victim']} call " in line and "reading request state" in line for line in lines)
    assert any("reading blob" in line and "executor " in line and "attacker" in line for line in lines)
    assert sum("without a valid credential" in line for line in lines) == len(seen["raw"])
