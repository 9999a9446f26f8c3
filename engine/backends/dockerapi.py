"""An executor container, defined once; and a small client of the local Docker engine's API.

`executor_container` is the body of Docker's `POST /containers/create` for an executor: the
docker backend sends it through the Docker SDK (`DockerBackend`), and `engine run`'s early start
(`engine.backends.early`) sends the same body itself, so both make the same container.

`LocalDocker` speaks HTTP over the local engine's unix socket with the standard library. It is
what the early start uses instead of the Docker SDK: importing the SDK (requests, urllib3) and
its version negotiation took about 0.3 s on a thread that competes for the GIL with the CLI's
own imports, while the first container's start waited for it. It does only what the early start
needs (inspect an image, create, start and inspect a container, remove one, and send a removal
without waiting for it); everything else goes through the SDK. It serves the default socket or a
`unix://` `DOCKER_HOST` only; `LocalDocker.here()` is None for any other engine.

Labels and owners are here too (`owner_labels`): the sweeps of `engine.backends.docker` read
them to tell whose a container is.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import socket
import urllib.parse
from typing import Any

from engine.images.common import EXECUTOR_UID
from engine.procstat import start_ticks

LABEL_MANAGED = "engine.managed"
LABEL_INSTANCE = "engine.instance"
LABEL_OWNER_PID = "engine.owner_pid"
LABEL_OWNER_START = "engine.owner_start"
LABEL_OWNER_HOST = "engine.owner_host"
LABEL_RUN = "engine.run"
LABEL_FUNCTION = "engine.function"

DEFAULT_SOCKET = "/var/run/docker.sock"

#: How long an executor may take from `docker start` to accepting TCP connections.
START_TIMEOUT_S = 30.0


def owner_labels(instance_id: str, run_id: str, function: str) -> dict[str, str]:
    """The labels of an executor container of the engine instance `instance_id` in this process."""
    pid = os.getpid()
    return {
        LABEL_MANAGED: "1",
        LABEL_INSTANCE: instance_id,
        LABEL_OWNER_PID: str(pid),
        LABEL_OWNER_START: start_ticks(pid),
        LABEL_OWNER_HOST: socket.gethostname(),
        LABEL_RUN: run_id,
        LABEL_FUNCTION: function,
    }


def container_name(function: str) -> str:
    """`engine-FUNCTION-<8 hex>`: readable in `docker ps`, unique."""
    cleaned = re.sub(r"[^a-zA-Z0-9_.-]+", "-", function).strip("-._")[:40] or "fn"
    return f"engine-{cleaned}-{secrets.token_hex(4)}"


def executor_container(
    image: str,
    *,
    labels: dict[str, str],
    environment: dict[str, str],
    cpu: float,
    memory_gb: float,
    ephemeral_disk_gb: float,
    read_only: bool,
    entrypoint: list[str] | None = None,
    binds: dict[str, dict[str, str]] | None = None,
    gpus: int = 0,
    network_mode: str = "bridge",
) -> dict[str, Any]:
    """The `POST /containers/create` body of an executor (why each setting:
    `engine.backends.docker`'s docstring). `binds`: host path → {"bind": path, "mode": ro|rw};
    `network_mode`: "bridge", or "container:ID" to join that container's network namespace."""
    memory = max(int(memory_gb * 1024**3), 8 * 1024**2)
    disk_mb = max(int(ephemeral_disk_gb * 1024), 1)
    host_config: dict[str, Any] = {
        "NanoCpus": int(cpu * 1e9),
        "Memory": memory,
        "MemorySwap": memory,
        "ReadonlyRootfs": read_only,
        "Tmpfs": {
            "/tmp": f"rw,nosuid,nodev,size={disk_mb}m",
            "/home/engine": f"rw,exec,nosuid,nodev,size={disk_mb}m,uid={EXECUTOR_UID},gid={EXECUTOR_UID}",
        },
        "NetworkMode": network_mode,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Init": True,  # a real PID 1: reaps the user's subprocesses, forwards signals
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "1"}},
    }
    if binds:
        host_config["Binds"] = [f"{host}:{b['bind']}:{b['mode']}" for host, b in binds.items()]
    if gpus:
        host_config["DeviceRequests"] = [{"Driver": "", "Count": gpus, "DeviceIDs": [],
                                          "Capabilities": [["gpu"]], "Options": {}}]
    body: dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={v}" for k, v in environment.items()],
        "User": str(EXECUTOR_UID),
        "Labels": labels,
        "HostConfig": host_config,
    }
    if entrypoint:
        body["Entrypoint"] = list(entrypoint)
    return body


