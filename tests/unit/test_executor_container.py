"""`engine.backends.dockerapi.executor_container` is the one definition of an executor container:
the docker backend sends it through the Docker SDK and `engine run`'s early start sends it over
its own small client. Here it is compared with what the Docker SDK itself makes of the same
settings (`create_container_config` and `create_host_config`, the way the backend called them
before), so that neither path gives containers different limits, privileges or mounts. No Docker
engine is needed: the SDK only builds the request bodies.
"""

from __future__ import annotations

import docker
import docker.types
import pytest

from engine.backends.dockerapi import LocalDocker, container_name, executor_container, owner_labels
from engine.images import EXECUTOR_UID


def sdk_body(*, binds: dict | None, gpus: int, entrypoint: list[str] | None) -> dict:
    api = docker.APIClient(base_url="unix:///nonexistent.sock", version="1.41")
    memory = 2 * 1024**3
    host_config = api.create_host_config(
        binds=binds or None, nano_cpus=int(0.5 * 1e9), mem_limit=memory, memswap_limit=memory,
        read_only=True,
        tmpfs={"/tmp": "rw,nosuid,nodev,size=3072m",
               "/home/engine": f"rw,exec,nosuid,nodev,size=3072m,uid={EXECUTOR_UID},gid={EXECUTOR_UID}"},
        network_mode="bridge", cap_drop=["ALL"], security_opt=["no-new-privileges"], init=True,
        log_config=docker.types.LogConfig(type="json-file", config={"max-size": "10m", "max-file": "1"}),
        device_requests=[docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])] if gpus else None,
    )
    return dict(api.create_container_config(
        "engine-runtime:x", None, entrypoint=entrypoint, environment={"A": "1", "B": "two words"},
        user=str(EXECUTOR_UID), labels={"engine.managed": "1"}, host_config=host_config, detach=True))


def significant(body: dict) -> dict:
    """What the engine decides: the SDK also sends its defaults (no tty, no stdin, ...), which
    are Docker's own when absent."""
    keep = ("Image", "Env", "User", "Labels", "HostConfig", "Entrypoint")
    return {k: v for k, v in body.items() if k in keep and v is not None}


@pytest.mark.parametrize("binds, gpus, entrypoint", [
    (None, 0, None),
    ({"/x/in": {"bind": "/exchange/in", "mode": "ro"}, "/x/out": {"bind": "/exchange/out", "mode": "rw"}},
     2, ["python3", "-c", "pass"]),
])
def test_same_container_as_the_docker_sdk_makes(binds: dict | None, gpus: int, entrypoint: list[str] | None) -> None:
    ours = executor_container("engine-runtime:x", labels={"engine.managed": "1"},
                              environment={"A": "1", "B": "two words"}, cpu=0.5, memory_gb=2,
                              ephemeral_disk_gb=3, read_only=True, entrypoint=entrypoint, binds=binds, gpus=gpus)
    sdk = significant(sdk_body(binds=binds, gpus=gpus, entrypoint=entrypoint))
    assert significant(ours) == sdk


def test_owner_labels_and_names() -> None:
    labels = owner_labels("inst", "run-1", "my fn/2")
    assert labels["engine.managed"] == "1" and labels["engine.instance"] == "inst"
    assert labels["engine.run"] == "run-1" and labels["engine.function"] == "my fn/2"
    assert labels["engine.owner_pid"].isdigit() and labels["engine.owner_start"].isdigit()
    name = container_name("my fn/2")
    assert name.startswith("engine-my-fn-2-") and name != container_name("my fn/2")


def test_only_a_local_engine_is_spoken_to(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.0.0.1:2376")
    assert LocalDocker.here() is None
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/user/1000/docker.sock")
    assert LocalDocker.here().path == "/run/user/1000/docker.sock"  # type: ignore[union-attr]
    monkeypatch.delenv("DOCKER_HOST")
    assert LocalDocker.here().path == "/var/run/docker.sock"  # type: ignore[union-attr]
