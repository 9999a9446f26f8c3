"""The swarm backend: each executor is a Docker Swarm service, placed by Swarm on a node.

The scheduler runs where `engine run` or `engine server` runs and talks to a Swarm manager's
Docker API (`DOCKER_HOST`, or the local socket on a manager). Everything else is the same as on
one machine: the same executor, the same gRPC protocol, code shipped in `Initialize`, results
checkpointed by the scheduler. docs/swarm.md is the full design; in short:

- **One service per executor**, one replica, `restart-condition none`, endpoint mode `dnsrr`.
  The scheduler decides which executor stops (idle, timed out, lost), so it must be able to
  remove exactly one: a service per function with N replicas would let Swarm pick. With no
  restarts Swarm never starts a second, unknown copy — not after a crash, and not after its node
  is lost; replacing an executor is the scheduler's decision (a retry). `dnsrr` spares each
  service a virtual IP on the overlay network.
- **Resources**: a function's `cpu` and `memory` are both the task's reservation (Swarm places
  it only on a node with that much unreserved) and its limit (cgroups on that node). Placement
  constraints per function come from engine.yaml (`functions.NAME.constraints`).
- **Images come from a registry** (`swarm.registry`, filled by `engine image build --push
  REGISTRY`): the runtime image, or a function image, as `REGISTRY/engine-runtime:py3.X-<hash>`.
  Its presence is checked once per image through the manager (`docker manifest`-style
  distribution inspect), so a missing push fails at once with the command that fixes it. Without
  a registry the plain tag is used and every node must already have the image.
- **Reaching executors — two ways, picked automatically**:
  - *attached*: this process has an address in the overlay network's subnet (it runs in a
    container on that network, or in the network namespace of one). The scheduler dials each
    task's overlay address on 50051, and executors call back to this process's overlay address.
  - *published*: otherwise. Each task publishes 50051 in `host` mode on a port Docker picks on
    its node; the scheduler dials `node address:port`. Executors call back to `swarm.advertise`,
    by default this machine's address on the route to the manager, where the callback server
    binds. Tasks then need no overlay network at all.
- **Losing a node**: its tasks' streams break (or, for a machine that vanished, go silent until
  gRPC's keepalive gives up); `exit_info` then reports the executor lost — from Swarm when it has
  marked the node down, else because the executor no longer accepts a connection — so the
  scheduler fails only those calls as `ExecutorLost` and retries them. Until Swarm notices
  (about three missed heartbeats, 15 s by default), new executors are kept off that node with a
  `node.id!=` constraint; a start that lands on a lost node anyway is placed again.
- **No shared filesystem**: nothing is mounted from the scheduler's machine. Code travels in
  `Initialize`, arguments and results inline in gRPC messages when small, through the
  scheduler's Blobs service when not (`engine.scheduler.blobs`).
- Ownership as on the docker backend: service labels `engine.managed`, `engine.instance`,
  `engine.owner_pid/_start/_host`, `engine.run`, `engine.function`; `close()` removes this
  instance's services, `cleanup_orphans()` those of a dead engine process on this host. Task
  containers carry no `engine.managed` label, so a docker backend sharing a node's engine never
  touches them.

Docker's SDK is blocking: every call runs on this backend's own thread pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
import docker.types

from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.backends.docker import _interface_ipv4, orphaned, remove_each
from engine.backends.dockerapi import (
    LABEL_FUNCTION,
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_OWNER_START,
    LABEL_RUN,
)
from engine.errors import DockerUnavailable, ImageMissing, InfrastructureError
from engine.executor.lifetime import EXECUTOR_ENV_DEFAULTS, blank_env, executor_env
from engine.images import EXECUTOR_PORT, EXECUTOR_UID, docker_client, registry_image, runtime_image_tag
from engine.procstat import start_ticks
from engine.timeouts import connects

if TYPE_CHECKING:
    from engine.app import AppSpec
    from engine.config import SwarmConfig

log = logging.getLogger(__name__)

DEFAULT_NETWORK = "engine-net"
ENV_REGISTRY = "ENGINE_SWARM_REGISTRY"
ENV_NETWORK = "ENGINE_SWARM_NETWORK"
ENV_ADVERTISE = "ENGINE_SWARM_ADVERTISE"
#: Set in every executor: the hostname of the node it runs on (a Swarm template).
ENV_NODE = "ENGINE_NODE"

#: From service creation to the executor accepting connections. Longer than the docker
#: backend's: a node's first task pulls the image, and sets up the overlay network there.
START_TIMEOUT_S = 120.0
#: Placements retried when a task lands on a node that is down (Swarm notices late).
_PLACEMENTS = 3
_POLL_S = 0.15
_NODES_TTL_S = 1.0
#: How long new executors avoid a node whose executor stopped answering before Swarm noticed
#: (Swarm marks a lost node down after about three missed heartbeats: 15 s by default).
SUSPECT_S = 60.0
#: Probes of an executor that lost its call stream, and of its node: live ones accept at once.
_PROBE_S = 0.5
#: Every Swarm node serves its gossip (container network discovery) on this TCP port.
_SWARM_PORT = 7946
_LOG_TAIL_LINES = 60
_THREADS = 16
#: Task states before `running`, and after it (docs.docker.com, "Swarm task states").
_STARTING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_ENDED = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}
#: Exit code of a process killed by SIGKILL. Swarm does not pass Docker's OOMKilled flag on;
#: with a memory limit, the kernel's OOM killer is what SIGKILLs an executor.
_SIGKILL_EXIT = 137

T = TypeVar("T")


@dataclass(frozen=True)
class TaskRef:
    """What an executor handle refers to: its service, its one task and the node it runs on."""

    service_id: str
    task_id: str
    node_id: str
    node: str


def _service_name(function: str) -> str:
    # Service names are DNS labels: letters, digits and '-', at most 63 characters.
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", function).strip("-")[:40] or "fn"
    return f"engine-{cleaned}-{secrets.token_hex(4)}"


def _has_registry(image: str) -> bool:
    first, sep, _ = image.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _local_ipv4_addresses() -> list[str]:
    found = []
    for _index, name in socket.if_nameindex():
        address = _interface_ipv4(name)
        if address:
            found.append(address)
    return found


def _route_source(destination: str) -> str:
    """This machine's address on the route to `destination` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((destination, 2377))
        return str(sock.getsockname()[0])