def bridge_ip(attrs: dict) -> str:
    """A container's address on the default bridge (from its inspection), or empty."""
    settings = attrs.get("NetworkSettings") or {}
    bridge = (settings.get("Networks") or {}).get("bridge") or {}
    return bridge.get("IPAddress") or settings.get("IPAddress") or ""


class DockerAPIError(Exception):
    """Docker answered with an error status (`status`), or could not be reached (status 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Docker: {message} ({status})" if status else f"Docker: {message}")
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class LocalDocker:
    """The local Docker engine's API over its unix socket: one connection per request (the
    early start sends a handful). Blocking: call it from a thread. Raises `DockerAPIError`."""

    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._prefix: str | None = None

    @classmethod
    def here(cls) -> LocalDocker | None:
        """The client of this machine's engine, or None when `DOCKER_HOST` names another kind
        of engine (tcp, ssh: the Docker SDK's business)."""
        host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        if not host.startswith("unix://"):
            return None
        return cls(host[len("unix://"):])

    def _send(self, method: str, path: str, body: Any = None) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError as exc:
            raise DockerAPIError(0, f"no answer at {self.path}: {exc}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return response.status, payload, response

    def _versioned(self, path: str) -> str:
        if self._prefix is None:
            # The engine's own API version, as the SDK negotiates it: an engine refuses versions
            # newer than its own, and recent ones refuse old ones too.
            status, _, response = self._send("GET", "/_ping")
            version = response.getheader("API-Version") if status == 200 else None
            if not version:
                raise DockerAPIError(status, "the engine did not answer its ping")
            self._prefix = f"/v{version}"
        return self._prefix + path

    def request(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        """Send a request; its decoded JSON answer (None when empty). Raises `DockerAPIError`
        for a status not in `ok`."""
        status, payload, _ = self._send(method, self._versioned(path), body)
        if status not in ok:
            message = payload.get("message") if isinstance(payload, dict) else payload
            raise DockerAPIError(status, str(message or "").strip() or f"{method} {path} failed")
        return payload

    def inspect_image(self, image: str) -> dict | None:
        """An image's inspection, or None when the engine has no such image."""
        try:
            return self.request("GET", f"/images/{urllib.parse.quote(image, safe='')}/json")
        except DockerAPIError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, body: dict[str, Any], name: str) -> str:
        """Create a container from `body` (`executor_container`); its id."""
        answer = self.request("POST", f"/containers/create?name={urllib.parse.quote(name)}", body)
        return str(answer["Id"])

    def start(self, container_id: str) -> None:
        self.request("POST", f"/containers/{container_id}/start", ok=(204, 304))

    def inspect(self, container_id: str) -> dict:
        return self.request("GET", f"/containers/{container_id}/json")  # type: ignore[no-any-return]

    def remove(self, container_id: str) -> None:
        """Kill and remove a container; one already gone (or going) is no error."""
        self.request("DELETE", f"/containers/{container_id}?force=1", ok=(204, 404, 409))

    def send_removal(self, container_id: str) -> socket.socket | None:
        """Ask for a container's removal (kill and remove) without waiting for it: the request
        is written and the connection returned (None when it could not be). Docker carries a
        removal out whether or not its client waits for the answer (checked by
        `tests/integration/test_docker_exit.py`), so a process that is about to end need not
        wait 0.15–0.4 s for each of its containers to be destroyed."""
        try:
            path = self._versioned(f"/containers/{container_id}?force=1")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            sock.sendall(f"DELETE {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n".encode())
        except (OSError, DockerAPIError):
            return None
        return sock


__all__ = ["DockerAPIError", "LocalDocker", "bridge_ip", "executor_container", "owner_labels"]
