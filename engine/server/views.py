"""What the API shows of runs and calls: plain JSON built from store rows.

Everything here reads through the server's *read* connection to the store, which sees only
committed transactions: what the API reports has been checkpointed, and survives a crash.

The DAG: every call is a node; edges are

- `parent` — from the call that created a future to that future's call (map and reduce items
  hang under their map/reduce node);
- `dependency` — from a call whose value another call takes as an argument, to that call;
- `tail` — from a call that returned a future (a tail call) to that future's call, whose value
  becomes its own.

Each node carries what the dashboard's timeline draws: `created` (when the call was made; it
waits for its dependencies and an executor slot until `start`), `start`/`end` of its latest
attempt, and `failed_attempts` (every attempt that failed before, with its outcome).
"""

from __future__ import annotations

import inspect
import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, get_type_hints

from engine import wire
from engine.sdk.http import is_raw_body_hint
from engine.store import CallRow, FailedAttempt, RunRow, Store
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.sdk.function import Function
    from engine.server.deployments import Deployment

RUN_FINAL = frozenset({"succeeded", "failed", "cancelled"})
CALL_STATUSES = ("pending", "queued", "running", "tail", "succeeded", "failed", "cancelled")


def _duration(start: float | None, end: float | None, final: bool) -> float | None:
    if start is None:
        return None
    if end is None:
        if final:
            return None
        end = time.time()
    return round(end - start, 6)


def run_summary(row: RunRow, version: int | None) -> dict[str, Any]:
    final = row.status in RUN_FINAL
    queued_until = row.started_at if row.started_at is not None else (None if final else time.time())
    return {
        "run_id": row.run_id,
        "application": row.application,
        "version": version,
        "status": row.status,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "queued_seconds": round(queued_until - row.created_at, 6) if queued_until is not None else None,
        "duration": _duration(row.started_at, row.ended_at, final),
        "resumes": row.resumes,
        # The process driving it (a server's owner id, `GET /healthz` names each server's), while
        # it runs; null when nobody holds its lease.
        "owner": row.owner if row.status in ("queued", "running") else None,
        "priority": row.priority or 1,
        "rerun_of": row.rerun_of,
        "rerun_from": row.rerun_from,
    }


def failure_json(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    failure = pb.Failure.FromString(data)
    return {
        "kind": wire.failure_kind_name(failure.kind),
        "type": failure.type_name or None,
        "message": wire.describe(failure),
        "function": failure.function or None,
        "call_id": failure.call_id or None,
        "traceback": failure.traceback or None,
    }


def call_counts(calls: list[CallRow], run_final: bool, queued: frozenset[str] = frozenset()) -> dict[str, int]:
    counts = Counter(node(c, run_final, queued)["status"] for c in calls)
    out = {status: counts.get(status, 0) for status in CALL_STATUSES}
    out["total"] = len(calls)
    out["executions"] = sum(c.executions for c in calls)
    out["reused"] = sum(1 for c in calls if c.reused and not c.executions)
    return out


def node(c: CallRow, run_final: bool = False, queued: frozenset[str] = frozenset(),
         failed: list[FailedAttempt] | None = None) -> dict[str, Any]:
    """One call as the API shows it. `queued`: ids of calls the scheduler has queued for an
    executor — a state it keeps in memory only (the store says `pending`, which resume treats
    the same way), overlaid here so that the reader sees calls waiting for a slot as such.
    `failed`: its failed attempts (`Store.failed_attempts`), oldest first."""
    status = c.status
    if status == "pending" and c.call_id in queued:
        status = "queued"
    elif status == "tail" and c.error_kind and run_final:
        # It handed off by tail call and its tail failed: the store keeps `tail` (so that a
        # resume relinks it instead of running it again); for the reader it failed.
        status = "cancelled" if c.error_kind == "cancelled" else "failed"
    final = status in RUN_FINAL
    return {
        "id": c.call_id,
        "function": c.function,
        "kind": c.kind,
        "status": status,
        "attempts": c.attempts,
        "executions": c.executions,
        "reused": bool(c.reused) and not c.executions,
        "created": c.created_at,
        "start": c.started_at,
        "end": c.ended_at if c.status != "running" else None,
        "duration": _duration(c.started_at, c.ended_at if c.status != "running" else None, final),
        "parent": c.parent_id,
        "error": c.error_message if status in ("failed", "cancelled", "queued") else None,
        "error_kind": c.error_kind if status in ("failed", "cancelled", "queued") else None,
        # RequestContext: the call's last progress report, and its counters and timers.
        "progress": json.loads(c.progress) if c.progress else None,
        "metrics": json.loads(c.metrics) if c.metrics else None,
        "failed_attempts": [{"attempt": a.attempt, "start": a.started_at, "end": a.ended_at,
                             "error_kind": a.error_kind, "error": a.error_message} for a in failed or ()],
    }


class DagBuilder:
    """Builds `{"nodes", "edges"}`; remembers each call's dependencies (parsing its stored
    `FutureSpec` is the costly part, and a spec only changes with its arguments' digest)."""

    MAX_CACHED = 200_000

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], list[str]] = {}

    def refs(self, c: CallRow) -> list[str]:
        key = (c.call_id, c.args_digest)
        found = self._refs.get(key)
        if found is None:
            if len(self._refs) > self.MAX_CACHED:
                self._refs.clear()
            found = self._refs[key] = wire.refs(pb.FutureSpec.FromString(c.spec).arguments)
        return found

    def build(self, calls: list[CallRow], run_final: bool, queued: frozenset[str] = frozenset(),
              failed: Iterable[FailedAttempt] = ()) -> dict[str, Any]:
        known = {c.call_id for c in calls}
        by_call: dict[str, list[FailedAttempt]] = {}
        for a in failed:
            by_call.setdefault(a.call_id, []).append(a)
        nodes = [node(c, run_final, queued, by_call.get(c.call_id)) for c in calls]
        edges: list[dict[str, str]] = []
        for c in calls:
            if c.parent_id is not None and c.parent_id in known:
                edges.append({"from": c.parent_id, "to": c.call_id, "kind": "parent"})
            for dep in dict.fromkeys(self.refs(c)):
                if dep in known:
                    edges.append({"from": dep, "to": c.call_id, "kind": "dependency"})
            if c.tail_id is not None and c.tail_id in known:
                edges.append({"from": c.call_id, "to": c.tail_id, "kind": "tail"})
        return {"nodes": nodes, "edges": edges}


