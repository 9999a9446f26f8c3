"""A private, real PostgreSQL server for the tests and benchmarks of the PostgreSQL store.

    with PostgresServer(Path(tempfile.mkdtemp(prefix="engine-pg-"))) as server:
        server.url                      # postgresql://engine@127.0.0.1:PORT/engine
        server.create_database("t1")    # postgresql://engine@127.0.0.1:PORT/t1 (a fresh, empty one)

    python tests/pglib.py up DIR [PORT] [--listen ADDR,ADDR]   # start one, print its URL, leave it running
    python tests/pglib.py down DIR                             # stop it (immediate) and remove DIR
    python tests/pglib.py reap                                 # the same for servers of dead sessions

Debian's PostgreSQL 15 binaries (`make postgres` installs them) run a server of its own for each
test session, never the system cluster: `initdb -U engine --auth=trust` into `DIR/data`, then
the server with the port, the Unix socket in `DIR` and only the listen addresses asked for
(loopback by default) — what `pg_ctl start` runs, but as a child of this process, which reaps it
(see `_spawn`). PostgreSQL refuses to run as root, so as root every server command runs as
the `postgres` user (`runuser`) on a directory that user owns: `DIR` must be reachable by it (under
/tmp, say; not under pytest's root-only `tmp_path`).

Settings are those of a small test server on 2 cores, with durability left as in production:
`fsync`, `synchronous_commit` and `full_page_writes` stay on, since the store's crash tests count on
a committed write surviving a killed server. `initdb --no-sync` only skips the final flush of the
freshly made catalog, which no test depends on.

`stop()` is `pg_ctl -m immediate stop` (no shutdown checkpoint: a test server's data is thrown
away) and removes `DIR`; `kill()` is a crash (SIGKILL to the postmaster and every backend) that
keeps `DIR`, so that `start()` again recovers from the WAL as after a power cut.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PG_BIN = Path(os.environ.get("ENGINE_PG_BIN", "/usr/lib/postgresql/15/bin"))
USER = "engine"
DATABASE = "engine"
#: The system user the server runs as when this process is root.
SERVER_USER = "postgres"

SETTINGS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "128MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "64MB",
    "max_worker_processes": "4",
    "max_parallel_workers_per_gather": "0",
    "jit": "off",
    # Durability as in production (these are PostgreSQL's defaults, spelled out on purpose).
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_size": "1GB",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
    "log_connections": "off",
    "log_disconnections": "off",
}

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def missing() -> str | None:
    """Why no server can be started here (None when one can)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL 15 is not installed ({PG_BIN / tool} is missing; run `make postgres`)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]>=3.2', the `postgres` extra)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"no `{SERVER_USER}` system user to run PostgreSQL as (root cannot)"
        if not shutil.which("runuser"):
            return "runuser is missing (util-linux)"
    return None


