"""The docker backend: each executor is a container on the local Docker engine.

Why containers: a function's `cpu`, `memory` and `image` are then enforced (cgroups, its own
filesystem), a crash or an out-of-memory kill takes down one executor and nothing else, and the
kernel — not the user's code — reports *why* it died (`OOMKilled`), which lets the scheduler
tell `OutOfMemory` from other failures.

How a container is run, and why:

- Image: `spec.image`, else `image_for(spec)`, else the runtime image (`engine.images`). A
  missing image raises `ImageMissing` at once; nothing is built or pulled on this path.
- Limits: `nano_cpus` from `cpu`; `mem_limit` = `memswap_limit` = `memory_gb`, so there is no
  swap to hide behind and an overrun is an OOM kill the scheduler can see.
- Least privilege: uid 10001, all capabilities dropped, `no-new-privileges`, and no Docker
  socket mounted (an executor never controls Docker). With `code_read_only` (the default) the
  root filesystem is read-only; `/tmp` and `/home/engine` are fresh tmpfs mounts, sized by
  `ephemeral_disk_gb` (tmpfs pages count against the memory limit too). The image is
  byte-compiled at build time and sets PYTHONDONTWRITEBYTECODE, so Python needs no writable
  root; `pip install` at run time does, and is not supported (use `Image.run("pip install …")`).
- Large values: when the Docker engine is this machine's (a unix socket) and the scheduler gives
  an exchange directory (`spec.exchange_dir`, `engine.scheduler.exchange`), its `in` is mounted
  read-only at `/exchange/in` and its `out` writable at `/exchange/out`, and
  `ENGINE_EXCHANGE_DIR=/exchange` tells the executor: values move as files, not streams. The
  container sees no other part of the host's filesystem.
- Network: the default bridge. The scheduler dials the executor at its bridge IP on 50051 (no
  published ports to allocate or leak) and the executor calls back to the bridge gateway
  (`callback_host`, usually 172.17.0.1), which is also where the scheduler's callback server
  binds, so it is reachable from containers and not from other machines. A network namespace
  of its own is also most of what a container's start costs, and what makes concurrent starts
  queue (`benchmarks/container_starts.py`: ten at once on this project's 2-core machine, 1.26 s
  on the bridge, 0.90 with no network, 0.43 joining another container's namespace).
  `ENGINE_DOCKER_NETWORK=shared` trades for that: the backend starts one small *holder*
  container on the bridge (`engine-network-…`, `engine.backends.holder`), and every executor
  it starts joins the holder's namespace and listens on a port of its own there (50052, 50053,
  …). The executors of one engine then share one address and one loopback, and one hostname
  (Docker gives a container that joins another's namespace no hostname of its own); on the
  default bridge they could already reach each other's ports, and other engines' executors
  stay outside. The holder is labelled like an executor, so `close()` and the sweeps below
  remove it too; it ends by itself once its namespace has had no executor for the orphan
  grace, and a start that finds it gone makes a new one.
- Ownership: labels `engine.managed`, `engine.instance`, `engine.owner_pid`,
  `engine.owner_start`, `engine.owner_host`, `engine.run`, `engine.function`. `close()` removes
  this instance's containers (with `close_without_waiting`, set by `engine run` as it ends, it
  sends the removals and lets the Docker engine carry them out); `cleanup_orphans()` removes those whose owning engine process is
  gone (the pid is dead, a zombie, or now belongs to a process that started later: a pid alone
  is not an owner).
- Orphans end by themselves too: an executor whose `Calls` stream stays closed longer than
  `ENGINE_EXECUTOR_ORPHAN_TIMEOUT` (put into the container's environment) exits, even mid-call
  (`engine.executor.lifetime`); its stopped container waits for the next sweep.

The container itself is defined once, in `engine.backends.dockerapi.executor_container`, which
`engine run`'s early start (`engine.backends.early`) sends over its own small client.

Docker's SDK is blocking, so every call runs on this backend's own thread pool (not asyncio's
default executor, which has only cpu+4 threads and is shared with the rest of the scheduler: a
burst of container starts must not starve it); one client, with a connection pool as large as
the thread pool, is shared. Nothing here runs per gRPC call: once a
handle is returned the scheduler talks to the executor directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import docker
import docker.errors
import docker.types

from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.backends.dockerapi import (
    LABEL_INSTANCE,
    LABEL_MANAGED,
    LABEL_OWNER_HOST,
    LABEL_OWNER_PID,
    LABEL_OWNER_START,
    START_TIMEOUT_S,
    LocalDocker,
    bridge_ip,
    container_name,
    executor_container,
    owner_labels,
)
from engine.backends.holder import MARGIN_S as HOLDER_MARGIN_S
from engine.errors import (
    DockerUnavailable,
    ImageMissing,
    InfrastructureError,
    PythonVersionMismatch,
    SDKUsageError,
)
from engine.executor.blobs import EXCHANGE_ENV
from engine.executor.lifetime import (
    EXECUTOR_ENV_DEFAULTS,
    ORPHAN_TIMEOUT_ENV,
    blank_env,
    executor_env,
)
from engine.images import (
    EXECUTOR_PORT,
    FUNCTION_REPOSITORY_PREFIX,
    LABEL_PYTHON,
    docker_client,
    host_python_version,
    runtime_image_tag,
)
from engine.procstat import stat_fields
from engine.timeouts import connects

log = logging.getLogger(__name__)

# Where a container sees its exchange directory.
EXCHANGE_MOUNT = "/exchange"

_LOG_TAIL_LINES = 60
#: How executors are networked ("Network" above): a namespace each, or one shared.
NETWORK_ENV = "ENGINE_DOCKER_NETWORK"
NETWORK_MODES = ("bridge", "shared")
#: The function label of the holder of the shared namespace (no function of an application).
HOLDER_FUNCTION = "(network)"
#: The runtime image's entrypoint without its `--listen` (runtime_image/Dockerfile).
EXECUTOR_COMMAND = ["python3", "-m", "engine.executor"]

#: Concurrent Docker API calls (the client's connection pool is 32).
_DOCKER_THREADS = 16

T = TypeVar("T")


def _owner_alive(pid: int, start: str) -> bool:
    """Whether the engine process (`pid`, started at `start` ticks; empty: not recorded) still
    runs. A pid alone proves nothing: a killed process stays a zombie until its parent reaps it,
    and its pid is reused later."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = stat_fields(pid)
    if stat is None:
        # Gone since the kill(0); or no /proc here, where only the pid can tell.
        return not (start or os.path.exists("/proc/self/stat"))
    state, now = stat[0], stat[19]
    if state in ("Z", "X"):
        return False  # exited; only its exit status is left for its parent to collect
    return not (start and now != start)  # else: the pid was reused


