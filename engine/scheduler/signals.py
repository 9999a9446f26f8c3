"""Signals: values sent to a run from outside (`engine.signal` in the SDK).

Sending (`send_signal`) is what the API's `POST /v1/runs/{id}/signals/{name}` and `engine signal`
do, on any process and connection: the signal is committed to the `signals` table before the
sender is answered, whether or not a future of its name exists yet, and whichever process drives
the run takes it from there (`Scheduler._deliver_signals`: at once when the sender is the
driver's own server, else at its next lease renewal tick, or when it resumes the run).

Invariants, and where they are enforced:

- **A name takes one signal, unless declared repeatable.** `Store.add_signal` inserts seq 0 or
  nothing, in one statement: of two racing senders exactly one is accepted, the other refused
  (HTTP 409). A name is repeatable once a future of the run declared it so
  (`engine.signal(name, repeatable=True)`, stored in its spec); before that, a second signal is
  refused too.
- **A repeatable signal is taken once.** The future that takes it records that
  (`Store.take_signal`) in the transaction that commits its value, under the run's fence: after
  a crash either both are stored or neither, and a resumed future takes the same signal again.
- **A timeout counts from the future's creation** (`calls.created_at`), so that a resume does
  not extend it; a signal found in the store when the deadline is checked still wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from engine import wire
from engine.errors import SDKUsageError
from engine.sdk.signal import valid_signal_name
from engine.statuses import RUN_FINAL, CallStatus, RunStatus
from engine.store import CallRow, RunRow, Store
from engine.wire.v1 import engine_pb2 as pb


class SignalRefused(SDKUsageError):
    """The run cannot take this signal: it has finished, or the name's one signal was sent."""


@dataclass(frozen=True)
class Sent:
    run_id: str
    name: str
    seq: int


def send_signal(store: Store, run_id: str, name: str, value: Any) -> Sent:
    """Store signal `name` with `value` (JSON-serialisable) for run `run_id`, committed.

    Raises `RunNotFound`, `SDKUsageError` for a bad name or a value that is not JSON, and
    `SignalRefused` when the run has finished or already has the one signal of a name that is
    not repeatable."""
    if not valid_signal_name(name):
        raise SDKUsageError(f"signal name {name!r}: use 1-128 letters, digits, '_', '.' or '-'")
    try:
        payload = json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise SDKUsageError(f"the signal's data is not JSON: {exc}") from None
    row = store.get_run(run_id)
    if row.status in RUN_FINAL:
        raise SignalRefused(f"run {run_id} is already {row.status}: it waits for no signal")
    repeatable = any(pb.FutureSpec.FromString(spec).signal.repeatable
                     for spec in store.signal_specs(run_id, name))
    seq = store.add_signal(run_id, name, payload, repeatable=repeatable)
    if seq is None:
        raise SignalRefused(
            f"run {run_id} already has signal {name!r}: a name takes one signal, unless its futures "
            "are declared engine.signal(name, repeatable=True)")
    return Sent(run_id, name, seq)


def open_waits(calls: list[CallRow]) -> list[dict[str, Any]]:
    """The run's signal futures still waiting (stored as `pending`), oldest first: name, call
    id, since when, and the deadline of a timeout."""
    waits = []
    for c in calls:
        if c.kind != "signal" or c.status != CallStatus.PENDING:
            continue
        options = pb.FutureSpec.FromString(c.spec).signal
        waits.append({"name": c.function, "call_id": c.call_id, "since": c.created_at,
                      "deadline": c.created_at + options.timeout if options.HasField("timeout") else None,
                      "repeatable": options.repeatable})
    return waits


def waiting(row: RunRow, calls: list[CallRow]) -> bool:
    """A derived state for views: the run is `running` in the store (its driver holds it), has
    a signal future waiting, and every other unfinished call of it waits for one too (takes its
    value, or the value of a call that does): nothing of it executes or is about to. The
    store's status stays `running`: leases and take-over are about who drives the run, which a
    waiting run still needs."""
    if row.status != RunStatus.RUNNING:
        return False
    blocked: set[str] = set()
    for c in calls:  # creation order: a call's dependencies come before it
        if c.status != CallStatus.PENDING:
            continue
        if c.kind == "signal" or any(ref in blocked for ref in wire.refs(pb.FutureSpec.FromString(c.spec).arguments)):
            blocked.add(c.call_id)
    if not any(c.kind == "signal" and c.call_id in blocked for c in calls):
        return False
    return all(c.call_id in blocked for c in calls
               if c.status in (CallStatus.PENDING, CallStatus.QUEUED, CallStatus.RUNNING))


def signals_json(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Signals sent to the run: name, seq, when, and the future that took a repeatable one."""
    return [{"name": s.name, "seq": s.seq, "sent_at": s.sent_at, "taken_by": s.call_id}
            for s in store.signals(run_id)]


__all__ = ["Sent", "SignalRefused", "open_waits", "send_signal", "signals_json", "waiting"]