def logs_json(store: Store, run_id: str, call_id: str | None, function: str | None) -> list[dict[str, Any]]:
    return [{"call_id": cid, "function": fn, "attempt": attempt, "text": text}
            for cid, fn, attempt, text in store.logs(run_id, function, call_id)]


# --- applications ---------------------------------------------------------------------------------


def input_schema(fn: Function[..., Any] | None) -> dict[str, Any] | None:
    """The JSON schema of an application's input, as an object of its parameters (pydantic's
    schema of each type hint; `{}` for a parameter without one). `x-body` says how a request
    sends it: `value` — the one parameter's value is the whole body; `object` — an object of
    them. A `File`/`HttpBody` parameter has `x-raw-body` (it comes as a raw or multipart body,
    not JSON). None when the application's code does not load."""
    from pydantic import TypeAdapter

    if fn is None:
        return None
    try:
        hints = get_type_hints(fn.fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: every parameter takes any JSON
        hints = {}
    params = list(inspect.signature(fn.fn).parameters.values())
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for p in params:
        hint = hints.get(p.name)
        if hint is None:
            schema: dict[str, Any] = {}
        elif is_raw_body_hint(hint):
            schema = {"type": "string", "format": "binary", "x-raw-body": True}
        else:
            try:
                schema = TypeAdapter(hint).json_schema()
            except Exception:  # noqa: BLE001 - a hint pydantic has no schema for: any JSON
                schema = {}
        defs.update(schema.pop("$defs", {}))
        if p.default is not inspect.Parameter.empty:
            try:
                schema["default"] = TypeAdapter(Any).dump_python(p.default, mode="json")
            except Exception:  # noqa: BLE001 - a default with no JSON form is not shown
                pass
        properties[p.name] = schema
    out: dict[str, Any] = {
        "type": "object", "properties": properties,
        "required": [p.name for p in params if p.default is inspect.Parameter.empty],
        "x-body": "value" if len(params) == 1 else "object",
    }
    if defs:
        out["$defs"] = defs
    return out


def application_details(dep: Deployment, versions: list[Deployment]) -> dict[str, Any]:
    """What the dashboard's application page shows beyond the summary: every deployed version
    and the input schema of this one."""
    return {"deployments": [d.summary() for d in reversed(versions)], "input_schema": input_schema(dep.function)}