def orphaned(labels: dict[str, str], instance_id: str, owner_host: str) -> bool:
    """Whether a labelled executor (a container, a Swarm service) was left behind by an engine on
    this machine that is gone. Another machine's engine may well be alive: never touched."""
    if labels.get(LABEL_INSTANCE) == instance_id or labels.get(LABEL_OWNER_HOST) != owner_host:
        return False
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return False
    return not _owner_alive(pid, labels.get(LABEL_OWNER_START, ""))


async def remove_each(remove: Callable[[str], Awaitable[bool]], ids: list[str], what: str) -> int:
    """Remove executors at once; a failure is logged, never raised. Returns how many went."""
    results = await asyncio.gather(*(remove(i) for i in ids), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            log.warning("could not remove an executor %s: %s", what, result)
    return sum(1 for r in results if r is True)


def _gpu_count(gpu: str | None) -> int:
    if not gpu:
        return 0
    # "A100:2" / "2" / "A100": the model is the scheduler's business; Docker only counts.
    count_text = gpu.rsplit(":", 1)[-1] if ":" in gpu else gpu
    return int(count_text) if count_text.isdigit() else 1


class DockerBackend(Backend):
    """Runs executors as containers on the local Docker engine.

    `instance_id` names this scheduler instance (container labels, `close()`); `image_for`
    picks an image for specs without `spec.image`; `command` replaces the image's entrypoint
    (tests use it to run a stand-in server); `code_read_only` gives containers a read-only root
    filesystem.

    The constructor talks to Docker (ping, bridge network lookup) and raises `DockerUnavailable`
    when no engine answers.
    """

    name = "docker"

    def __init__(
        self,
        *,
        instance_id: str,
        image_for: Callable[[ExecutorSpec], str] | None = None,
        command: list[str] | None = None,
        code_read_only: bool = True,
        network: str | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.network = network or os.environ.get(NETWORK_ENV, "") or "bridge"
        if self.network not in NETWORK_MODES:
            raise SDKUsageError(f"{NETWORK_ENV}={self.network!r} is not a network mode: use "
                                + " or ".join(NETWORK_MODES))
        self._image_for = image_for
        self._command = list(command) if command else None
        self._read_only = code_read_only
        self._client = docker_client()
        self._owner_host = socket.gethostname()
        self._executor_env = executor_env()
        self._verified_images: set[str] = set()
        self._removals: list[socket.socket] = []  # `close_without_waiting`'s requests
        self._runtime_tag: str | None = None
        self._pool = ThreadPoolExecutor(max_workers=_DOCKER_THREADS, thread_name_prefix="docker")
        # network "shared": the holder container (id, bridge IP), made on the first start that
        # needs it, and the ports its executors listen on.
        self._holder: tuple[str, str] | None = None
        self._holder_lock = threading.Lock()  # held while a holder is made (Docker calls)
        self._ports: set[int] = set()
        self._ports_lock = threading.Lock()  # never held across a Docker call: the event loop takes it
        self._idle_since = 0.0  # when the last executor in the namespace went
        # A holder ends after the orphan grace and a margin with no executor
        # (`engine.backends.holder`): never join one without executors for half the grace.
        grace = float(self._executor_env[ORPHAN_TIMEOUT_ENV])
        self._holder_idle_s = grace + HOLDER_MARGIN_S
        self._holder_reuse_s = grace / 2
        gateway = self._bridge_gateway()
        # Bind mounts name paths of the engine's machine: only a local engine shares ours.
        self.shares_filesystem = str(self._client.api.base_url).startswith("http+docker://")
        self.callback_host = gateway
        self.callback_bind_host = gateway

    # --- setup ---------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _bridge_gateway(self) -> str:
        """The default bridge's gateway address on this host (usually 172.17.0.1).

        Docker 20.10 often leaves the default bridge's IPAM `Gateway` empty; then the address
        of the bridge interface (`docker0`) is used, and failing that the subnet's first host
        address, which is what Docker assigns to the bridge.
        """
        try:
            network = self._client.api.inspect_network("bridge")
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(
                f"Docker's default 'bridge' network is not available ({exc}): the docker "
                "backend needs it for executors to reach the scheduler"
            ) from exc
        configs = [c for c in (network.get("IPAM") or {}).get("Config") or [] if c]
        for config in configs:
            gateway = config.get("Gateway") or ""
            if gateway and ":" not in gateway:
                return gateway.split("/")[0]
        interface = (network.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
        address = _interface_ipv4(interface)
        if address:
            return address
        for config in configs:
            subnet = config.get("Subnet") or ""
            if subnet and ":" not in subnet:
                return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
        raise DockerUnavailable(
            "Docker's 'bridge' network has no IPv4 gateway: executors could not reach the "
            "scheduler (check the daemon's `bip` setting)"
        )

    def _image(self, spec: ExecutorSpec) -> str:
        if spec.image:
            return spec.image
        if self._image_for is not None:
            image = self._image_for(spec)
            if image:
                return image
        if self._runtime_tag is None:
            # Resolved once: the image must match the engine code this process loaded, even if
            # the source tree is edited while it runs.
            self._runtime_tag = runtime_image_tag()
        return self._runtime_tag

    def _verify_image(self, image: str) -> None:
        if image in self._verified_images:
            return
        try:
            attrs = self._client.api.inspect_image(image)
        except docker.errors.NotFound:
            hint = (
                "run `engine image build FILE.py`"
                if image.startswith(FUNCTION_REPOSITORY_PREFIX)
                else "run `engine image build`"
            )
            raise ImageMissing(f"Image {image} is not built: {hint}") from None
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine error while looking up {image}: {exc}") from exc
        python = ((attrs.get("Config") or {}).get("Labels") or {}).get(LABEL_PYTHON)
        if python and python != host_python_version():
            raise PythonVersionMismatch(
                f"Image {image} has Python {python} but the engine runs on Python "
                f"{host_python_version()}: cloudpickle needs the same minor version on both "
                "sides. Rebuild it with `engine image build --force`."
            )
        self._verified_images.add(image)

    # --- start ---------------------------------------------------------------------------

    def _create_and_start(self, spec: ExecutorSpec, image: str) -> tuple[str, str, int]:
        """Create and start the container; return (id, IP, port) to dial. Blocking."""
        self._verify_image(image)
        if self.network != "shared":
            return (*self._create_and_start_in(spec, image, "bridge", self._command), EXECUTOR_PORT)
        port = self._take_port()
        try:
            try:
                return self._join_namespace(spec, image, port)
            except InfrastructureError:
                if not self._forget_holder_if_gone():
                    raise
                return self._join_namespace(spec, image, port)  # it had ended: with a new one
        except BaseException:
            self._release_port(port)
            raise

    def _join_namespace(self, spec: ExecutorSpec, image: str, port: int) -> tuple[str, str, int]:
        """Start the executor in the holder's namespace, listening on `port`; (id, IP, port)."""
        holder_id, holder_ip = self._shared_namespace(image)
        entrypoint = [*EXECUTOR_COMMAND, "--listen", f"0.0.0.0:{port}"]
        container_id, _ = self._create_and_start_in(spec, image, f"container:{holder_id}", entrypoint)
        return container_id, holder_ip, port

    def _create_and_start_in(self, spec: ExecutorSpec, image: str, network_mode: str,
                             entrypoint: list[str] | None) -> tuple[str, str]:
        binds, environment = {}, {**EXECUTOR_ENV_DEFAULTS, **spec.env, **self._executor_env, **blank_env(spec.function)}
        environment.pop(EXCHANGE_ENV, None)
        if spec.exchange_dir and self.shares_filesystem:
            binds = {os.path.join(spec.exchange_dir, "in"): {"bind": f"{EXCHANGE_MOUNT}/in", "mode": "ro"},
                     os.path.join(spec.exchange_dir, "out"): {"bind": f"{EXCHANGE_MOUNT}/out", "mode": "rw"}}
            environment[EXCHANGE_ENV] = EXCHANGE_MOUNT
        config = executor_container(
            image,
            labels=owner_labels(self.instance_id, spec.run_id, spec.function),
            environment=environment,
            cpu=spec.cpu,
            memory_gb=spec.memory_gb,
            ephemeral_disk_gb=spec.ephemeral_disk_gb,
            read_only=self._read_only,
            entrypoint=entrypoint,
            binds=binds,
            gpus=_gpu_count(spec.gpu),
            network_mode=network_mode,
        )
        api = self._client.api
        try:
            created = api.create_container_from_config(config, container_name(spec.function))
        except docker.errors.ImageNotFound:
            self._verified_images.discard(image)
            raise ImageMissing(f"Image {image} is not built: run `engine image build`") from None
        except docker.errors.DockerException as exc:
            raise InfrastructureError(
                f"Could not create a container for {spec.function} from {image}: {exc}"
            ) from exc
        container_id = created["Id"]
        try:
            api.start(container_id)
            attrs = api.inspect_container(container_id)
        except docker.errors.DockerException as exc:
            self._remove(container_id)
            raise InfrastructureError(
                f"Could not start the container for {spec.function} from {image}: {exc}"
            ) from exc
        ip = bridge_ip(attrs)
        if not ip and network_mode == "bridge":
            detail = _describe_state(attrs.get("State") or {})
            logs = self._logs_tail(container_id)
            self._remove(container_id)
            raise InfrastructureError(
                f"The executor container for {spec.function} has no bridge IP ({detail}).\n"
                f"Its output:\n{logs}"
            )
        return container_id, ip

    def _shared_namespace(self, image: str) -> tuple[str, str]:
        """The holder of the shared network namespace (id, bridge IP), started from `image`
        (`engine.backends.holder`) if there is none, or none recent enough to join. Blocking."""
        with self._holder_lock:
            with self._ports_lock:
                # (`_take_port` has counted the executor being started: "others" are the rest.)
                stale = len(self._ports) <= 1 and time.monotonic() - self._idle_since > self._holder_reuse_s
            if self._holder is not None and stale:
                self._remove(self._holder[0])
                self._holder = None
            if self._holder is None:
                config = executor_container(
                    image, labels=owner_labels(self.instance_id, "", HOLDER_FUNCTION),
                    environment=dict(self._executor_env), cpu=0.1, memory_gb=0.0625,
                    ephemeral_disk_gb=0.001, read_only=True,
                    entrypoint=["python3", "-m", "engine.backends.holder",
                                f"{START_TIMEOUT_S + self._holder_idle_s:g}", f"{self._holder_idle_s:g}"])
                api = self._client.api
                try:
                    holder = api.create_container_from_config(config, container_name(HOLDER_FUNCTION))["Id"]
                except docker.errors.DockerException as exc:
                    raise InfrastructureError(f"Could not create the container holding the executors' "
                                              f"network namespace from {image}: {exc}") from exc
                try:
                    api.start(holder)
                    ip = bridge_ip(api.inspect_container(holder))
                except docker.errors.DockerException as exc:
                    self._remove(holder)
                    raise InfrastructureError(f"Could not start the container holding the executors' "
                                              f"network namespace from {image}: {exc}") from exc
                except BaseException:
                    self._remove(holder)
                    raise
                if not ip:
                    self._remove(holder)
                    raise InfrastructureError("The container holding the executors' network namespace "
                                              "got no bridge IP")
                self._holder = (holder, ip)
                with self._ports_lock:
                    self._idle_since = time.monotonic()
            return self._holder

    def _forget_holder_if_gone(self) -> bool:
        """After a failed start: whether the holder no longer runs (then the next start makes a
        new one)."""
        with self._holder_lock:
            if self._holder is None or (self._state(self._holder[0]) or {}).get("Running"):
                return False
            self._remove(self._holder[0])
            self._holder = None
            return True

    def _take_port(self) -> int:
        """A port no executor in the shared namespace listens on."""
        with self._ports_lock:
            port = next(p for p in range(EXECUTOR_PORT + 1, 65536) if p not in self._ports)
            self._ports.add(port)
            return port

    def _release_port(self, port: int) -> None:
        """An executor started by `_take_port` is gone (nothing in network "bridge")."""
        if self.network != "shared":
            return
        with self._ports_lock:
            self._ports.discard(port)
            if not self._ports:
                self._idle_since = time.monotonic()

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        image = self._image(spec)
        creating = self._pool.submit(self._create_and_start, spec, image)
        created = asyncio.wrap_future(creating)
        try:
            container_id, ip, port = await asyncio.shield(created)
        except asyncio.CancelledError:
            # The thread still creates and starts the container: remove it once it has (the
            # callback runs in that thread, so this holds even if the event loop is closing).
            creating.add_done_callback(self._remove_when_created)
            # Nobody waits for it any more: whatever it ends with is not worth a warning.
            created.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
        try:
            await self._wait_accepting(container_id, ip, port, spec.function)
        except BaseException:
            # Cancelled, timed out, or died: never leave the container behind.
            await self._call(self._remove, container_id)
            self._release_port(port)
            raise
        return ExecutorHandle(
            id=container_id,
            address=f"{ip}:{port}",
            function=spec.function,
            ref=container_id,
        )

    def _remove_when_created(self, creating: concurrent.futures.Future) -> None:
        if not creating.cancelled() and creating.exception() is None:
            container_id, _, port = creating.result()
            with contextlib.suppress(docker.errors.DockerException):
                self._remove(container_id)
            self._release_port(port)

    async def _wait_accepting(self, container_id: str, ip: str, port: int, function: str) -> None:
        """Poll a TCP connect to ip:port until it succeeds; check the container is still
        running every half second so that a crash at start-up fails fast with its output."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        next_check = loop.time() + 0.5
        while True:
            # `connects`, not `asyncio.wait_for`: that loses a cancellation arriving as the
            # connect fails (engine.timeouts), and a cancelled start then polled on for
            # START_TIMEOUT_S (test_a_cancelled_start_leaves_no_container, 1 run in 3).
            if await connects(ip, port, 1.0):
                return
            now = loop.time()
            if now >= next_check or now >= deadline:
                next_check = now + 0.5
                state = await self._call(self._state, container_id)
                if state is None or not state.get("Running"):
                    logs = await self._call(self._logs_tail, container_id)
                    raise InfrastructureError(
                        f"The executor container for {function} stopped before accepting "
                        f"connections ({_describe_state(state)}). Its output:\n{logs}"
                    )
                if now >= deadline:
                    logs = await self._call(self._logs_tail, container_id)
                    raise InfrastructureError(
                        f"The executor container for {function} did not accept connections on "
                        f"{ip}:{port} within {START_TIMEOUT_S:.0f} s. Its output:\n{logs}"
                    )
            await asyncio.sleep(0.02)

    # --- inspection ----------------------------------------------------------------------

    def _state(self, container_id: str) -> dict | None:
        try:
            return self._client.api.inspect_container(container_id).get("State") or {}
        except docker.errors.NotFound:
            return None

    def _logs_tail(self, container_id: str) -> str:
        try:
            raw = self._client.api.logs(container_id, stdout=True, stderr=True, tail=_LOG_TAIL_LINES)
        except docker.errors.DockerException:
            return "(no logs: container removed)"
        text = raw.decode("utf-8", "replace").rstrip()
        return text or "(no output)"

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        state = await self._call(self._state, str(handle.ref or handle.id))
        if state is None:
            return ExitInfo(exited=True, detail="container removed")
        running = bool(state.get("Running"))
        return ExitInfo(
            exited=not running,
            exit_code=None if running else state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")),
            detail=_describe_state(state),
        )

    async def logs(self, handle: ExecutorHandle) -> str:
        return await self._call(self._logs_tail, str(handle.ref or handle.id))

    # --- stopping ------------------------------------------------------------------------

    def _remove(self, container_id: str) -> bool:
        """Kill and remove at once (no graceful stop: executors hold no state worth a 10 s
        wait; finished calls are already checkpointed by the scheduler)."""
        try:
            self._client.api.remove_container(container_id, force=True)
            return True
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                return False
            raise

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        await self._call(self._remove, str(handle.ref or handle.id))
        if self.network == "shared":  # (only there is the address's port one of ours)
            self._release_port(int(handle.address.rsplit(":", 1)[1]))

    def _list(self, label: str) -> list[dict]:
        return self._client.api.containers(all=True, filters={"label": label})

    async def _remove_async(self, container_id: str) -> bool:
        return await self._call(self._remove, container_id)

    async def close(self) -> None:
        try:
            containers = await self._call(self._list, f"{LABEL_INSTANCE}={self.instance_id}")
        except docker.errors.DockerException as exc:
            log.warning("could not list executor containers to remove them: %s", exc)
            return
        ids = [c["Id"] for c in containers]
        local = LocalDocker.here() if self.close_without_waiting and self.shares_filesystem else None
        if local is not None:
            # `engine run` ends now: each removal is sent, and Docker carries it out after this
            # process is gone (0.15-0.4 s each, not waited for). Their connections stay open
            # until then. One that could not be sent is removed the usual way.
            sent = {cid: local.send_removal(cid) for cid in ids}
            self._removals += [sock for sock in sent.values() if sock is not None]
            ids = [cid for cid, sock in sent.items() if sock is None]
        await remove_each(self._remove_async, ids, "container")

    async def cleanup_orphans(self) -> int:
        containers = await self._call(self._list, f"{LABEL_MANAGED}=1")
        orphans = [c["Id"] for c in containers
                   if orphaned(c.get("Labels") or {}, self.instance_id, self._owner_host)]
        return await remove_each(self._remove_async, orphans, "container")


def _interface_ipv4(name: str) -> str:
    """IPv4 address of a local network interface (Linux SIOCGIFADDR); empty if unknown."""
    try:
        import fcntl
    except ImportError:
        return ""
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), 0x8915, request)  # SIOCGIFADDR
        except OSError:
            return ""
    return socket.inet_ntoa(answer[20:24])


def _describe_state(state: dict | None) -> str:
    if state is None:
        return "container removed"
    if state.get("Running"):
        return "running"
    parts = [f"exited with code {state.get('ExitCode')}"]
    if state.get("OOMKilled"):
        parts.append("killed for exceeding its memory limit")
    if state.get("Error"):
        parts.append(state["Error"])
    return ", ".join(parts) if state.get("Status") != "created" else "never started"


__all__ = ["DockerBackend"]
