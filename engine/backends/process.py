"""The process backend: each executor is a local OS process (`python -m engine.executor`).

For machines without a Docker engine, and for fast local development. The executor is the same
program the docker backend runs in a container, spoken to over the same gRPC protocol; what the
process backend cannot give is isolation: `cpu`, `memory` and `image` are not enforced (the
docker backend enforces them), and every executor shares this machine's Python environment.

An executor is told its engine's pid (`--parent-pid`) and ends, with every process of its group,
within about a second of that process dying, even mid-call (`engine.executor.lifetime`).

Executors are forked from a template process that has already imported them
(`engine.executor.forkserver`, made at the first start and ended by `close`): a start costs
milliseconds of CPU instead of an interpreter's start and 0.2-0.3 s of imports. Each is still
its own session and process group with its own environment, working directory and log. An
executor whose environment changes what an interpreter reads as it starts (`PYTHON*`, `LD_*`,
...) is spawned as `python -m engine.executor`, as is every executor when the template cannot
be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.errors import InfrastructureError
from engine.executor.blobs import EXCHANGE_ENV
from engine.executor.forkserver import Forked, ForkServer, ForkServerGone
from engine.executor.lifetime import EXECUTOR_ENV_DEFAULTS, blank_env, executor_env
from engine.procstat import alive
from engine.timeouts import within


class ProcessBackend(Backend):
    name = "process"
    callback_host = "127.0.0.1"
    callback_bind_host = "127.0.0.1"
    shares_filesystem = True

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="engine-executors-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._procs: dict[str, subprocess.Popen[bytes] | Forked] = {}
        self._tmp: dict[int, Path] = {}
        self._counter = 0
        self._executor_env = executor_env()
        self._template: ForkServer | None = None
        self._template_lock = threading.Lock()

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        self._counter += 1
        ident = f"{spec.function.replace('.', '_')}-{os.getpid()}-{self._counter}"
        port_file = self.log_dir / f"{ident}.port"
        log_path = self.log_dir / f"{ident}.log"
        # Its own temporary directory (the unpacked code, and whatever the function writes
        # there), removed when it stops: a killed executor cleans nothing up itself.
        tmp = self.log_dir / f"{ident}.tmp"
        tmp.mkdir()
        env = {**EXECUTOR_ENV_DEFAULTS, **os.environ, **spec.env, **self._executor_env, **blank_env(spec.function),
               "PYTHONUNBUFFERED": "1", "TMPDIR": str(tmp)}
        env.pop(EXCHANGE_ENV, None)
        if spec.exchange_dir:
            env[EXCHANGE_ENV] = spec.exchange_dir
        argv = ["--listen", "127.0.0.1:0", "--port-file", str(port_file), "--parent-pid", str(os.getpid())]
        forking = asyncio.ensure_future(self._fork(argv, env, log_path))
        try:
            proc: subprocess.Popen[bytes] | Forked | None = await asyncio.shield(forking)
        except asyncio.CancelledError:
            # The template forks it all the same: stop it once it has.
            forking.add_done_callback(_kill_when_forked)
            raise
        if proc is None:
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "engine.executor", *argv],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,  # Ctrl-C in the terminal reaches the engine, not each executor
                )
        self._procs[ident] = proc
        self._tmp[proc.pid] = tmp
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if proc.poll() is not None:
                self._procs.pop(ident, None)
                raise InfrastructureError(
                    f"executor for {spec.function} exited at start-up (code {proc.returncode}):\n"
                    + _tail(log_path)
                )
            if time.monotonic() > deadline:
                await self._stop(proc)
                raise InfrastructureError(f"executor for {spec.function} did not start within 60 s")
            await asyncio.sleep(0.01)
        port = int(port_file.read_text())
        port_file.unlink(missing_ok=True)
        return ExecutorHandle(id=ident, address=f"127.0.0.1:{port}", function=spec.function, ref=proc)

    def start_template(self) -> ForkServer | None:
        """The running template, started now if there is none (it imports in a process of its
        own: `engine run`'s early start calls this first). None when it cannot be started."""
        with self._template_lock:
            if self._template is None or not self._template.alive:
                template_env = {**EXECUTOR_ENV_DEFAULTS, **os.environ, **self._executor_env,
                                "PYTHONUNBUFFERED": "1"}
                try:
                    self._template = ForkServer(template_env, self.log_dir / f"template-{os.getpid()}.stderr")
                except OSError:
                    return None
            return self._template

    async def _fork(self, argv: list[str], env: dict[str, str], log_path: Path) -> Forked | None:
        """The executor forked from the template (made now if there is none), or None when it
        must be spawned: its environment differs from the template's where a fork cannot
        apply it, or the template is gone or cannot start."""
        def fork() -> Forked | None:
            template = self.start_template()
            if template is None:
                return None
            if not template.can_fork(env):
                return None
            try:
                return template.fork([*argv, "--template-pid", str(template.pid)], env, os.getcwd(),
                                     str(log_path))
            except (ForkServerGone, FileNotFoundError):  # no template; or no working directory
                return None

        return await asyncio.to_thread(fork)

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        proc = self._procs.pop(handle.id, None)
        if proc is not None:
            await self._stop(proc)

    async def _stop(self, proc: subprocess.Popen[bytes] | Forked) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                # A forked executor stopped before its `setsid`: no group of its own yet.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        tmp = self._tmp.pop(proc.pid, None)
        if tmp is not None:
            await asyncio.to_thread(remove_tree, tmp)

    async def cleanup_orphans(self) -> int:
        """Temporary directories of executors whose engine was killed (nothing else is left:
        the executors themselves exit with their engine)."""
        removed = 0
        for tmp in self.log_dir.glob("*.tmp"):
            pid = tmp.name.rsplit("-", 2)[-2] if tmp.name.count("-") >= 2 else ""
            if pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid)):
                await asyncio.to_thread(remove_tree, tmp)
                removed += 1
        return removed

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        proc: subprocess.Popen[bytes] | Forked = handle.ref  # type: ignore[assignment]
        try:
            code = await within(2.0, asyncio.to_thread(proc.wait))
        except TimeoutError:
            return ExitInfo(exited=False, detail="executor still running but unreachable")
        detail = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return ExitInfo(exited=True, exit_code=code, detail=detail)

    async def logs(self, handle: ExecutorHandle) -> str:
        return _tail(self.log_dir / f"{handle.id}.log")

    async def close(self) -> None:
        procs, self._procs = list(self._procs.values()), {}
        await asyncio.gather(*(self._stop(p) for p in procs))
        with self._template_lock:
            template, self._template = self._template, None
        if template is not None:
            # `engine run` ending: its executors are stopped; the template ends on its own.
            await asyncio.to_thread(template.close, not self.close_without_waiting)


def _kill_when_forked(forking: asyncio.Future[Forked | None]) -> None:
    forked = None if forking.cancelled() or forking.exception() else forking.result()
    if forked is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(forked.pid, signal.SIGKILL)


def remove_tree(path: Path) -> None:
    """`shutil.rmtree`, read-only directories included (the executor makes its code read-only)."""
    for dirpath, _, _ in os.walk(path):
        os.chmod(dirpath, 0o755)
    shutil.rmtree(path, ignore_errors=True)




def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
