"""An executor keeps the memory a call freed for its next call, and gives it back once idle
(engine/executor/memory.py), on real executors (a forked process, a container): the second call
of 96 MiB finds it held and grows nothing; after `ENGINE_EXECUTOR_IDLE_TRIM` seconds without a
call it is gone; the function's code and what it starts never see the engine's allocator
settings."""

from __future__ import annotations

import asyncio

import pytest
from test_value_exchange import _drive

MB = 96
BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("idle_trim", ["default", "1"])
def test_freed_memory_serves_the_next_call_and_goes_back_when_idle(
        apps, state_dir, backend, idle_trim, monkeypatch, request) -> None:
    if backend == "docker":
        request.getfixturevalue("docker_client")
    if idle_trim != "default":
        monkeypatch.setenv("ENGINE_EXECUTOR_IDLE_TRIM", idle_trim)
    app = apps("app_memory")
    # Idle for 3 s before the third call: past a 1 s trim, well inside the default 10 s.
    run, seen, _, _ = asyncio.run(_drive(backend, state_dir, app.memory_between_calls, mb=MB, idle_s=3.0))
    assert run.status == "succeeded", run.status
    first, second, third = seen

    assert first["pid"] == second["pid"] == third["pid"], "one executor was to take all three calls"
    for seen in (first, second, third):
        assert seen["tunables"] is None and seen["child_tunables"] == "None", seen
    assert first["peak"] - first["at_start"] >= 0.9 * MB, first
    # What the first call freed is still the process's, and the second call's block fits in it.
    assert second["at_start"] - first["at_start"] >= 0.9 * MB, (first, second)
    assert second["peak"] - second["at_start"] <= 0.1 * MB, (first, second)
    held = third["at_start"] - first["at_start"]
    if idle_trim == "default":
        assert held >= 0.9 * MB, (first, third)
    else:
        assert held <= 0.1 * MB, (first, third)
