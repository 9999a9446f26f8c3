"""A real three-host Docker Swarm on one machine, for the swarm tests and measurements.

    python tests/integration/swarmlib.py up       # build it (about 10 s), print how to reach it
    python tests/integration/swarmlib.py push     # engine image build --push, then pull on every node
    python tests/integration/swarmlib.py down     # remove everything it made

Each host is one extra Docker engine in a network namespace of its own (and a UTS namespace, so
that every node has its own hostname), joined by a bridge in the root namespace — the recipe of
`../shared/DOCKER.md`, "Several Docker hosts on one machine":

    root namespace                      esw1 (manager)       esw2 (worker)      esw3 (worker)
    eswbr 10.79.0.1 ───────────────┬── 10.79.0.11 ──────┬── 10.79.0.12 ─────┬── 10.79.0.13
    registry 10.79.0.1:5079        │   dockerd, swarm    │   dockerd          │   dockerd
    registry 127.0.0.1:5079 (push) │   leader            │                    │

Why it is built this way:

- The machine's own Docker engine is shared with other test sessions, so it takes no part: it is
  not restarted, its daemon.json is not touched and it never joins the Swarm. It only builds the
  images and pushes them to `127.0.0.1:5079`, which Docker treats as an insecure (plain HTTP)
  registry by default. The nodes pull the same images from `10.79.0.1:5079` — a second
  `docker-registry` process over the same storage — which each node's own daemon.json marks
  insecure.
- Every engine runs under `unshare --uts` + `nsenter --net=/run/netns/eswN` (not `ip netns
  exec`, which remounts /sys and hides the cgroup mounts from dockerd). The exec chain keeps the
  Popen pid equal to dockerd's.
- Traffic between two nodes is bridged through `eswbr` in the root namespace, where Docker's
  FORWARD policy is DROP: one rule in `DOCKER-USER` (the chain Docker leaves to users) accepts
  it, and is deleted again by `down()`.
- A host is "killed" the way a machine dies: its link goes down, then every process of that
  host — dockerd, its containerd, every shim and every container process under them — gets
  SIGKILL. Nothing answers for it any more, and nothing it sent while dying (a FIN, an RST)
  gets out.
- `down()` leaves nothing: processes, mounts under the engines' directories, the containers'
  cgroups, namespaces, links, the iptables rule, data directories, registry storage. `up()` calls
  it first, so a session that crashed is cleaned up by the next one. A lock file keeps two test
  sessions from building (and tearing down) the same cluster at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors

REPO = Path(__file__).resolve().parents[2]

PREFIX = "esw"
BRIDGE = "eswbr"
SUBNET = "10.79.0"
BRIDGE_ADDR = f"{SUBNET}.1"
REGISTRY_PORT = 5079
#: The registry as the nodes reach it: what `swarm.registry` in engine.yaml names.
REGISTRY = f"{BRIDGE_ADDR}:{REGISTRY_PORT}"
#: The same registry as the machine's own engine reaches it (insecure by default on loopback).
PUSH_REGISTRY = f"127.0.0.1:{REGISTRY_PORT}"
NETWORK = "engine-net"
GATEWAY = "engine-gateway"

STATE_ROOT = Path("/var/lib/engine-swarm")
RUN_ROOT = Path("/run/engine-swarm")
LOCK_PATH = Path("/run/engine-swarm.lock")
IPTABLES_RULE = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]

# Hosts' dockerd answer in about 1 s; a join takes well under a second once traffic can flow.
_START_TIMEOUT = 60.0


def log(text: str) -> None:
    print(f"swarm-cluster: {text}", file=sys.stderr, flush=True)


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not ready yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def calls_of(state_dir: Path) -> list:
    """The calls of the first run in an engine state directory, read from its store ([] before
    the store exists): what the tests and the benchmark check a run by."""
    from engine.store import open_store, store_url

    if not (state_dir / "engine.db").exists():
        return []
    store = open_store(store_url(state_dir))
    try:
        runs = store.list_runs()
        return store.load_calls(runs[0].run_id) if runs else []
    finally:
        store.close()


# --- processes -------------------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return -1
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _tree(roots: set[int]) -> set[int]:
    """`roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid in _pids():
        children.setdefault(_ppid(pid), []).append(pid)
    found: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _processes_naming(path: Path) -> set[int]:
    """Processes with `path` (or a file below it) as an argument, and their descendants.

    For a host's exec root that is its dockerd (`--exec-root`), its containerd (`--config
    <exec-root>/containerd/...`) and every shim (`-address <exec-root>/containerd/...`); the
    container processes are the shims' descendants."""
    text = str(path)
    roots = {
        pid for pid in _pids() if pid != os.getpid()
        and any(a == text or a.startswith(text + "/") for a in _cmdline(pid))
    }
    return _tree(roots)


def _kill_all(pids: set[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _gone(pids: set[int]) -> bool:
    return all(_zombie(p) for p in pids)


def _zombie(pid: int) -> bool:
    """Exited (or only a zombie left, when the exited process is a child of this one)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] == "Z"


def _unmount_below(*paths: Path) -> None:
    """Unmount whatever is still mounted under `paths` (overlay layers, netns bind mounts of a
    killed engine), deepest first."""
    prefixes = [str(p) + "/" for p in paths]
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].replace("\\040", " ") for line in f]
    for point in sorted({p for p in points if any(p.startswith(x) for x in prefixes)},
                        key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def _remove_cgroups(container_ids: list[str], timeout: float = 5.0) -> list[str]:
    """Remove the cgroup directories a killed engine's containers leave behind (cgroupfs driver,
    parent `/docker`, shared with the machine's engine: only these containers' own directories).
    A directory is busy until the kernel has reaped its last process: retried for `timeout`
    seconds. Returns those still there."""
    root = Path("/sys/fs/cgroup")
    if not root.is_dir() or not container_ids:
        return []
    paths = [controller / "docker" / cid for controller in root.iterdir() for cid in container_ids]
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for path in paths:
            try:
                path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                left.append(path)
        if not left or time.monotonic() > deadline:
            return [str(p) for p in left]
        paths = left
        time.sleep(0.1)


# --- the cluster -----------------------------------------------------------------------------


@dataclass
class Host:
    index: int

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def veth(self) -> str:
        """The host-side end of this node's link (the other end, `eswNn`, is in its netns)."""
        return f"{self.name}h"

    @property
    def data_root(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def exec_root(self) -> Path:
        return RUN_ROOT / self.name

    @property
    def socket(self) -> Path:
        return RUN_ROOT / f"{self.name}.sock"

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config_file(self) -> Path:
        return STATE_ROOT / f"{self.name}.json"

    @property
    def log_file(self) -> Path:
        return STATE_ROOT / f"{self.name}.log"

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout, max_pool_size=32)


@dataclass
class Cluster:
    """The three hosts; `hosts[0]` is the manager (and also runs tasks)."""

    size: int = 3
    hosts: list[Host] = field(default_factory=list)
    registries: list[subprocess.Popen[bytes]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: cgroup directories `down()` could not remove (reported by `leftovers()`).
    stale_cgroups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.hosts = [Host(i) for i in range(1, self.size + 1)]

    @property
    def manager(self) -> Host:
        return self.hosts[0]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    # --- up ------------------------------------------------------------------------------

    def up(self) -> Cluster:
        started = time.monotonic()
        ensure_prerequisites()
        self.down(quiet=True)
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        _run("iptables", "-I", _forward_chain(), "1", *IPTABLES_RULE)
        for host in self.hosts:
            self._wire(host)
            self._start_engine(host)
        for host in self.hosts:
            _wait(lambda h=host: h.client(timeout=5).ping(), _START_TIMEOUT, f"dockerd of {host.name}")
        self.timings["engines_s"] = time.monotonic() - started
        manager = self.manager.client()
        manager.swarm.init(advertise_addr=self.manager.address,
                           listen_addr=f"{self.manager.address}:2377")
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        for host in self.hosts[1:]:
            host.client().swarm.join(remote_addrs=[f"{self.manager.address}:2377"], join_token=token,
                                     advertise_addr=host.address, listen_addr=f"{host.address}:2377")
        _wait(lambda: self.ready_nodes() == {h.name for h in self.hosts}, _START_TIMEOUT,
              "every node Ready")
        manager.networks.create(NETWORK, driver="overlay", attachable=True,
                                labels={"engine.test": "swarm"})
        self._start_registries()
        self.timings["up_s"] = time.monotonic() - started
        return self

    def _wire(self, host: Host) -> None:
        ns = host.netns
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", f"{host.name}n")
        _run("ip", "link", "set", host.veth, "master", BRIDGE, "up")
        _run("ip", "link", "set", f"{host.name}n", "netns", ns)
        _run("ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", f"{host.name}n")
        _run("ip", "-n", ns, "link", "set", f"{host.name}n", "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", BRIDGE_ADDR)

    def _start_engine(self, host: Host) -> subprocess.Popen[bytes]:
        host.data_root.mkdir(parents=True, exist_ok=True)
        host.exec_root.mkdir(parents=True, exist_ok=True)
        host.config_file.write_text(json.dumps({"insecure-registries": [REGISTRY]}))
        dockerd = (
            f"nsenter --net=/run/netns/{host.netns} dockerd --config-file {host.config_file} "
            f"--data-root {host.data_root} --exec-root {host.exec_root} "
            f"--pidfile {host.exec_root}/dockerd.pid -H {host.docker_host}"
        )
        with open(host.log_file, "ab") as out:
            return subprocess.Popen(
                ["unshare", "--uts", "sh", "-c", f"hostname {host.name} && exec {dockerd}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _start_registries(self) -> None:
        storage = STATE_ROOT / "registry"
        storage.mkdir(parents=True, exist_ok=True)
        for address in (BRIDGE_ADDR, "127.0.0.1"):
            config = STATE_ROOT / f"registry-{address}.yml"
            config.write_text(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
                f"http:\n  addr: {address}:{REGISTRY_PORT}\n"
            )
            with open(STATE_ROOT / f"registry-{address}.log", "ab") as out:
                self.registries.append(subprocess.Popen(
                    [registry_binary(), "serve", str(config)], stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, start_new_session=True))
            _wait(lambda a=address: urllib.request.urlopen(f"http://{a}:{REGISTRY_PORT}/v2/", timeout=2),
                  20, f"the registry on {address}")

    # --- state ---------------------------------------------------------------------------

    def ready_nodes(self) -> set[str]:
        nodes = self.manager.client(timeout=10).nodes.list()
        return {n.attrs["Description"]["Hostname"] for n in nodes if n.attrs["Status"]["State"] == "ready"}

    def node_names(self) -> dict[str, str]:
        """Node id → hostname."""
        return {n.id: n.attrs["Description"]["Hostname"] for n in self.manager.client().nodes.list()}

    # --- images --------------------------------------------------------------------------

    def push_runtime(self, env: dict[str, str] | None = None, prepull: bool = True) -> str:
        """`engine image build --push` on the machine's engine, then (`prepull`) a pull on every
        node in parallel, so that no test waits for a first pull. Returns the image as nodes
        name it."""
        started = time.monotonic()
        environment = {k: v for k, v in (env or os.environ).items() if k != "DOCKER_HOST"}
        proc = subprocess.run(
            [sys.executable, "-m", "engine.cli", "image", "build", "--push", PUSH_REGISTRY],
            cwd=REPO, env=environment, capture_output=True, text=True, timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"engine image build --push failed:\n{proc.stderr[-3000:]}")
        self.timings["push_s"] = time.monotonic() - started
        tag = _runtime_tag()
        image = f"{REGISTRY}/{tag}"
        if not prepull:
            return image
        started = time.monotonic()
        with ThreadPoolExecutor(len(self.hosts)) as pool:
            list(pool.map(lambda h: h.client(timeout=600).images.pull(image), self.hosts))
        self.timings["pull_s"] = time.monotonic() - started
        return image

    def gateway(self, image: str) -> str:
        """A container on the manager attached to the overlay network; returns its network
        namespace. A process started with `nsenter --net=<it>` is attached to the overlay as
        the engine running in a container on that network would be."""
        client = self.manager.client()
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(GATEWAY).remove(force=True)
        container = client.containers.run(image, entrypoint=["sleep", "infinity"], name=GATEWAY,
                                          network=NETWORK, detach=True, labels={"engine.test": "swarm"})
        container.reload()
        return str(container.attrs["NetworkSettings"]["SandboxKey"])

    # --- failures ------------------------------------------------------------------------

    def kill_host(self, name: str, power_off: bool = True) -> float:
        """Power a host off: its link down, then SIGKILL to everything it runs. Returns when.

        In that order: a dying process closes its sockets, and a FIN or RST reaching its peers
        would tell them at once — a machine that loses power tells nobody anything. With
        `power_off=False` the link stays up: its processes crash, and their connections close."""
        host = self.host(name)
        pids = _processes_naming(host.exec_root)
        if power_off:
            _run("ip", "link", "set", host.veth, "down")
        when = time.time()
        _kill_all(pids)
        _wait(lambda: _gone(pids), 10, f"the processes of {name} to exit")
        return when

    def kill_engine(self, name: str) -> float:
        """SIGKILL to a host's Docker engine alone; the machine, its network, containerd and the
        containers (under their shims) go on. Returns when."""
        host = self.host(name)
        pid = int((host.exec_root / "dockerd.pid").read_text())
        when = time.time()
        os.kill(pid, signal.SIGKILL)
        _wait(lambda: _gone({pid}), 10, f"the Docker engine of {name} to exit")
        return when

    def restart_engine(self, name: str) -> None:
        """Start a host's engine again after `kill_engine`; returns once Swarm has the node Ready."""
        host = self.host(name)
        self._start_engine(host)
        _wait(lambda: host.client(timeout=5).ping(), _START_TIMEOUT, f"dockerd of {name}")
        _wait(lambda: name in self.ready_nodes(), _START_TIMEOUT, f"{name} Ready again")

    def cut_host(self, name: str) -> float:
        """Cut a host off the network (its link down); it keeps running. Returns when."""
        _run("ip", "link", "set", self.host(name).veth, "down")
        return time.time()

    def reconnect_host(self, name: str) -> None:
        """Its link up again; returns once Swarm has the node Ready."""
        _run("ip", "link", "set", self.host(name).veth, "up")
        _wait(lambda: name in self.ready_nodes(), _START_TIMEOUT, f"{name} Ready again")

    def revive_host(self, name: str) -> None:
        """Power a killed host on again: its engine restarts from its data root and rejoins."""
        host = self.host(name)
        _unmount_below(host.data_root, host.exec_root)
        _run("ip", "link", "set", host.veth, "up")
        self._start_engine(host)
        _wait(lambda: host.client(timeout=5).ping(), _START_TIMEOUT, f"dockerd of {name}")
        _wait(lambda: name in self.ready_nodes(), _START_TIMEOUT, f"{name} Ready again")

    # --- down ----------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> None:
        """Remove everything `up()` made, whether or not it is running. Idempotent.

        Engines are killed, not stopped: their state is deleted anyway, and a graceful stop
        waits on every container (and the manager's raft log). What a killed engine leaves —
        mounts, its containers' cgroups — is removed by hand, as after `kill_host`."""
        started = time.monotonic()
        for host in self.hosts:
            pids = _processes_naming(host.exec_root)
            _kill_all(pids)
            with contextlib.suppress(RuntimeError):
                _wait(lambda p=pids: _gone(p), 10, f"the processes of {host.name} to exit")
            _unmount_below(host.data_root, host.exec_root)
            containers = host.data_root / "containers"
            if containers.is_dir():
                self.stale_cgroups += _remove_cgroups(os.listdir(containers))
            _run("ip", "netns", "del", host.netns, check=False)
            _run("ip", "link", "del", host.veth, check=False)
        for proc in self.registries:
            proc.kill()
            proc.wait()
        self.registries = []
        # Registries of a session that crashed: found by their config files.
        _kill_all(_processes_naming(STATE_ROOT))
        _run("ip", "link", "del", BRIDGE, check=False)
        for chain in ("DOCKER-USER", "FORWARD"):
            while _run("iptables", "-C", chain, *IPTABLES_RULE, check=False).returncode == 0:
                _run("iptables", "-D", chain, *IPTABLES_RULE, check=False)
        for path in (STATE_ROOT, RUN_ROOT):
            _unmount_below(path)
            shutil.rmtree(path, ignore_errors=True)
        if not quiet:
            log(f"down in {time.monotonic() - started:.1f} s")

    def leftovers(self) -> list[str]:
        """What `down()` should have removed and is still there (empty when clean)."""
        found = []
        netns = _run("ip", "netns", "list", check=False).stdout
        found += [f"netns {h.netns}" for h in self.hosts if h.netns in netns.split()]
        links = _run("ip", "-o", "link", "show", check=False).stdout
        found += [f"link {name}" for name in [BRIDGE] + [h.veth for h in self.hosts]
                  if f" {name}:" in links or f" {name}@" in links]
        for path in (STATE_ROOT, RUN_ROOT):
            if path.exists():
                found.append(f"directory {path}")
            found += [f"process {p} {' '.join(_cmdline(p))[:80]}" for p in _processes_naming(path)]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {line.split()[4]}" for line in f
                      if line.split()[4].startswith((str(STATE_ROOT) + "/", str(RUN_ROOT) + "/"))]
        for chain in ("DOCKER-USER", "FORWARD"):
            if _run("iptables", "-C", chain, *IPTABLES_RULE, check=False).returncode == 0:
                found.append(f"iptables rule in {chain}")
        found += [f"cgroup {p}" for p in self.stale_cgroups if os.path.exists(p)]
        return found


def _forward_chain() -> str:
    """`DOCKER-USER` when the machine's engine made it (it runs before Docker's own rules)."""
    return "DOCKER-USER" if _run("iptables", "-nL", "DOCKER-USER", check=False).returncode == 0 else "FORWARD"


def _runtime_tag() -> str:
    proc = subprocess.run([sys.executable, "-c", "from engine import images; print(images.runtime_image_tag())"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def registry_binary() -> str:
    return shutil.which("docker-registry") or "/usr/bin/docker-registry"


def ensure_prerequisites() -> None:
    """Root, the tools, and Debian's docker-registry package (installed when missing)."""
    if os.geteuid() != 0:
        raise RuntimeError("building the test Swarm needs root (network namespaces, dockerd)")
    missing = [t for t in ("ip", "nsenter", "unshare", "dockerd", "iptables", "umount") if not shutil.which(t)]
    if missing:
        raise RuntimeError(f"missing tools: {', '.join(missing)}")
    if not os.path.exists(registry_binary()):
        log("installing docker-registry (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker-registry"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
            subprocess.run(install, env=env, check=True, capture_output=True)


@contextlib.contextmanager
def exclusive(timeout: float = 900, path: Path = LOCK_PATH, what: str = "its swarm cluster") -> Iterator[None]:
    """One cluster per machine: hold this while it exists. The lock file is removed on release
    (a waiter that then holds the lock of a removed file notices, and takes the new one).
    `path` is another lock (hostlib's hosts have their own)."""
    deadline = time.monotonic() + timeout
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"another session holds {path} ({what})") from None
            time.sleep(1)
            continue
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handle.close()


# The generic helpers above by public names, for tests/integration/hostlib.py (network-namespace
# hosts without Docker), which builds its hosts the same way.
run = _run
wait_for = _wait
cmdline = _cmdline
pids = _pids
process_tree = _tree
kill_all = _kill_all
gone = _gone
forward_chain = _forward_chain


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    cluster = Cluster()
    if command == "up":
        cluster.up()
        # The registries must outlive this command: they were started in their own session.
        log(f"up in {cluster.timings['up_s']:.1f} s; manager: DOCKER_HOST={cluster.manager.docker_host}; "
            f"registry: {REGISTRY} (push to {PUSH_REGISTRY})")
    elif command == "push":
        image = cluster.push_runtime()
        log(f"{image} on every node ({cluster.timings})")
    elif command == "down":
        cluster.down()
        left = cluster.leftovers()
        if left:
            log("left behind: " + "; ".join(left))
            return 1
    elif command == "status":
        print("\n".join(cluster.leftovers()) or "no cluster")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
