"""A run that holds secrets, and one that tries to reach them (tests/integration/test_isolation.py).

`victim` keeps a large value in its request state and awaits a child with a large result (both
blobs), then waits for the test to release it. `attacker` is given the victim's ids and blob
digests — as if it had guessed them — and tries every way in through the engine's own
interfaces, with its executor's real credential; it reports what each attempt met, and proves
that its own calls still work.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import grpc

from engine import RequestContext, application, function
from engine.errors import AccessDenied
from engine.executor.runtime import ExecutorRuntime
from engine.sdk import runtime as sdk_runtime
from engine.sdk.future import RETURN_WHEN
from engine.wire.v1 import engine_pb2 as pb

BIG = 2 * 1024 * 1024  # above the inline limit: travels and is kept as a blob


@function()
def secret_value(seed: int) -> bytes:
    return bytes([seed]) * BIG


@application()
@function()
def victim(release: str) -> dict[str, Any]:
    ctx = RequestContext.get()
    ctx.state.set("secret", b"s" * BIG)
    value = secret_value(7)
    deadline = time.monotonic() + 120
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    secret = ctx.state.get("secret")
    return {"child": hashlib.sha256(value).hexdigest(), "secret": secret == b"s" * BIG}


@function()
def helper(x: int) -> int:
    return x + 1


def _attempt(out: dict[str, str], name: str, action: Any) -> None:
    try:
        action()
        out[name] = "allowed"
    except AccessDenied as exc:
        out[name] = f"AccessDenied: {exc}"
    except grpc.RpcError as exc:
        out[name] = f"{exc.code().name}: {exc.details()}"
    except Exception as exc:  # noqa: BLE001 - the test reads what each attempt met
        out[name] = f"{type(exc).__name__}: {exc}"


@application()
@function()
def attacker(target: dict[str, str]) -> dict[str, Any]:
    ctx = sdk_runtime.current_context()
    assert ctx is not None
    own = ctx.runtime
    assert isinstance(own, ExecutorRuntime)
    # The SDK's own runtime, pointed at the victim's run and root call.
    evil = ExecutorRuntime(own.stub, own.blobs, target["run_id"], target["call_id"], own.metadata)
    out: dict[str, Any] = {}

    def await_theirs() -> None:
        fut = helper.future(0)
        fut._id = target["child_id"]  # noqa: SLF001 - posing as the victim's future
        evil.wait([fut], None, RETURN_WHEN.ALL_COMPLETED)

    def await_theirs_from_here() -> None:
        # Its own run and call, but a future of another run: not in this run at all.
        fut = helper.future(0)
        fut._id = target["child_id"]  # noqa: SLF001
        own.wait([fut], None, RETURN_WHEN.ALL_COMPLETED)

    def launder_through_submit() -> None:
        # A future of its own run whose argument is the victim's blob, by digest: its executor
        # would then be handed the value as an argument.
        spec = pb.FutureSpec(id=ctx.new_child_id("call", helper.name), kind=pb.NODE_KIND_CALL,
                             function=helper.name, arguments=pb.Arguments(args=[pb.Arg(
                                 value=pb.Payload(blob=target["blob"], size=BIG))]))
        own.stub.Submit(pb.SubmitRequest(run_id=own.run_id, parent_call_id=own.call_id, futures=[spec]),
                        metadata=own.metadata)

    def launder_through_state() -> None:
        own.stub.SetState(pb.SetStateRequest(run_id=own.run_id, call_id=own.call_id, key="stolen",
                                             value=pb.Payload(blob=target["blob"], size=BIG)),
                          metadata=own.metadata)

    _attempt(out, "await", await_theirs)
    _attempt(out, "await_from_own_run", await_theirs_from_here)
    _attempt(out, "submit", lambda: evil.start([helper.future(1)]))
    _attempt(out, "get_state", lambda: evil.get_state("secret"))
    _attempt(out, "set_state", lambda: evil.set_state("secret", b"overwritten"))
    _attempt(out, "progress", lambda: evil.progress(1, 1, "owned", None))
    _attempt(out, "headers", evil.headers)
    _attempt(out, "blob", lambda: own.blobs.get_blob(target["blob"]))
    _attempt(out, "state_blob", lambda: own.blobs.get_blob(target["state_blob"]))
    _attempt(out, "launder_submit", launder_through_submit)
    _attempt(out, "launder_state", launder_through_state)
    # What is its own still works: a child, its state, a large value of its own.
    RequestContext.get().state.set("mine", b"m" * BIG)
    out["own_child"] = helper(41)
    out["own_state"] = RequestContext.get().state.get("mine") == b"m" * BIG
    out["own_blob"] = len(secret_value(3))
    return out
