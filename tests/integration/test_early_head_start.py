"""`EarlyStart.begin` returns once the first executor's start is requested (engine.backends.early):
the executor is already being started, with a real process or container, when `engine run` goes
on to import the rest of itself; `discard` leaves nothing behind."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from serverlib import template_of

from engine.backends.early import EarlyStart


def test_first_executor_is_requested_before_begin_returns(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_WARM_EXECUTORS", raising=False)
    early = EarlyStart.begin("process", lambda: tmp_path)
    assert early is not None
    try:
        # The process backend's first start request is its executors' template, a process of its
        # own (engine.executor.forkserver), whose log file it opens as it spawns it.
        assert list((tmp_path / "executors").glob("template-*.stderr")), "begin returned before the start request"
        handle = early.handles[0].result(timeout=60)
        assert handle is not None
    finally:
        early.discard()
    assert handle.ref.poll() is not None  # the executor process has exited
    assert template_of(os.getpid()) is None  # and the template has ended


def test_no_early_start_when_the_warm_pool_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_WARM_EXECUTORS", "0")
    assert EarlyStart.begin("process", lambda: tmp_path) is None
    assert not (tmp_path / "executors").exists()


@pytest.mark.docker
def test_docker_early_start_without_the_sdk_starts_a_blank_container_and_discards_it(
        docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On docker the thread creates the container over the Docker socket: it is up (accepting
    on its address), labelled as this engine's, carries the instance id the backend made beside
    it has; nobody took it, so `discard` removes it."""
    monkeypatch.delenv("ENGINE_WARM_EXECUTORS", raising=False)
    early = EarlyStart.begin("docker", lambda: tmp_path)
    assert early is not None
    try:
        handle = early.handles[0].result(timeout=120)
        assert handle is not None and early.docker_image() is not None
        host, port = handle.address.rsplit(":", 1)
        socket.create_connection((host, int(port)), timeout=5).close()
        labels = docker_client.api.inspect_container(handle.id)["Config"]["Labels"]
        assert labels["engine.function"] == "(blank)" and labels["engine.owner_pid"] == str(os.getpid())
        backend = early.backend()
        assert backend is not None and labels["engine.instance"] == backend.instance_id  # type: ignore[attr-defined]
    finally:
        early.discard()
    assert not docker_client.api.containers(all=True, filters={"id": handle.id})


@pytest.mark.docker
def test_docker_early_start_gives_way_when_the_image_is_missing(
        docker_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.images.tag

    monkeypatch.delenv("ENGINE_WARM_EXECUTORS", raising=False)
    monkeypatch.setattr(engine.images.tag, "runtime_image_tag", lambda: "engine-runtime:py0.0-missing")
    early = EarlyStart.begin("docker", lambda: tmp_path)
    assert early is not None
    try:
        assert early.handles[0].result(timeout=60) is None
        assert early.docker_image() is None and early.backend() is None  # the usual path builds it
        assert not docker_client.api.containers(all=True, filters={"label": f"engine.instance={early.instance_id}"})
    finally:
        early.discard()