def free_port(addresses: tuple[str, ...] = ("127.0.0.1",)) -> int:
    """A TCP port free on every one of `addresses` (at the time of asking)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = int(s.getsockname()[1])
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no port free on all of {addresses}")


def reap_orphans(parent: Path | str | None = None, prefix: str = "engine-pg-") -> list[Path]:
    """Stop and remove the servers in `parent/prefix*` (the temporary directory by default) whose
    owner has died — what a test session killed with SIGKILL left running. Servers of live
    sessions, and those started by `pglib.py up` (no owner), are left alone. Returns the
    directories removed."""
    found = []
    for directory in sorted(Path(parent or tempfile.gettempdir()).glob(f"{prefix}*")):
        try:
            owner = int((directory / "owner").read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            PostgresServer(directory, port=1, owner=None).stop()
            found.append(directory)
    return found


class PostgresServer:
    """One private PostgreSQL server in `directory` (made if missing; removed by `stop()`).

    `host` is the address URLs name; `listen` the addresses it accepts TCP connections on
    (default: `host` only). A server for network-namespace test hosts listens on loopback and on
    their bridge address, and their processes use `database_url(name, host=BRIDGE_ADDR)`."""

    def __init__(self, directory: Path | str, port: int | None = None, host: str = "127.0.0.1",
                 listen: tuple[str, ...] | list[str] | None = None,
                 settings: dict[str, str] | None = None, owner: int | None = -1) -> None:
        self.directory = Path(directory).resolve()
        self.host = host
        self.listen = tuple(listen) if listen else (host,)
        self.port = port or free_port(self.listen)
        self.settings = {**SETTINGS, **(settings or {})}
        #: Seconds taken by the last `start()`: {"initdb_s": ..., "start_s": ...}.
        self.timings: dict[str, float] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        #: The process whose death makes this server an orphan for `reap_orphans()` (default:
        #: this one; None: nobody's, as for `pglib.py up`).
        self.owner = os.getpid() if owner == -1 else owner

    # --- paths and URLs --------------------------------------------------------------------

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    @property
    def url(self) -> str:
        """The database `engine`, as user `engine` (trust: no password)."""
        return self.database_url(DATABASE)

    def database_url(self, name: str = DATABASE, host: str | None = None) -> str:
        return f"postgresql://{USER}@{host or self.host}:{self.port}/{name}"

    def log(self, tail: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def pid(self) -> int | None:
        """The postmaster's pid while its pid file is there."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    # --- life ------------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> PostgresServer:
        """initdb (only when `directory` holds no cluster yet), then start the server and wait until
        it accepts connections. On failure everything is stopped and the error carries the log."""
        try:
            self._start(timeout)
        except BaseException as error:
            text = self.log()
            with contextlib.suppress(Exception):
                self.stop()
            if isinstance(error, Exception):
                raise RuntimeError(f"PostgreSQL in {self.directory} did not start: {error}\n{text}") from error
            raise
        return self

    def _start(self, timeout: float) -> None:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        if self.running():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        os.chmod(self.directory, 0o700)
        if self.owner is not None:
            (self.directory / "owner").write_text(f"{self.owner}\n")
        if self._as_server(["test", "-w", str(self.directory)], check=False).returncode != 0:
            raise RuntimeError(f"the {SERVER_USER} user cannot write {self.directory}: its parents must "
                               "be reachable by it (choose one under /tmp)")
        started = time.monotonic()
        if not (self.data / "PG_VERSION").exists():
            self._as_server([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write("\n# tests/pglib.py\n")
                conf.writelines(f"{key} = {value}\n" for key, value in self.settings.items())
            with open(self.data / "pg_hba.conf", "a") as hba:
                # Trust on the addresses it listens on (loopback, a test bridge) and nothing else
                # reaches those.
                hba.write("host all all all trust\n")
        self.timings["initdb_s"] = time.monotonic() - started
        started = time.monotonic()
        self._spawn()
        self._wait_ready(timeout)
        self.timings["start_s"] = time.monotonic() - started
        with self.admin() as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def _spawn(self) -> None:
        """The postmaster as a child of this process (what `pg_ctl start` runs, without pg_ctl's
        detaching fork): this process reaps it, so that a killed server is gone at once and
        `start()` can follow `kill()` at once (an orphan stays a zombie until the machine's init
        reaps it, and PostgreSQL will not start while the pid in its lock file answers)."""
        args = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.directory),
                "-c", f"listen_addresses={','.join(self.listen)}"]
        user: dict[str, Any] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(args, cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True, **user)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.database_url("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as error:
                last = error
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self._proc.returncode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no connection within {timeout:.0f} s ({last})")
            time.sleep(0.05)

    def stop(self, remove: bool = True) -> None:
        """`pg_ctl -m immediate stop` (when running), then remove `directory` (unless `remove` is
        False). Idempotent."""
        if self.running():
            self._as_server([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
                             "stop"], check=False)
        # Should pg_ctl have failed: nothing of the server may outlive this.
        self._kill_tree()
        if remove:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster and every backend, at once. The data stays;
        `start()` afterwards recovers from the WAL."""
        self._kill_tree()

    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        pid = self.pid()
        return pid is not None and _alive(pid) and "postgres" in _cmdline(pid)

    def _kill_tree(self) -> None:
        pid = self._proc.pid if self._proc is not None else self.pid()
        if pid is not None and _alive(pid) and "postgres" in _cmdline(pid):
            pids = _tree(pid)
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while any(_alive(p) for p in pids) and time.monotonic() < deadline:
                time.sleep(0.02)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
            self._proc = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- databases -------------------------------------------------------------------------

    def admin(self) -> Any:
        """An autocommit connection to the `postgres` database (a context manager)."""
        import psycopg

        return psycopg.connect(self.database_url("postgres"), autocommit=True, connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A new, empty database `name` (lower-case letters, digits, `_`); returns its URL."""
        if not _NAME.match(name):
            raise ValueError(f"not a database name this accepts: {name!r}")
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, closing any connection still open to it."""
        if not _NAME.match(name):
            raise ValueError(f"not a database name this accepts: {name!r}")
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # --- running as the server's user ------------------------------------------------------

    def _as_server(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            args = ["runuser", "-u", SERVER_USER, "--", *args]
        # The working directory too must be one the server's user can enter.
        proc = subprocess.run(args, cwd=self.directory, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(f"`{' '.join(args)}` failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        children.setdefault(int(stat[stat.rfind(")") + 2:].split()[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "up":
        listen: tuple[str, ...] = ("127.0.0.1",)
        rest = list(argv[2:])
        if "--listen" in rest:
            at = rest.index("--listen")
            listen = tuple(a for a in rest[at + 1].split(",") if a)
            del rest[at:at + 2]
        port = int(rest[0]) if rest else None
        server = PostgresServer(argv[1], port=port, host=listen[0], listen=listen, owner=None).start()
        print(server.url)
        print(f"pglib: up in {server.timings['initdb_s'] + server.timings['start_s']:.2f} s "
              f"(initdb {server.timings['initdb_s']:.2f} s, start {server.timings['start_s']:.2f} s); "
              f"log {server.log_path}", file=sys.stderr)
        return 0
    if len(argv) == 2 and argv[0] == "down":
        PostgresServer(argv[1], port=1, owner=None).stop()
        return 0
    if argv == ["reap"]:
        for directory in reap_orphans():
            print(f"pglib: stopped and removed {directory}", file=sys.stderr)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
