"""Values too large to travel inline move as blobs (real executor processes, real gRPC, the real
store). On the process backend with SQLite they go through each executor's exchange directory
(test_value_exchange.py also covers docker, streaming, and a kill -9 before adoption)."""

from __future__ import annotations

from pathlib import Path

from engine import run_local_application, wire
from engine.wire import content

MB = 1024 * 1024


def blob_files(state_dir: Path, at_least: int) -> list[Path]:
    return [p for p in (state_dir / "blobs").rglob("*") if p.is_file() and p.stat().st_size >= at_least]


def test_large_results_become_arguments_of_another_call(apps, state_dir, show) -> None:
    app = apps("app_blobs")
    size = 3 * MB
    request = run_local_application(app.pass_on, size)
    assert request.status == "succeeded"
    expected = [app.fingerprint(app.blob(size, 1)), app.fingerprint(app.blob(size, 2))]
    assert [tuple(x) for x in request.output()] == expected
    # Both results are checkpointed as blobs, named by their digest.
    names = {p.name for p in blob_files(state_dir, size)}
    assert {content.address(wire.dumps(app.blob(size, seed))) for seed in (1, 2)} <= names


def test_a_value_larger_than_any_grpc_message_moves_intact(apps, state_dir) -> None:
    app = apps("app_blobs")
    size = 80 * MB
    request = run_local_application(app.pass_on, size)
    assert request.status == "succeeded"
    assert [tuple(x) for x in request.output()] == [
        app.fingerprint(app.blob(size, 1)), app.fingerprint(app.blob(size, 2))]


def test_awaited_submitted_and_returned_large_values(apps, state_dir, show) -> None:
    app = apps("app_blobs")
    size = 2 * MB
    request = run_local_application(app.round_trip, size)
    assert request.status == "succeeded"
    assert request.output() == app.blob(size, 3) + app.blob(size, 4)
    info = show(request.id)
    assert {c["function"]: c["executions"] for c in info["call_list"]} == {
        "round_trip": 1, "make": 1, "measure": 1}


def test_one_large_value_for_many_calls_is_stored_once(apps, state_dir) -> None:
    app = apps("app_blobs")
    size, n = 2 * MB, 8
    request = run_local_application(app.same_to_many, size, n)
    assert request.status == "succeeded"
    assert [[tuple(x) for x in seen] for seen in request.output()] == [[app.fingerprint(app.blob(size, 5))]] * n
    # The submitted list (one copy of the value: pickle shares it) and the item every call
    # received: content addressing stores each once, not once per call.
    assert len(blob_files(state_dir, size)) <= 2
