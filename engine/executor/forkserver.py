"""Local executors forked from a template process that has already imported them.

A local executor (`engine.backends.process`) used to be a fresh `python -m engine.executor`:
the interpreter and the executor's imports (gRPC, protobuf, the SDK) cost 0.2-0.3 s of CPU
each, so ten executors starting at once on two cores took a second and a half of the ramp by
that alone. Here one process, the *template*, pays the imports once; each executor is then a
`fork` of it, up in milliseconds, with the memory of those modules shared copy-on-write.

The template (`python -m engine.executor.forkserver --parent-pid ENGINE_PID`, started by
`ForkServer`) imports `engine.executor.server` with gRPC's fork handlers off (as
`engine.executor` does) and never creates a gRPC object or a thread: gRPC's core is not
fork-safe once it has started (see "Forking inside a call" in `engine.executor.server`), and a
fork copies only the forking thread, so a lock another thread held would stay held in the
child. It reads one request a line on its stdin (JSON: the executor's arguments, environment,
working directory and log file) and forks; the child becomes exactly what a spawned executor
is, before the executor's own code runs:

- its own session and process group (`setsid`, as `start_new_session` gave a spawned one), so
  that stopping it kills its group, and Ctrl-C in the terminal does not reach it;
- stdin from /dev/null, stdout and stderr to its log file, no other descriptor of the template;
- the environment it would have been spawned with (`os.environ` replaced), default signal
  handling, its own working directory and `sys.argv`.

The template writes `{"id": N, "pid": PID}` back for each request, and `{"exit": PID, "code": C}`
when a child ends (it is their parent and reaps them; `C` as `Popen.returncode`: negative for
a signal). `ForkServer` turns these into `Forked` objects that behave as the `Popen` of a
spawned executor does for the backend (`pid`, `poll`, `wait`).

Ending: a forked executor is the engine's grandchild. It is given `--parent-pid ENGINE
--template-pid TEMPLATE` and checks both links (its parent is the template, the template's
parent the engine), so it ends within about a second of either dying, even mid-call, and
says so in its log (`engine.executor.lifetime`). The template ends when its engine does: its
stdin reaches end of file (the engine's end of the pipe closed, by `close` or by the kernel
when the engine died, `kill -9` included) or its parent is no longer the engine, and then
outlives its executors by up to `GRACE_S` (killing any still there after it), so that they see
the engine gone rather than the template. A template that dies while its engine lives has its
executors killed by `ForkServer` (their process groups), and the next start makes a new one.

In `ps` the template is named `engine-template` (`/proc/PID/comm`; its command line, which
every executor forked from it shares, is `python -m engine.executor.forkserver --parent-pid
ENGINE`); an executor takes the interpreter's name back.

What a fork cannot change: whatever Python reads as the interpreter starts. An executor whose
environment differs from the template's in a variable the interpreter or the C library reads
at start (`PYTHON*`, `LD_*`, `GLIBC_*`, `MALLOC_*`) is spawned as before
(`ForkServer.can_fork`). What every executor forked from one template shares is what the
interpreter chose as it started: its string hash seed, for one (spawned executors each drew
their own); `random` is reseeded in each child by Python itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.procstat import alive

#: Prefixes of environment variables read as a process starts, which a fork would not apply.
STARTUP_PREFIXES = ("PYTHON", "LD_", "GLIBC_", "MALLOC_")

#: How often the template looks at its parent (besides its stdin's end of file).
POLL_S = 0.25

#: How long the template, its engine gone, waits for its executors to end by themselves.
GRACE_S = 5.0

#: The template's process name (`/proc/PID/comm`, at most 15 characters).
TEMPLATE_NAME = "engine-template"


def startup_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` that a process reads only as it starts."""
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES)}


# --- the engine's side --------------------------------------------------------------------


