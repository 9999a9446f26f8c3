"""The scheduler closing (the engine stopping: SIGTERM to `engine server`, the end of `engine
run`) while executors are still starting: each start is cancelled and stops what it started, and
no call fails for it — the stop is not the run's fault, and the run stays resumable."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from engine import wire
from engine.app import load_app
from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.scheduler.scheduler import Scheduler
from engine.store import open_store, store_url
from engine.wire.v1 import engine_pb2 as pb

APPS = Path(__file__).parent / "apps"


class HangingStarts(Backend):
    """Executors whose start never completes: `start_executor` returns the handle of a listener
    that accepts connections and never answers, so `Initialize` waits (until its 120 s timeout)."""

    name = "hanging"

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.started: list[ExecutorHandle] = []
        self.stopped: list[ExecutorHandle] = []

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        port = self.listener.getsockname()[1]
        handle = ExecutorHandle(id=f"h{len(self.started)}", address=f"127.0.0.1:{port}",
                                function=spec.function)
        self.started.append(handle)
        return handle

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        self.stopped.append(handle)

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        return ExitInfo(exited=False)

    async def close(self) -> None:
        self.listener.close()


def test_closing_while_executors_start_fails_nothing_and_stops_them(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(APPS)
    app = load_app(f"{APPS / 'app_graph.py'}:fan")
    store = open_store(store_url(tmp_path / "state"))
    backend = HangingStarts()

    async def scenario() -> str:
        scheduler = Scheduler(store, backend)
        await scheduler.start()
        args = pb.Arguments()
        args.kwargs["n"].value.data = wire.dumps(3)
        args.kwargs["log"].value.data = wire.dumps(str(tmp_path / "log"))
        run = scheduler.submit_run(app, wire.dumps({"n": 3}), args)
        for _ in range(100):  # until an executor start is in flight
            if backend.started:
                break
            await asyncio.sleep(0.01)
        assert backend.started, "no executor start began"
        await asyncio.sleep(0.2)  # its Initialize is waiting on the silent listener
        await scheduler.close()
        return run.run_id

    run_id = asyncio.run(scenario())
    assert sorted(h.id for h in backend.stopped) == sorted(h.id for h in backend.started)
    calls = store.load_calls(run_id)
    assert calls and all(c.status != "failed" and c.error_message is None for c in calls), calls
    assert store.get_run(run_id).status == "running"  # resumable: nothing recorded an end
    store.close()
