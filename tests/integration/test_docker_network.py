"""The docker backend's shared network namespace (`ENGINE_DOCKER_NETWORK=shared`,
engine/backends/docker.py, "Network"): every executor the backend starts joins one holder
container's namespace and listens on a port of its own there, and nothing is left once the run
ends. Real `engine run` processes and containers. (test_orphans.py kills an engine in this mode.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS_DIR, poll, run_cli

from engine.backends.docker import HOLDER_FUNCTION, NETWORK_ENV

APP = APPS_DIR / "app_shared_network.py"


def containers_of(client: Any, engine_pid: int) -> list[dict[str, Any]]:
    return client.api.containers(all=True, filters={
        "label": ["engine.managed=1", f"engine.owner_pid={engine_pid}"]})


def listen_port(attrs: dict[str, Any]) -> int:
    """The port an executor container was told to listen on (its entrypoint's `--listen`)."""
    entrypoint = attrs["Config"]["Entrypoint"]
    return int(entrypoint[entrypoint.index("--listen") + 1].rsplit(":", 1)[1])


@pytest.mark.docker
def test_executors_share_one_namespace_each_on_its_own_port_and_none_is_left(
        docker_client: Any, tmp_path: Path) -> None:
    env = {**os.environ, "ENGINE_STATE_DIR": str(tmp_path / "state"), NETWORK_ENV: "shared"}
    env.pop("ENGINE_BACKEND", None)
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        engine = subprocess.Popen([sys.executable, "-m", "engine.cli", "run", f"{APP}:fan", "--backend",
                                   "docker", "--json", "--input", json.dumps({"n": 4, "seconds": 4})],
                                  stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=APPS_DIR)
    try:
        def slow_running() -> list[dict[str, Any]]:
            assert engine.poll() is None, (tmp_path / "err").read_text()
            found = [c for c in containers_of(docker_client, engine.pid)
                     if c["Labels"].get("engine.function") == "slow" and c["State"] == "running"]
            return found if len(found) == 4 else []

        slow = poll(slow_running, timeout=120, interval=0.2, what="four `slow` executors to run")
        holders = [c for c in containers_of(docker_client, engine.pid)
                   if c["Labels"].get("engine.function") == HOLDER_FUNCTION]
        assert len(holders) == 1, holders
        holder = docker_client.api.inspect_container(holders[0]["Id"])
        assert holder["HostConfig"]["NetworkMode"] == "bridge" and holder["State"]["Running"]
        executors = [docker_client.api.inspect_container(c["Id"]) for c in slow]
        assert {e["HostConfig"]["NetworkMode"] for e in executors} == {f"container:{holder['Id']}"}
        ports = {listen_port(e) for e in executors}
        assert len(ports) == 4, ports
        assert engine.wait(120) == 0, (tmp_path / "err").read_text()
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait(10)

    outcome = json.loads((tmp_path / "out").read_text().strip().splitlines()[-1])
    assert outcome["status"] == "succeeded", outcome
    seen = outcome["result"]
    assert sorted(s["i"] for s in seen) == [0, 1, 2, 3]
    # One namespace: one hostname (the holder's), and every call sees the others' ports.
    assert {s["hostname"] for s in seen} == {holder["Config"]["Hostname"]}
    assert all(ports <= set(s["ports"]) for s in seen), (ports, seen)
    # `engine run` sent every removal as it ended: the holder goes with its executors.
    poll(lambda: containers_of(docker_client, engine.pid) == [], timeout=60, interval=0.2,
         what="the run's containers, holder included, to be removed")


@pytest.mark.docker
def test_an_unknown_network_mode_is_one_clear_line(docker_client: Any, tmp_path: Path) -> None:
    code, out, err = run_cli("run", f"{APP}:fan", "--backend", "docker", "--input", json.dumps({"n": 1}),
                             cwd=APPS_DIR,
                             env={"ENGINE_STATE_DIR": str(tmp_path / "state"), NETWORK_ENV: "wide"})
    assert code == 2, (code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{NETWORK_ENV}='wide'" in err and "bridge or shared" in err, err


@pytest.mark.docker
def test_a_holder_is_replaced_when_stale_or_gone_and_closing_leaves_nothing(
        docker_client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend on its own, with real executors: starts join one holder on ports of their
    own; a holder left without executors for over half the orphan grace is not joined again
    (it may be ending: `engine.backends.holder`), nor one that is gone."""
    import asyncio
    import uuid

    from engine import images
    from engine.backends.base import ExecutorSpec
    from engine.backends.docker import DockerBackend

    monkeypatch.setenv("ENGINE_EXECUTOR_ORPHAN_TIMEOUT", "2")  # a holder is stale after 1 s
    runtime = images.build_runtime_image()
    instance = f"test-{uuid.uuid4().hex[:10]}"
    label = f"engine.instance={instance}"

    def holders() -> list[str]:
        return [c["Id"] for c in docker_client.api.containers(all=True, filters={"label": label})
                if c["Labels"]["engine.function"] == HOLDER_FUNCTION]

    def holder_of(handle: Any) -> str:
        return str(docker_client.api.inspect_container(handle.ref)["HostConfig"]["NetworkMode"]).removeprefix(
            "container:")

    async def scenario() -> None:
        backend = DockerBackend(instance_id=instance, image_for=lambda _: runtime, network="shared")
        spec = ExecutorSpec(function="tests.fn", run_id="run-1")
        try:
            first, second = await asyncio.gather(backend.start_executor(spec), backend.start_executor(spec))
            [holder] = holders()
            assert holder_of(first) == holder_of(second) == holder
            assert first.address.rsplit(":", 1)[0] == second.address.rsplit(":", 1)[0]
            assert first.address != second.address  # one address, a port each

            await backend.stop_executor(first)
            third = await backend.start_executor(spec)  # `second` still runs: the same holder
            assert holder_of(third) == holder and third.address == first.address  # its port again
            for handle in (second, third):
                await backend.stop_executor(handle)
            await asyncio.sleep(1.5)  # none for over half the grace
            fourth = await backend.start_executor(spec)
            [fresh] = holders()
            assert fresh != holder and holder_of(fourth) == fresh

            docker_client.api.remove_container(fresh, force=True)  # the holder gone under it
            fifth = await backend.start_executor(spec)
            [again] = holders()
            assert again not in (holder, fresh) and holder_of(fifth) == again
        finally:
            await backend.close()
        assert docker_client.api.containers(all=True, filters={"label": label}) == []

    try:
        asyncio.run(scenario())
    finally:
        for c in docker_client.api.containers(all=True, filters={"label": label}):
            docker_client.api.remove_container(c["Id"], force=True)
