"""`EarlyStart.begin` returns once the first executor's start is requested (engine.backends.early):
the executor is already being started, with a real process, when `engine run` goes on to import
the rest of itself; `discard` leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.backends.early import EarlyStart


def test_first_executor_is_requested_before_begin_returns(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_WARM_EXECUTORS", raising=False)
    early = EarlyStart.begin("process", lambda: tmp_path)
    assert early is not None
    try:
        # The process backend writes its executor's log file as it spawns it.
        assert list((tmp_path / "executors").glob("*.log")), "begin returned before the start request"
        handle = early.handles[0].result(timeout=60)
        assert handle is not None
    finally:
        early.discard()
    assert handle.ref.poll() is not None  # the executor process (a Popen) has exited


def test_no_early_start_when_the_warm_pool_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_WARM_EXECUTORS", "0")
    assert EarlyStart.begin("process", lambda: tmp_path) is None
    assert not (tmp_path / "executors").exists()
