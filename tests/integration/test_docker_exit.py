"""How `engine run` ends on docker without waiting for its containers' removal.

`DockerBackend.close` with `close_without_waiting` (set by the CLI, whose process ends right
after) sends each container's removal and does not wait for the answer. That holds only because
the Docker engine carries a removal out even when its client has gone: checked here against the
real engine, with the connection closed as soon as the request is written. End to end, a real
`engine run` leaves no container (`test_warm_pool.py`,
`test_docker_engine_run_starts_blank_containers_early_and_leaves_none`).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from engine.backends.base import blank_spec
from engine.backends.docker import DockerBackend
from engine.backends.dockerapi import LocalDocker
from engine.images import runtime_image_tag

pytestmark = pytest.mark.docker

SLEEPER = ["python3", "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',50051)); "
           "s.listen(); time.sleep(600)"]


def labelled(client: Any, label: str) -> list[dict[str, Any]]:
    return client.api.containers(all=True, filters={"label": label})  # type: ignore[no-any-return]


def test_docker_removes_a_container_whose_removal_nobody_waits_for(docker_client: Any,
                                                                   wait_until: Any) -> None:
    instance = f"test-exit-{uuid.uuid4().hex[:8]}"
    backend = DockerBackend(instance_id=instance, command=SLEEPER, image_for=lambda _: runtime_image_tag())
    try:
        async def start_two() -> list[Any]:
            return await asyncio.gather(*(backend.start_executor(blank_spec({})) for _ in range(2)))

        handles = asyncio.run(start_two())
        assert len(labelled(docker_client, f"engine.instance={instance}")) == 2
        backend.close_without_waiting = True
        asyncio.run(backend.close())
        for sock in backend._removals:  # noqa: SLF001 - gone at once, as when the process ends
            sock.close()
        assert len(backend._removals) == len(handles)  # noqa: SLF001 - both were sent, none waited for
        wait_until(lambda: not labelled(docker_client, f"engine.instance={instance}"), timeout=10,
                   what="Docker to remove the containers after their client went away")
    finally:
        for c in labelled(docker_client, f"engine.instance={instance}"):
            LocalDocker.here().remove(c["Id"])  # type: ignore[union-attr]