class Forked:
    """An executor forked by the template: what the process backend uses of a `Popen`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._ended = threading.Event()

    def _end(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
        self._ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(f"executor {self.pid}", timeout or 0)
        assert self.returncode is not None
        return self.returncode


class ForkServerGone(Exception):
    """The template ended (or could not start): spawn the executor instead."""


class ForkServer:
    """The engine's handle on one template process. Thread-safe: `fork` may be called from any
    thread (the scheduler's loop through `asyncio.to_thread`, `engine run`'s early start)."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = dict(env)
        self._startup = startup_env(self.env)
        with open(log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "engine.executor.forkserver", "--parent-pid", str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.env,
                start_new_session=True,  # Ctrl-C reaches the engine, which stops it
            )
        self.pid = self._proc.pid
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, list[Any]] = {}  # request id -> [Event, reply]
        self._children: dict[int, Forked] = {}  # running, by pid
        self.alive = True
        self._reader = threading.Thread(target=self._read, name="engine-forkserver", daemon=True)
        self._reader.start()

    def can_fork(self, env: Mapping[str, str]) -> bool:
        """Whether an executor with environment `env` can be forked from this template."""
        return self.alive and startup_env(env) == self._startup

    def fork(self, argv: list[str], env: Mapping[str, str], cwd: str, log: str,
             timeout: float = 60.0) -> Forked:
        """Fork an executor (`python -m engine.executor ARGV`). Blocking; raises
        `ForkServerGone` when the template has ended or does not answer within `timeout`."""
        done = threading.Event()
        with self._lock:
            if not self.alive:
                raise ForkServerGone("the executor template has ended")
            self._next += 1
            ident = self._next
            self._waiting[ident] = [done, None]
            line = json.dumps({"id": ident, "argv": argv, "env": dict(env), "cwd": cwd, "log": log})
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except OSError as exc:
                self._waiting.pop(ident, None)
                raise ForkServerGone(f"the executor template has ended: {exc}") from None
        if not done.wait(timeout):
            with self._lock:
                self._waiting.pop(ident, None)
            raise ForkServerGone(f"the executor template did not answer within {timeout:g} s")
        reply = self._waiting.pop(ident)[1]
        if not isinstance(reply, Forked):
            raise ForkServerGone(reply or "the executor template has ended")
        return reply

    def _read(self) -> None:
        """Thread body: the template's replies and exit reports, until its stdout closes. A
        child's exit is always reported after its fork's reply (the template is one thread)."""
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            message = json.loads(raw)
            with self._lock:
                if "exit" in message:
                    ended = self._children.pop(message["exit"], None)
                    if ended is not None:
                        ended._end(message["code"])
                    continue
                reply: Any = message.get("error") or "the executor template gave no pid"
                if "pid" in message:
                    reply = self._children[message["pid"]] = Forked(message["pid"])
                waiting = self._waiting.get(message["id"])
                if waiting is not None:
                    waiting[1] = reply
                    waiting[0].set()
        # The template ended. Its executors end by themselves (their parent is gone); make sure.
        with self._lock:
            self.alive = False
            children, self._children = list(self._children.values()), {}
            for waiting in self._waiting.values():
                waiting[0].set()
        for child in children:
            _kill_group(child.pid)
        # No longer our grandchildren (adopted by init), so not waited for: watched until gone.
        deadline = time.monotonic() + 5
        for child in children:
            while alive(child.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            child._end(-signal.SIGKILL)
        self._proc.wait()

    def close(self, wait: bool = True) -> None:
        """End the template (it kills what it still runs) and, with `wait`, wait for it."""
        with self._lock:
            self.alive = False
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.write(b'{"close": true}\n')
                    self._proc.stdin.flush()
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        if not wait:
            return
        self._reader.join(timeout=10)
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# --- the template -------------------------------------------------------------------------


def _set_name(name: str) -> None:
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(name)
    except OSError:
        pass


def _child(request: dict[str, Any], name: str) -> None:
    """In the forked child: become the executor the request describes. Never returns."""
    code = 1
    try:
        os.setsid()
        _set_name(name)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as `Popen(close_fds=True)`: the pipes too
        os.environ.clear()
        os.environ.update(request["env"])
        # `engine.executor` set it before grpc was imported (here, in the template); processes
        # the executor's calls start inherit it, as from a spawned executor.
        os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
        import tempfile

        tempfile.tempdir = None  # TMPDIR is the executor's own
        os.chdir(request["cwd"])
        sys.argv = ["engine.executor", *request["argv"]]
        from engine.executor.__main__ import main

        main()  # serves; ends the process with os._exit
    except SystemExit as exc:
        if isinstance(exc.code, int):
            code = exc.code
        elif exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - say why in the executor's log, and end
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _serve_template(parent_pid: int, name: str) -> None:
    """The template's loop: fork on each request, report exits, end with the engine (its
    executors end by themselves then: their `Lifetime` sees the template gone)."""
    import select
    read_fd, reply_fd = 0, 1
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through wake_w
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    children: set[int] = set()
    pending = b""
    closing = False

    def reply(message: dict[str, Any]) -> None:
        with contextlib.suppress(BrokenPipeError):
            os.write(reply_fd, json.dumps(message).encode() + b"\n")

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            reply({"exit": pid, "code": os.waitstatus_to_exitcode(status)})

    try:
        while os.getppid() == parent_pid:
            ready, _, _ = select.select([read_fd, wake_r], [], [], POLL_S)
            if wake_r in ready:
                os.read(wake_r, 4096)
            reap()
            if read_fd not in ready:
                continue
            data = os.read(read_fd, 65536)
            if not data:
                break  # the engine died (or closed its end without a word)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                if request.get("close"):
                    closing = True
                    break
                try:
                    pid = os.fork()
                except OSError as exc:
                    reply({"id": request["id"], "error": f"fork failed: {exc}"})
                    continue
                if pid == 0:
                    _child(request, name)
                children.add(pid)
                reply({"id": request["id"], "pid": pid})
            if closing:
                break
    except BrokenPipeError:
        pass  # the engine is gone
    # Unless closed by its engine: outlive the executors, briefly, so that they see that the
    # engine is gone (the template's parent changed), say so in their logs and end with their
    # process groups. Any still there after GRACE_S are killed, with their groups.
    deadline = time.monotonic() + (0 if closing else GRACE_S)
    while children and time.monotonic() < deadline:
        select.select([wake_r], [], [], POLL_S)
        reap()
    for pid in children:
        _kill_group(pid)


def main() -> None:
    try:
        with open("/proc/self/comm") as f:
            name = f.read().strip()  # the interpreter's, which each executor takes back
    except OSError:
        name = "python3"
    _set_name(TEMPLATE_NAME)
    # As `engine.executor` does, before grpc is imported: a call may fork (engine.executor.server).
    os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.executor.forkserver")
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args()
    import engine.executor.__main__  # noqa: F401 - what every executor imports, once, here

    _serve_template(args.parent_pid, name)
    # Nothing to clean up, and a normal exit would tear down every module imported above first
    # (tens of milliseconds that the engine's `close` would wait for).
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
