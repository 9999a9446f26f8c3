"""A real `engine server` process for the server and dashboard tests, and a small HTTP client.

`ServerProcess` starts `python -m engine.cli server` on a free loopback port (the process
backend unless told otherwise), waits (with a deadline) until `/healthz` answers, and stops it with SIGTERM — or
`kill -9`, for the crash tests — and then makes sure that no executor it started is left:
process executors watch their parent and exit with it, but one busy in a call may outlive it
for a moment, so they are looked up by the exact `--parent-pid` the server gave them and
killed by pid.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine.executor.forkserver import TEMPLATE_NAME

REPO = Path(__file__).resolve().parents[2]
SERVER_APPS = Path(__file__).resolve().parent / "server_apps"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, state_dir: Path, *, port: int | None = None, token: str | None = None,
                 extra: tuple[str, ...] = (), log_path: Path | None = None, backend: str = "process",
                 env: dict[str, str] | None = None, host: Any = None, store: str | None = None) -> None:
        """`host`: a `hostlib.Host` to run in (its network namespace; the server listens on the
        host's address and needs a token); `store`: the store URL (default SQLite in `state_dir`)."""
        self.state_dir = state_dir
        self.backend = backend
        self.env = env
        self.host = host
        self.store = store
        self.address = host.addr if host is not None else "127.0.0.1"
        self.port = port or free_port()
        self.token = token
        self.extra = extra
        self.log_path = log_path or state_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = {**(self.env or os.environ), "ENGINE_BACKEND": self.backend, "PYTHONUNBUFFERED": "1"}
        env.pop("ENGINE_TOKEN", None)
        env.pop("ENGINE_SERVER", None)
        args = [sys.executable, "-m", "engine.cli", "server", "--port", str(self.port),
                "--state-dir", str(self.state_dir), "--backend", self.backend, *self.extra]
        if self.token:
            args += ["--token", self.token]
        if self.store:
            args += ["--store", self.store]
        if self.host is not None:
            args += ["--host", self.address]
            args = self.host.command(args)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=env, cwd=REPO)
        log.close()
        self.pids.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log()}")
            try:
                status, _ = self.request("GET", "/healthz", timeout=2)
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a deadline; then any executor left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._reap_executors()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def _reap_executors(self) -> None:
        marks = {f"--parent-pid\x00{pid}\x00" for pid in self.pids}
        deadline = time.monotonic() + 5
        while True:
            left = [pid for pid, cmd in _processes() if any(m in cmd for m in marks)]
            if not left:
                return
            if time.monotonic() > deadline:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                return
            time.sleep(0.1)

    # --- HTTP ------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None, token: str | None | bool = True,
                timeout: float = 30) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        try:
            send = dict(headers or {})
            if token is True and self.token:
                send["Authorization"] = f"Bearer {self.token}"
            elif isinstance(token, str):
                send["Authorization"] = f"Bearer {token}"
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=send)
            response = conn.getresponse()
            payload = response.read()
            if "json" in (response.getheader("Content-Type") or ""):
                return response.status, json.loads(payload)
            return response.status, payload.decode(errors="replace")
        finally:
            conn.close()

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = self.request(method, path, body, **kw)
        assert status < 300, (status, data)
        return data

    def deploy(self, file: Path) -> dict[str, Any]:
        env = {**os.environ, "ENGINE_SERVER": self.url}
        if self.token:
            env["ENGINE_TOKEN"] = self.token
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "deploy", str(file), "--json"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def submit(self, app: str, body: Any, headers: dict[str, str] | None = None) -> str:
        status, data = self.request("POST", f"/v1/applications/{app}/runs", body, headers=headers)
        assert status == 202, (status, data)
        return data["run_id"]  # type: ignore[no-any-return]

    def wait(self, run_id: str, timeout: float = 60.0,
             statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.ok("GET", f"/v1/runs/{run_id}")
            if run["status"] in statuses:
                return run  # type: ignore[no-any-return]
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s")
            time.sleep(0.05)


async def submit_burst(servers: list[ServerProcess], n: int, on_accept: Any, deadline: float,
                       app: str = "inc") -> dict[int, tuple[int, dict[str, Any]]]:
    """n concurrent POSTs of `app` (input i), each on its own connection with its own
    Idempotency-Key, alternating between `servers`; one whose connection fails or that answers
    5xx (its server is down) is retried with the same key, at the next server."""
    results: dict[int, tuple[int, dict[str, Any]]] = {}

    async def one(i: int) -> None:
        body = json.dumps(i).encode()
        attempt = i
        while time.monotonic() < deadline:
            server = servers[attempt % len(servers)]
            auth = f"Authorization: Bearer {server.token}\r\n" if server.token else ""
            request = (f"POST /v1/applications/{app}/runs HTTP/1.1\r\nHost: {server.address}\r\n{auth}"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                       f"Idempotency-Key: burst-{i}\r\nConnection: close\r\n\r\n").encode() + body
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(server.address, server.port), 5)
                try:
                    writer.write(request)
                    await writer.drain()
                    raw = await asyncio.wait_for(reader.read(), 30)
                finally:
                    writer.close()
                head, _, payload = raw.partition(b"\r\n\r\n")
                if not head:
                    raise ConnectionError("no answer")
                status = int(head.split(b" ", 2)[1])
                if status >= 500:
                    raise ConnectionError(f"answered {status}")
                results[i] = (status, json.loads(payload))
                on_accept(i)
                return
            except (OSError, asyncio.TimeoutError, ValueError):
                attempt += 1
                await asyncio.sleep(0.1)
        raise AssertionError(f"submission {i} never answered")

    await asyncio.gather(*(one(i) for i in range(n)))
    return results


