"""Start-up and shutdown of `engine server`.

One process, one asyncio loop: the scheduler (and its gRPC callback service), the HTTP server
(aiohttp's) and every handler share it (see `web.py` for why). Start-up order matters:

1. refuse to listen beyond loopback without a token;
2. lock the state directory (`server.lock`, an flock released by the kernel even on
   `kill -9`): it caches deployed code and holds process executors' logs, so one server
   each. Servers on one store (`--store postgresql://…`) each have their own state directory;
3. open the store (`--store`, `ENGINE_STORE`, `store:` in the config; default SQLite in the
   state directory) and load every deployed application (the latest version of each; older
   ones on demand, from the store);
4. start the backend and the scheduler (which removes executors an earlier, killed server
   left behind), then bind the HTTP port;
5. recover, and keep recovering (`ControlPlane.recover`): take over the runs whose lease ran
   out (a server that died, this one's earlier self included), start queued runs while there
   is room.

SIGTERM or SIGINT stops it cleanly: the listener closes, every executor is stopped, and the
leases of runs in flight are released, so another server on the store (or the next start)
takes them over at once and resumes them from their checkpoints. A `kill -9` leaves the same
state, except that the leases run out by themselves (`ENGINE_LEASE_TTL`, 10 s) and executors
stop without a clean stop (process executors exit with their parent; containers stop when
their scheduler's connection stays gone, and the docker backend removes leftovers at the next
start).

Logs are structured: one JSON object per line on stderr (`ts`, `level`, `logger`, `msg`, and
the event's fields such as `run_id`), aiohttp's included (a request it cannot parse is one
warning line, `web.ProtocolErrors`).
"""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.app import MAX_CODE_BYTES
from engine.config import load_config
from engine.errors import SDKUsageError

log = logging.getLogger("engine.server")

DEFAULT_PORT = 8900
DEFAULT_MAX_CONCURRENT_RUNS = 16


@dataclass
class ServerOptions:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    config_path: Path | None = None
    backend: str | None = None
    token: str | None = None
    max_concurrent_runs: int | None = None


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                                "logger": record.name, "msg": record.getMessage()}
        data.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(options: ServerOptions) -> int:
    """Run the server until SIGTERM/SIGINT. Raises `SDKUsageError` for a bad setup."""
    if not options.token and not is_loopback(options.host):
        raise SDKUsageError(
            f"listening on {options.host} exposes the API beyond this machine: pass --token TOKEN "
            "(or set ENGINE_TOKEN); clients then send `Authorization: Bearer TOKEN`")
    config = load_config(options.config_path)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    for name in ("engine", "aiohttp"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    from engine.server.web import ProtocolErrors

    logging.getLogger("aiohttp.server").addFilter(ProtocolErrors())
    asyncio.run(_serve(options, config))
    return 0


def _lock(state_dir: Path) -> int:
    path = state_dir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SDKUsageError(
            f"another engine server (pid {holder}) is using {state_dir}: stop it, or pass another "
            "--state-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


async def _serve(options: ServerOptions, config: Any) -> None:
    from engine.runner import choose_backend, make_backend
    from engine.scheduler import Scheduler
    from engine.scheduler.scheduler import default_max_executors
    from engine.server.api import API
    from engine.server.control import ControlPlane, CountingBackend
    from engine.server.deployments import Deployments
    from engine.server.metrics import ServerMetrics
    from engine.server.web import Listener
    from engine.store import open_store, store_url

    state_dir = Path(options.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(state_dir)
    backend_name, fallback = choose_backend(options.backend or config.backend, None)
    if fallback:
        print(f"engine: {fallback}", file=sys.stderr, flush=True)
    url = store_url(state_dir, os.environ.get("ENGINE_STORE") or config.store)
    store = open_store(url)
    reader = open_store(url)
    deployments = Deployments(state_dir, store)
    for problem in deployments.scan():
        log.warning("deployment not loaded", extra={"fields": {"problem": problem}})

    def say(text: str) -> None:
        print(f"engine: {text}", file=sys.stderr, flush=True)

    metrics = ServerMetrics()
    inner = await asyncio.to_thread(make_backend, backend_name, state_dir, None, say, config)
    backend = CountingBackend(inner, metrics)
    idle = config.idle_timeout if config.idle_timeout is not None else 10.0
    scheduler = Scheduler(store, backend, max_executors=config.max_executors or default_max_executors(),
                          idle_timeout=idle, warm_executors=config.warm_executors)
    max_runs = options.max_concurrent_runs or config.max_concurrent_runs or DEFAULT_MAX_CONCURRENT_RUNS
    control = ControlPlane(store=store, reader=reader, scheduler=scheduler, deployments=deployments,
                           max_concurrent_runs=max_runs, metrics=metrics, backend_name=backend_name)
    server = Listener(API(control, metrics, options.token, max_body=MAX_CODE_BYTES + (1 << 20)).app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await scheduler.start()
        try:
            port = await server.start(options.host, options.port)
        except OSError as exc:
            raise SDKUsageError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
        host = f"[{options.host}]" if ":" in options.host else options.host
        url = f"http://{host}:{port}"
        # Functions calling run_remote_application reach this server (process backend: the
        # executors inherit this environment).
        os.environ.setdefault("ENGINE_SERVER", url)
        if options.token:
            os.environ.setdefault("ENGINE_TOKEN", options.token)
        # Once ENGINE_SERVER is set: blank process executors take this environment with them.
        scheduler.start_warm_pool()
        (state_dir / "server.json").write_text(json.dumps({"url": url, "pid": os.getpid()}))
        log.info("serving", extra={"fields": {"url": url, "backend": backend_name, "state_dir": str(state_dir),
                                              "max_concurrent_runs": max_runs, "auth": bool(options.token)}})
        print(f"engine: serving {url}  (dashboard: {url}/  API: {url}/v1  OpenAPI: {url}/openapi.json)",
              file=sys.stderr, flush=True)
        control.recover()
        await stop.wait()
        log.info("stopping: runs in flight are released, for the next driver",
                 extra={"fields": {"running": len(control.active)}})
    finally:
        control.hub.close()  # event streams end, so that closing the listener need not wait for them
        await server.close()
        await control.close()
        store.close()
        reader.close()
        (state_dir / "server.json").unlink(missing_ok=True)
        os.close(lock_fd)