def _node_address(node: dict[str, Any]) -> str:
    host = str((node.get("Status") or {}).get("Addr") or "")
    if host in ("", "0.0.0.0"):  # a manager may report no address of its own
        host = str((node.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
    return host


def _accepts(address: str, timeout: float) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        return False
    return True


def _gb(nbytes: int) -> str:
    return f"{nbytes / 1024**3:g} GB"


def placement_problem(spec: ExecutorSpec, err: str,
                      ready_sizes: Callable[[], list[dict[str, Any]]]) -> str | None:
    """Why a task Swarm left pending with `err` can never be placed, or None when it may still be
    (`ready_sizes()`: the Resources of the ready nodes, asked only when needed)."""
    if "no suitable node" not in err:
        return None
    # Swarm names the first filter each node failed, resources before constraints: "no suitable
    # node (insufficient resources on 2 nodes; scheduling constraints not satisfied on 1 node)"
    # may mean that the one node the constraints allow is busy. Only when constraints alone rule
    # out every node can the task never be placed.
    if "constraint" in err and "insufficient resources" not in err:
        wanted = ", ".join(spec.constraints) or "none"
        return f"no node satisfies the placement constraints of {spec.function} ({wanted}): {err}"
    if "insufficient resources" in err:
        memory, cpus = int(spec.memory_gb * 1024**3), int(spec.cpu * 1e9)
        sizes = ready_sizes()
        if sizes and not any(s.get("NanoCPUs", 0) >= cpus and s.get("MemoryBytes", 0) >= memory for s in sizes):
            biggest = max(sizes, key=lambda s: (s.get("NanoCPUs", 0), s.get("MemoryBytes", 0)))
            return (f"{spec.function} needs {spec.cpu:g} CPU and {spec.memory_gb:g} GB, more than "
                    f"any node has (the largest: {biggest.get('NanoCPUs', 0) / 1e9:g} CPU, "
                    f"{_gb(biggest.get('MemoryBytes', 0))}): lower its cpu/memory")
    return None  # busy: it is placed once other tasks end


class SwarmBackend(Backend):
    """Runs executors as Swarm services through a manager's Docker API.

    `registry` is where nodes pull images from (None: they already have them); `image_for`
    picks the local tag for specs without `spec.image`; placement constraints come with each
    `ExecutorSpec` (engine.yaml's `functions.NAME.constraints`, per application, so two deployed
    applications may place functions of the same name differently); `network` is the attachable
    overlay network (created when
    absent); `advertise` is the callback address when this process is not on that network;
    `command` replaces the image's entrypoint (tests).

    The constructor talks to the manager and raises `DockerUnavailable` when no engine answers,
    `InfrastructureError` when it is not a Swarm manager or the network is unusable.
    """

    name = "swarm"
    # A blank service per warm executor would be placed before anyone knows where it is needed.
    warm_executors = 0

    def __init__(
        self,
        *,
        instance_id: str,
        registry: str | None,
        image_for: Callable[[ExecutorSpec], str] | None = None,
        network: str | None = None,
        advertise: str | None = None,
        command: list[str] | None = None,
        code_read_only: bool = True,
    ) -> None:
        self.instance_id = instance_id
        self.registry = registry
        self._image_for = image_for
        self._command = list(command) if command else None
        self._read_only = code_read_only
        self._client = docker_client()
        self._owner_pid = os.getpid()
        self._owner_start = start_ticks(self._owner_pid)
        self._owner_host = socket.gethostname()
        self._executor_env = executor_env()
        self._runtime_tag: str | None = None
        self._verified_images: set[str] = set()
        self._nodes: dict[str, dict[str, Any]] = {}
        self._nodes_at = 0.0
        # Nodes where an executor stopped answering while Swarm still reports the node ready:
        # node id -> until when new executors avoid it (see `_exit_info`).
        self._suspects: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="swarm")

        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        try:
            swarm = self._client.info().get("Swarm") or {}
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"the Docker engine at {where} does not answer: {exc}") from exc
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise InfrastructureError(
                f"the Docker engine at {where} is not a Swarm manager: the swarm backend creates "
                "services, which only a manager can. Run the engine on a manager, or point "
                "DOCKER_HOST at one (`docker swarm init` makes this engine one)."
            )
        self.network = network or DEFAULT_NETWORK
        self._network_id, subnet, encrypted = self._ensure_network(self.network)
        local = [a for a in _local_ipv4_addresses() if subnet and ipaddress.ip_address(a) in subnet]
        if local:
            # Attached: dial tasks on the overlay; they call back to our overlay address.
            self.attached = True
            self.callback_host = self.callback_bind_host = local[0]
            if not encrypted:
                log.warning("overlay network %s is not encrypted: calls, values and executor "
                            "credentials cross between hosts in the clear (docs/swarm.md)", self.network)
        else:
            self.attached = False
            log.warning("not attached to overlay network %s: calls, values and executor "
                        "credentials cross between hosts in the clear (docs/swarm.md)", self.network)
            manager = str(swarm.get("NodeAddr") or "")
            host = advertise or (_route_source(manager) if manager else "")
            if not host:
                raise InfrastructureError(
                    "cannot tell which address executors should call the engine back on: set "
                    f"swarm.advertise in engine.yaml (or {ENV_ADVERTISE})"
                )
            self.callback_host = host
            # Bind where executors reach us; an advertised address that is not ours (NAT) can
            # only be served from every interface.
            self.callback_bind_host = host if host in _local_ipv4_addresses() else "0.0.0.0"

    # --- setup ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _ensure_network(self, name: str) -> tuple[str, ipaddress.IPv4Network | None, bool]:
        """The attachable overlay network's id, IPv4 subnet and whether it is encrypted; created
        (encrypted: IPsec between hosts, docs/swarm.md) when absent."""
        api = self._client.api
        try:
            net = api.inspect_network(name)
        except docker.errors.NotFound:
            try:
                api.create_network(name, driver="overlay", attachable=True,
                                   options={"encrypted": "true"}, labels={LABEL_MANAGED: "1"})
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # another engine created it meanwhile
                    raise InfrastructureError(f"cannot create the overlay network {name}: {exc}") from exc
            net = api.inspect_network(name)
        if net.get("Driver") != "overlay" or not net.get("Attachable"):
            raise InfrastructureError(
                f"network {name} exists but is not an attachable overlay network (driver "
                f"{net.get('Driver')}): remove it, or name another one in swarm.network"
            )
        subnet = None
        for config in (net.get("IPAM") or {}).get("Config") or []:
            text = (config or {}).get("Subnet") or ""
            if text and ":" not in text:
                subnet = ipaddress.IPv4Network(text, strict=False)
                break
        encrypted = "encrypted" in (net.get("Options") or {})
        return str(net["Id"]), subnet, encrypted

    def _image(self, spec: ExecutorSpec) -> str:
        tag = spec.image or (self._image_for(spec) if self._image_for is not None else None)
        if not tag:
            if self._runtime_tag is None:
                self._runtime_tag = runtime_image_tag()
            tag = self._runtime_tag
        if self.registry and not _has_registry(tag):
            return registry_image(self.registry, tag)
        return tag

    def _verify_image(self, image: str) -> None:
        """Ask the manager whether the registry has `image` (once per image)."""
        if image in self._verified_images or not self.registry:
            return
        try:
            self._client.api.inspect_distribution(image)
        except docker.errors.APIError as exc:
            text = str(exc)
            if exc.status_code in (401, 404) or "manifest unknown" in text or "not found" in text:
                raise ImageMissing(
                    f"{image} is not in the registry {self.registry}: push it with "
                    f"`engine image build --push {self.registry}` (every node pulls from there)"
                ) from None
            raise InfrastructureError(
                f"the Swarm manager cannot look {image} up in {self.registry}: {exc}. A registry "
                "served over plain HTTP must be in every engine's insecure-registries."
            ) from exc
        self._verified_images.add(image)

    def _nodes_by_id(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        if refresh or time.monotonic() - self._nodes_at > _NODES_TTL_S:
            self._nodes = {n["ID"]: n for n in self._client.api.nodes()}
            self._nodes_at = time.monotonic()
        return self._nodes

    def _node(self, node_id: str, refresh: bool = False) -> dict[str, Any]:
        node = self._nodes_by_id(refresh).get(node_id)
        if node is None and not refresh:
            node = self._nodes_by_id(True).get(node_id)
        return node or {}

    def _suspected(self) -> set[str]:
        now = time.monotonic()
        return {node for node, until in list(self._suspects.items()) if until > now}

    def _placement(self, spec: ExecutorSpec) -> list[str]:
        """The function's constraints, and none of the nodes suspected lost."""
        avoid = [f"node.id!={node}" for node in sorted(self._suspected())]
        return list(spec.constraints) + avoid

    # --- start ---------------------------------------------------------------------------

    def _service_spec(self, spec: ExecutorSpec, image: str) -> dict[str, Any]:
        memory = max(int(spec.memory_gb * 1024**3), 8 * 1024**2)
        nano_cpus = int(spec.cpu * 1e9)
        disk = max(int(spec.ephemeral_disk_gb * 1024**3), 1024**2)
        env = [f"{k}={v}" for k, v in {**EXECUTOR_ENV_DEFAULTS, **spec.env, **self._executor_env, **blank_env(spec.function)}.items()]
        env.append(f"{ENV_NODE}={{{{.Node.Hostname}}}}")
        mounts = [
            # Swarm's tmpfs takes a size and a mode, no owner: sticky and world-writable, as /tmp.
            docker.types.Mount(target, None, type="tmpfs", tmpfs_size=disk, tmpfs_mode=0o1777)
            for target in ("/tmp", "/home/engine")
        ]
        container = docker.types.ContainerSpec(
            image,
            command=self._command,
            env=env,
            user=str(EXECUTOR_UID),
            mounts=mounts,
            read_only=self._read_only,
            init=True,  # a real PID 1: reaps the user's subprocesses, forwards signals
            cap_drop=["ALL"],
            stop_grace_period=1_000_000_000,  # executors exit at once on SIGTERM
        )
        template = docker.types.TaskTemplate(
            container_spec=container,
            resources=docker.types.Resources(cpu_limit=nano_cpus, mem_limit=memory,
                                             cpu_reservation=nano_cpus, mem_reservation=memory),
            restart_policy=docker.types.RestartPolicy(condition="none"),
            placement=docker.types.Placement(constraints=self._placement(spec) or None),
            log_driver=docker.types.DriverConfig("json-file", {"max-size": "10m", "max-file": "1"}),
            networks=[{"Target": self._network_id}] if self.attached else None,
        )
        endpoint: dict[str, Any] = {"Mode": "dnsrr"}
        if not self.attached:
            endpoint["Ports"] = [{"Protocol": "tcp", "TargetPort": EXECUTOR_PORT, "PublishMode": "host"}]
        labels = {
            LABEL_MANAGED: "1",
            LABEL_INSTANCE: self.instance_id,
            LABEL_OWNER_PID: str(self._owner_pid),
            LABEL_OWNER_START: self._owner_start,
            LABEL_OWNER_HOST: self._owner_host,
            LABEL_RUN: spec.run_id,
            LABEL_FUNCTION: spec.function,
        }
        return {"task_template": template, "name": _service_name(spec.function), "labels": labels,
                "endpoint_spec": endpoint}

    def _create(self, spec: ExecutorSpec, image: str) -> str:
        """Check the image, create the service; return its id. Blocking."""
        if spec.gpu:
            raise InfrastructureError(
                f"{spec.function} asks for a GPU, which the swarm backend does not place yet: "
                "use `constraints` to send it to GPU nodes, or the docker backend"
            )
        self._verify_image(image)
        try:
            created = self._client.api.create_service(**self._service_spec(spec, image))
        except docker.errors.APIError as exc:
            raise InfrastructureError(f"could not create a Swarm service for {spec.function}: {exc}") from exc
        return str(created["ID"])

    def _task(self, service_id: str) -> dict[str, Any] | None:
        """The service's newest task; None when the service is gone."""
        try:
            tasks = self._client.api.tasks(filters={"service": service_id})
        except docker.errors.NotFound:
            return None
        if not tasks:
            return {}
        return max(tasks, key=lambda t: t.get("CreatedAt", ""))

    def _address(self, task: dict[str, Any]) -> str:
        if self.attached:
            for attachment in task.get("NetworksAttachments") or []:
                if (attachment.get("Network") or {}).get("ID") == self._network_id:
                    for address in attachment.get("Addresses") or []:
                        return f"{address.split('/')[0]}:{EXECUTOR_PORT}"
            return ""
        ports = ((task.get("Status") or {}).get("PortStatus") or {}).get("Ports") or []
        port = next((p.get("PublishedPort") for p in ports if p.get("TargetPort") == EXECUTOR_PORT), None)
        host = _node_address(self._node(str(task.get("NodeID") or "")))
        return f"{host}:{port}" if port and host else ""

    def _placement_problem(self, spec: ExecutorSpec, task: dict[str, Any]) -> str | None:
        """Why a pending task can never be placed, or None when it may still be."""
        err = (task.get("Status") or {}).get("Err") or ""

        def ready_sizes() -> list[dict[str, Any]]:
            return [((n.get("Description") or {}).get("Resources") or {}) for n in self._nodes_by_id().values()
                    if (n.get("Status") or {}).get("State") == "ready"]

        return placement_problem(spec, err, ready_sizes)

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        image = self._image(spec)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        for placement in range(1, _PLACEMENTS + 1):
            creating = self._pool.submit(self._create, spec, image)
            try:
                service_id = await asyncio.shield(asyncio.wrap_future(creating))
            except asyncio.CancelledError:
                creating.add_done_callback(self._remove_when_created)
                raise
            try:
                ref, address = await self._wait_running(spec, service_id, deadline, placement)
                if ref is None:
                    continue  # its node went down before it started: placed again
                await self._wait_accepting(spec, ref, address, deadline)
            except BaseException:
                # Cancelled, timed out, failed: never leave the service behind.
                await self._call(self._remove, service_id)
                raise
            return ExecutorHandle(id=service_id, address=address, function=spec.function, ref=ref)
        raise InfrastructureError(
            f"the executor for {spec.function} landed on a node that was down {_PLACEMENTS} times"
        )

    def _remove_when_created(self, creating: concurrent.futures.Future[str]) -> None:
        if not creating.cancelled() and creating.exception() is None:
            with contextlib.suppress(docker.errors.DockerException):
                self._remove(creating.result())

    async def _wait_running(self, spec: ExecutorSpec, service_id: str, deadline: float,
                            placement: int) -> tuple[TaskRef | None, str]:
        """Poll the service's task until it runs and has an address. Returns (None, "") when
        it was placed on a node that is down (the service is then already removed)."""
        loop = asyncio.get_running_loop()
        while True:
            task = await self._call(self._task, service_id)
            if task is None:
                raise InfrastructureError(f"the service of {spec.function}'s executor was removed while starting")
            status = task.get("Status") or {}
            state = status.get("State", "new")
            node_id = str(task.get("NodeID") or "")
            node = await self._call(self._node, node_id) if node_id else {}
            lost = node_id in self._suspected() or (node.get("Status") or {}).get("State") not in ("ready", None)
            if node and lost:
                log.info("executor for %s placed on %s, which is down (placement %d)", spec.function,
                         (node.get("Description") or {}).get("Hostname"), placement)
                await self._call(self._remove, service_id)
                return None, ""
            if state == "running":
                address = await self._call(self._address, task)
                if address:
                    hostname = (node.get("Description") or {}).get("Hostname") or node_id
                    return TaskRef(service_id, str(task.get("ID")), node_id, hostname), address
            elif state in _ENDED:
                raise await self._start_error(spec, service_id, task)
            elif state == "pending":
                problem = await self._call(self._placement_problem, spec, task)
                if problem:
                    raise InfrastructureError(problem)
            if loop.time() >= deadline:
                logs = await self._call(self._logs_tail, service_id)
                raise InfrastructureError(
                    f"the executor for {spec.function} did not start within {START_TIMEOUT_S:.0f} s "
                    f"(task {state}{': ' + status['Err'] if status.get('Err') else ''}). Its output:\n{logs}"
                )
            await asyncio.sleep(_POLL_S)

    async def _start_error(self, spec: ExecutorSpec, service_id: str, task: dict[str, Any]) -> Exception:
        status = task.get("Status") or {}
        err = status.get("Err") or status.get("Message") or status.get("State", "")
        if "No such image" in err or "manifest unknown" in err or "pull access denied" in err:
            return ImageMissing(
                f"a node could not pull the image of {spec.function} ({err}): push it with "
                f"`engine image build --push {self.registry or 'REGISTRY'}`"
            )
        logs = await self._call(self._logs_tail, service_id)
        return InfrastructureError(
            f"the executor for {spec.function} stopped before accepting connections ({err}). "
            f"Its output:\n{logs}"
        )

    async def _wait_accepting(self, spec: ExecutorSpec, ref: TaskRef, address: str, deadline: float) -> None:
        """Poll a TCP connect until the executor's gRPC server listens; check every half
        second that its task still runs, so that a crash at start-up fails fast."""
        loop = asyncio.get_running_loop()
        host, port = address.rsplit(":", 1)
        next_check = loop.time() + 0.5
        while True:
            if await connects(host, int(port), 1.0):
                return
            now = loop.time()
            if now >= next_check or now >= deadline:
                next_check = now + 0.5
                task = await self._call(self._task, ref.service_id)
                state = ((task or {}).get("Status") or {}).get("State")
                if state != "running":
                    raise await self._start_error(spec, ref.service_id, task or {})
                if now >= deadline:
                    logs = await self._call(self._logs_tail, ref.service_id)
                    raise InfrastructureError(
                        f"the executor for {spec.function} on {ref.node} did not accept connections "
                        f"on {address} within {START_TIMEOUT_S:.0f} s. Its output:\n{logs}"
                    )
            await asyncio.sleep(0.05)

    # --- inspection ----------------------------------------------------------------------

    def _exit_info(self, ref: TaskRef, address: str) -> ExitInfo:
        try:
            tasks = self._client.api.tasks(filters={"service": ref.service_id})
        except docker.errors.NotFound:
            tasks = []
        task = next((t for t in tasks if t.get("ID") == ref.task_id), None)
        if task is None:
            return ExitInfo(exited=True, detail="its service was removed")
        status = task.get("Status") or {}
        state = status.get("State", "")
        if state not in _ENDED:
            node = self._node(ref.node_id, refresh=True)
            node_state = (node.get("Status") or {}).get("State", "unknown")
            if node_state != "ready":
                where = (node.get("Status") or {}).get("Addr") or "?"
                return ExitInfo(exited=True, detail=f"node {ref.node} ({where}) is {node_state}")
            # Swarm has not noticed anything: a container that just died is reported a moment
            # later, a lost node only after about three missed heartbeats. The scheduler asks
            # because the executor's stream broke. When neither the executor nor the node's
            # Swarm port (7946, which every node serves) accepts a connection, the node is lost
            # or cut off from us: say so now, and keep new executors off it for a while.
            node_address = _node_address(node)
            if (not _accepts(address, _PROBE_S) and node_address
                    and not _accepts(f"{node_address}:{_SWARM_PORT}", _PROBE_S)):
                self._suspects[ref.node_id] = time.monotonic() + SUSPECT_S
                return ExitInfo(exited=True, detail=(
                    f"node {ref.node} ({node_address}) does not answer: lost or cut off (Swarm "
                    "still reports it ready)"))
            return ExitInfo(exited=False, detail=f"task {state} on {ref.node}")
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        err = status.get("Err") or status.get("Message") or state
        oom = code == _SIGKILL_EXIT
        detail = f"task {state} on {ref.node}: {err}"
        if oom:
            detail += " (SIGKILL: with a memory limit, the OOM killer)"
        return ExitInfo(exited=True, exit_code=code, oom_killed=oom, detail=detail)

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        ref = handle.ref
        if not isinstance(ref, TaskRef):
            return ExitInfo(exited=True, detail="unknown executor")
        return await self._call(self._exit_info, ref, handle.address)

    def _logs_tail(self, service_id: str) -> str:
        try:
            chunks = self._client.api.service_logs(service_id, stdout=True, stderr=True,
                                                  tail=_LOG_TAIL_LINES, follow=False)
            raw = b"".join(chunks)
        except docker.errors.DockerException:
            return "(no logs: service removed)"
        text = raw.decode("utf-8", "replace").rstrip()
        return text or "(no output)"

    async def logs(self, handle: ExecutorHandle) -> str:
        return await self._call(self._logs_tail, handle.id)

    # --- stopping ------------------------------------------------------------------------

    def _remove(self, service_id: str) -> bool:
        """Remove the service: Swarm stops its task (SIGTERM, then SIGKILL after 1 s)."""
        try:
            self._client.api.remove_service(service_id)
            return True
        except docker.errors.NotFound:
            return False

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        await self._call(self._remove, handle.id)

    def _services(self, label: str) -> list[dict[str, Any]]:
        return list(self._client.api.services(filters={"label": label}))

    async def _remove_async(self, service_id: str) -> bool:
        return await self._call(self._remove, service_id)

    async def close(self) -> None:
        try:
            services = await self._call(self._services, f"{LABEL_INSTANCE}={self.instance_id}")
        except docker.errors.DockerException as exc:
            log.warning("could not list executor services to remove them: %s", exc)
            return
        await remove_each(self._remove_async, [s["ID"] for s in services], "service")

    async def cleanup_orphans(self) -> int:
        services = await self._call(self._services, f"{LABEL_MANAGED}=1")
        orphans = [s["ID"] for s in services
                   if orphaned((s.get("Spec") or {}).get("Labels") or {}, self.instance_id, self._owner_host)]
        return await remove_each(self._remove_async, orphans, "service")


def use_pushed_images(app: AppSpec) -> None:
    """Point each function of `app` with an `Image` at that image's tag. Images are not built
    here: `engine image build --push REGISTRY` builds and pushes them, and the backend checks
    that the registry has each one before its first executor starts."""
    from engine import images

    app.resolve_images(images.function_image_tag)


def swarm_backend(settings: SwarmConfig | None, app: AppSpec | None = None) -> SwarmBackend:
    """The swarm backend with `settings` (the `swarm:` section of engine.yaml, or of
    `engine server --config`; environment variables win), and `app`'s functions pointed at
    their images."""
    from engine.config import SwarmConfig

    settings = settings or SwarmConfig()
    if app is not None:
        use_pushed_images(app)
    # Resolved once: the image must match the engine code this process loaded.
    runtime_tag = runtime_image_tag()
    return SwarmBackend(
        instance_id=uuid.uuid4().hex[:12],
        registry=os.environ.get(ENV_REGISTRY) or settings.registry,
        image_for=lambda spec: runtime_tag,
        network=os.environ.get(ENV_NETWORK) or settings.network,
        advertise=os.environ.get(ENV_ADVERTISE) or settings.advertise,
    )


__all__ = ["ENV_NODE", "SwarmBackend", "TaskRef", "placement_problem", "swarm_backend", "use_pushed_images"]