def check_burst(server: ServerProcess, results: dict[int, tuple[int, dict[str, Any]]], n: int,
                timeout: float = 300, app: str = "inc") -> None:
    """Every submission accepted (none refused), one run per key, and every run finished and
    succeeded with its input plus one — as `server` reports them."""
    assert sorted(results) == list(range(n))
    assert {status for status, _ in results.values()} == {202}  # every one accepted, none refused
    ids = {i: body["run_id"] for i, (_, body) in results.items()}
    assert len(set(ids.values())) == n  # one run per key, even when retried (at any server)

    def listed() -> dict[str, Any]:
        return server.ok("GET", f"/v1/runs?application={app}&limit=1000")  # type: ignore[no-any-return]

    def all_done() -> bool:
        runs = listed()
        return runs["total"] == n and all(r["status"] in ("succeeded", "failed") for r in runs["runs"])

    poll(all_done, timeout, interval=0.5, what="every run of the burst to finish")
    runs = {r["run_id"]: r for r in listed()["runs"]}
    assert set(runs) == set(ids.values())  # nothing lost, nothing extra
    assert all(r["status"] == "succeeded" for r in runs.values())
    for i in range(0, n, max(1, n // 20)):
        assert server.ok("GET", f"/v1/runs/{ids[i]}")["result"] == i + 1


def lease_of(state_dir: Path, run_id: str) -> Any:
    """The run's lease as the store in `state_dir` (or ENGINE_STORE) sees it now."""
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        return store.lease_of(run_id)
    finally:
        store.close()


def wait_for_lease_to_run_out(state_dir: Path, run_id: str, timeout: float = 30.0) -> None:
    """A killed engine's lease holds its run for ENGINE_LEASE_TTL after its last renewal;
    until then `engine resume` refuses (one line naming the owner)."""
    poll(lambda: not lease_of(state_dir, run_id).live, timeout, interval=0.1,
         what="the killed engine's lease to run out")


def executors_of(engine_pid: int) -> list[int]:
    """Live executor processes that the engine `engine_pid` started, found by the exact
    `--parent-pid` it gave them (a zombie is not listed: it has exited). Executors forked from
    the engine's template (`engine.executor.forkserver`) share its command line; the template
    itself, named `engine-template`, is not listed."""
    mark = f"--parent-pid\x00{engine_pid}\x00"
    found = []
    for pid, cmd in _processes():
        if "engine.executor" not in cmd or mark not in cmd:
            continue
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if state not in ("Z", "X") and name != TEMPLATE_NAME:
            found.append(pid)
    return found


def template_of(engine_pid: int) -> int | None:
    """The live executor template (`engine.executor.forkserver`) of the engine `engine_pid`."""
    mark = f"--parent-pid\x00{engine_pid}\x00"
    for pid, cmd in _processes():
        if "engine.executor.forkserver" in cmd and mark in cmd:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == TEMPLATE_NAME:
                    return pid
            except OSError:
                continue
    return None


def _processes() -> list[tuple[int, str]]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            continue
        found.append((int(entry), cmd + "\x00"))
    return found


def poll(condition: Any, timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
