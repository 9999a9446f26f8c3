"""Test "hosts" on one machine: network namespaces on one bridge, one `engine server` in each.

    with Hosts(2) as hosts:                       # up() on entry, down() on exit
        a, b = hosts
        pg = hosts.postgres().start()             # PostgreSQL on the bridge address (and loopback)
        server = a.popen([sys.executable, "-m", "engine.cli", "server", "--host", a.addr, ...])
        urllib.request.urlopen(f"http://{a.addr}:{port}/healthz")   # from the test, over the bridge
        a.partition(); ...; a.heal()              # its link down / up
        a.power_off()                             # link down, then SIGKILL to all it runs

    python tests/integration/hostlib.py up [N]    # build N hosts (default 2) and leave them
    python tests/integration/hostlib.py down      # remove every host, link, rule, process
    python tests/integration/hostlib.py status    # what is there (nothing, when clean)

The recipe is swarmlib's (and `../shared/DOCKER.md`'s, "Several Docker hosts on one machine"),
without Docker and with its own names, so that both can exist at once:

    root namespace               eng1                eng2              ...
    engbr 10.81.0.1 ────────┬── 10.81.0.11 ─────┬── 10.81.0.12
    PostgreSQL, the test    │   engine server    │   engine server

- A host is a network namespace `engN` (bind-mounted at /run/netns/engN) with a veth pair:
  `engNh` on the bridge in the root namespace, `engNn` inside with 10.81.0.(10+N)/24, and `lo`
  up. There is no default route and no NAT: a host reaches the bridge subnet (the root namespace
  at 10.81.0.1, the other hosts) and its own loopback, nothing else.
- `host.popen(args)` runs `nsenter --net=/run/netns/engN -- ARGS` (not `ip netns exec`, which
  remounts /sys): nsenter execs the command, so the Popen's pid is the command's own and a
  `kill -9` of it hits exactly that process. Only the network namespace differs: files, users
  and the process tree are the machine's.
- The test in the root namespace reaches a server in a host at `host.addr:PORT` (the bridge is
  on its subnet), and the hosts reach each other. Where Docker runs, its FORWARD policy is DROP
  and bridged traffic goes through it (br_netfilter): one rule in `DOCKER-USER`,
  `-i engbr -o engbr -j ACCEPT`, lets host-to-host traffic through; without Docker no rule is
  added. `down()` deletes it from either chain.
- `host.partition()` sets the host's bridge-side link down: nothing it sends gets out, nothing
  reaches it, and no one is told (no RST, no FIN): connections hang until their timeouts, as
  across a real network partition. `heal()` sets it up again.
- Every process whose network namespace is a host's is found by that namespace (the inode of
  /proc/PID/ns/net), so `down()` kills what the test started there and all its children —
  executors included — even after a crashed session. It then removes the namespaces, links and
  the iptables rule, and stops the PostgreSQL servers `postgres()` made (in /tmp/engine-pg-hosts-*,
  a crashed session's too); `up()` calls it first. A lock file (/run/engine-hosts.lock, not swarmlib's)
  keeps two sessions from building or tearing down the hosts at once.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import swarmlib
from swarmlib import gone, kill_all, run, wait_for

PREFIX = "eng"
BRIDGE = "engbr"
SUBNET = "10.81.0"
BRIDGE_ADDR = f"{SUBNET}.1"
NETNS_DIR = Path("/run/netns")
LOCK_PATH = Path("/run/engine-hosts.lock")
#: Where `Hosts.postgres()` puts its servers (in the temporary directory).
PG_PREFIX = "engine-pg-hosts-"
IPTABLES_RULE = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
_HOST_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def log(text: str) -> None:
    print(f"hosts: {text}", file=sys.stderr, flush=True)


def _netns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def processes_in(netns_path: Path) -> set[int]:
    """Every process whose network namespace is the one bound at `netns_path`."""
    target = _netns_id(str(netns_path))
    if target is None:
        return set()
    own = os.getpid()
    return {pid for pid in swarmlib.pids() if pid != own and _netns_id(f"/proc/{pid}/ns/net") == target}


@dataclass
class Host:
    index: int
    #: What `popen` started (their pids are the commands' own).
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{PREFIX}{self.index}"

    @property
    def addr(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def netns(self) -> str:
        return self.name

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    @property
    def veth(self) -> str:
        """The bridge-side end of its link (the other end, `engNn`, is in its namespace)."""
        return f"{self.name}h"

    @property
    def inner(self) -> str:
        return f"{self.name}n"

    def command(self, args: Sequence[str]) -> list[str]:
        """`args` as run in this host's network namespace (nsenter execs it: same pid)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *args]

    def popen(self, args: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """`subprocess.Popen(args, **kw)` in this host's network namespace; stdin defaults to
        /dev/null. `down()` kills it (and whatever it started) if the test has not."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self.command(args), **kw)
        self.procs.append(proc)
        return proc

    def run(self, args: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """`subprocess.run(args, **kw)` in this host's network namespace."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.command(args), **kw)

    def processes(self) -> set[int]:
        """Every process running in this host's network namespace."""
        return processes_in(self.netns_path)

    def partition(self) -> None:
        """Cut the host off: its link down. It reaches nothing; nothing reaches it; nobody is told."""
        run("ip", "link", "set", self.veth, "down")

    def heal(self) -> None:
        """Its link up again. The address resolutions that failed or are still failing meanwhile
        (ARP entries left INCOMPLETE by the partition would fail the first connection after
        `heal()` with "no route to host" a second later) are forgotten on every side, so that
        traffic flows at once."""
        run("ip", "link", "set", self.veth, "up")
        run("ip", "-n", self.netns, "neigh", "flush", "all", check=False)
        run("ip", "neigh", "flush", "to", self.addr, check=False)
        for name in _existing_hosts():
            if name != self.netns:
                run("ip", "-n", name, "neigh", "flush", "to", self.addr, check=False)

    @property
    def partitioned(self) -> bool:
        return "state DOWN" in run("ip", "-o", "link", "show", self.veth, check=False).stdout

    def power_off(self) -> set[int]:
        """As a machine that loses power: link down first (so no FIN or RST gets out), then
        SIGKILL to every process in the host. Returns their pids. `heal()` brings the link back
        for a restart."""
        self.partition()
        return self.kill_all()

    def kill_all(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> set[int]:
        """Signal every process in the host's namespace; with SIGKILL, wait until they are gone."""
        pids = self.processes()
        kill_all(pids, sig)
        if sig == signal.SIGKILL and pids:
            wait_for(lambda: gone(pids), timeout, f"the processes of {self.name} to exit", interval=0.02)
        for proc in self.procs:
            if proc.pid in pids:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
        return pids


class Hosts:
    """`n` hosts, `hosts[0]` being eng1 at 10.81.0.11. Iterable and indexable."""

    def __init__(self, n: int = 2) -> None:
        if not 1 <= n <= 200:
            raise ValueError("between 1 and 200 hosts")
        self.hosts = [Host(i) for i in range(1, n + 1)]
        self.timings: dict[str, float] = {}
        self._lock: contextlib.ExitStack | None = None
        self._postgres: list[Any] = []

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __enter__(self) -> Hosts:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- up / down -----------------------------------------------------------------------

    def up(self, lock_timeout: float = 600) -> Hosts:
        """Build the hosts (after removing whatever an earlier session left). On failure,
        everything is removed again."""
        ensure_prerequisites()
        started = time.monotonic()
        self._take_lock(lock_timeout)
        try:
            self._remove()
            run("ip", "link", "add", BRIDGE, "type", "bridge")
            run("ip", "addr", "add", f"{BRIDGE_ADDR}/24", "dev", BRIDGE)
            run("ip", "link", "set", BRIDGE, "up")
            if _docker_forwarding():
                run("iptables", "-I", "DOCKER-USER", "1", *IPTABLES_RULE)
            for host in self.hosts:
                self._wire(host)
        except BaseException:
            self.down()
            raise
        self.timings["up_s"] = time.monotonic() - started
        return self

    def _take_lock(self, timeout: float) -> None:
        if self._lock is None:
            stack = contextlib.ExitStack()
            stack.enter_context(swarmlib.exclusive(timeout, LOCK_PATH, "its test hosts"))
            self._lock = stack

    def _wire(self, host: Host) -> None:
        ns = host.netns
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", host.inner)
        run("ip", "link", "set", host.veth, "master", BRIDGE, "up")
        run("ip", "link", "set", host.inner, "netns", ns)
        run("ip", "-n", ns, "addr", "add", f"{host.addr}/24", "dev", host.inner)
        run("ip", "-n", ns, "link", "set", host.inner, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")

    def down(self, lock_timeout: float = 600) -> None:
        """Remove everything: PostgreSQL servers made by `postgres()`, every process in the
        hosts' namespaces, the namespaces, links and the iptables rule. Idempotent; releases the
        lock (taken for the while when `up()` did not, so as not to pull another session's hosts
        from under it)."""
        started = time.monotonic()
        self._take_lock(lock_timeout)
        try:
            self._remove()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
        self.timings["down_s"] = time.monotonic() - started

    def _remove(self) -> None:
        for server in self._postgres:
            with contextlib.suppress(Exception):
                server.stop()
        self._postgres = []
        # Those a crashed session left (the lock makes them no live session's).
        pglib = _pglib()
        for directory in Path(tempfile.gettempdir()).glob(f"{PG_PREFIX}*"):
            pglib.PostgresServer(directory, port=1, owner=None).stop()
        names = {h.name for h in self.hosts} | set(_existing_hosts())
        hosts = [Host(int(_HOST_NAME.match(n).group(1))) for n in sorted(names)]  # type: ignore[union-attr]
        for host in hosts:
            pids = host.processes()
            kill_all(pids)
            with contextlib.suppress(RuntimeError):
                wait_for(lambda p=pids: gone(p), 10, f"the processes of {host.name} to exit", interval=0.02)
        for host in self.hosts:
            for proc in host.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            host.procs.clear()
        for host in hosts:
            run("ip", "netns", "del", host.netns, check=False)
            run("ip", "link", "del", host.veth, check=False)
        run("ip", "link", "del", BRIDGE, check=False)
        for chain in ("DOCKER-USER", "FORWARD"):
            while run("iptables", "-C", chain, *IPTABLES_RULE, check=False).returncode == 0:
                run("iptables", "-D", chain, *IPTABLES_RULE, check=False)

    def leftovers(self) -> list[str]:
        """What `down()` should have removed and is still there (empty when clean)."""
        found = [f"netns {name}" for name in _existing_hosts()]
        found += [f"PostgreSQL directory {d}" for d in Path(tempfile.gettempdir()).glob(f"{PG_PREFIX}*")]
        links = run("ip", "-o", "link", "show", check=False).stdout
        found += [f"link {name}" for name in re.findall(rf"^\d+: ({BRIDGE}|{PREFIX}\d+h)[:@]", links, re.M)]
        for chain in ("DOCKER-USER", "FORWARD"):
            if run("iptables", "-C", chain, *IPTABLES_RULE, check=False).returncode == 0:
                found.append(f"iptables rule in {chain}")
        for name in _existing_hosts():
            found += [f"process {p} in {name}: {' '.join(swarmlib.cmdline(p))[:80]}"
                      for p in processes_in(NETNS_DIR / name)]
        return found

    # --- PostgreSQL on the bridge ----------------------------------------------------------

    def postgres(self, directory: Path | str | None = None, port: int | None = None) -> Any:
        """A `pglib.PostgresServer` (not started) that listens on loopback and the bridge address;
        its URLs name the bridge address, which the root namespace and every host reach.
        `down()` stops it if the test has not."""
        pglib = _pglib()
        server = pglib.PostgresServer(directory or tempfile.mkdtemp(prefix=PG_PREFIX), port=port,
                                      host=BRIDGE_ADDR, listen=("127.0.0.1", BRIDGE_ADDR))
        self._postgres.append(server)
        return server


def _pglib() -> Any:
    tests = str(Path(__file__).resolve().parents[1])
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import pglib

    return pglib


def _existing_hosts() -> list[str]:
    """Host namespaces there now (this session's or a crashed one's)."""
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return []
    return sorted(n for n in names if _HOST_NAME.match(n))


def _docker_forwarding() -> bool:
    """Docker runs here (its DOCKER-USER chain exists): bridged traffic meets its FORWARD DROP."""
    return swarmlib.forward_chain() == "DOCKER-USER"


def ensure_prerequisites() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("test hosts need root (network namespaces, links, iptables)")
    missing = [t for t in ("ip", "nsenter", "iptables") if not shutil.which(t)]
    if missing:
        raise RuntimeError(f"missing tools: {', '.join(missing)}")


def missing() -> str | None:
    """Why no hosts can be built here (None when they can)."""
    try:
        ensure_prerequisites()
    except RuntimeError as error:
        return str(error)
    return None


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    if command == "up":
        hosts = Hosts(int(argv[1]) if len(argv) > 1 else 2)
        hosts.up()
        # Leave them (and release the lock: `down` takes it again).
        if hosts._lock is not None:
            hosts._lock.close()
        log(f"up in {hosts.timings['up_s']:.2f} s: bridge {BRIDGE} {BRIDGE_ADDR}; "
            + ", ".join(f"{h.name} {h.addr}" for h in hosts))
    elif command == "down":
        hosts = Hosts(1)
        hosts.down(lock_timeout=30)
        left = hosts.leftovers()
        if left:
            log("left behind: " + "; ".join(left))
            return 1
    elif command == "status":
        print("\n".join(Hosts(1).leftovers()) or "no hosts")
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
