"""Process-backend executors forked from a template (`engine.executor.forkserver`).

A forked executor must be what a spawned `python -m engine.executor` was: its own session and
process group, its own environment (the function's secrets, its TMPDIR), stdin from /dev/null,
gRPC's fork handlers off. An executor whose environment changes what an interpreter reads as it
starts is spawned. A template that dies takes its executors with it, and the next start makes
a new one; `close` leaves nothing running. (That nothing is left after `kill -9` of the engine,
the template included: `test_orphans.py`.)

Real `engine run` processes, a real template, real executors over real gRPC.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import APPS_DIR
from serverlib import template_of
from test_engine_failures import alive

from engine.backends.base import ExecutorSpec
from engine.backends.process import ProcessBackend
from engine.executor.forkserver import TEMPLATE_NAME, Forked


def test_a_forked_executor_is_a_process_of_its_own(cli, tmp_path: Path) -> None:
    env_file = tmp_path / "secrets.env"
    env_file.write_text("ENGINE_TEST_TOKEN_7F3A=forked-secret\n")
    code, out, err = cli("run", f"{APPS_DIR / 'app_forked.py'}:forked_app", "--input", "1",
                         "--env-file", str(env_file), "--json")
    assert code == 0, err
    facts = json.loads(out)["result"]
    assert facts["parent_comm"] == TEMPLATE_NAME, facts  # forked, not spawned
    assert facts["comm"] != TEMPLATE_NAME, facts
    assert facts["sid"] == facts["pgid"] == facts["pid"], facts  # its own session and group
    assert facts["secret"] == "forked-secret", facts  # the function's own environment
    assert facts["tmpdir"].endswith(".tmp") and facts["gettempdir"] == facts["tmpdir"], facts
    assert facts["stdin_is_null"] and facts["grpc_fork_support"] == "false", facts
    assert "--parent-pid" in facts["argv"] and "--template-pid" in facts["argv"], facts


def spec(**env: str) -> ExecutorSpec:
    return ExecutorSpec(function="probe", run_id="r", env=env)


def test_what_a_fork_cannot_apply_is_spawned_and_a_dead_template_is_replaced(tmp_path: Path) -> None:
    async def scenario() -> None:
        backend = ProcessBackend(log_dir=tmp_path / "executors")
        started = []
        try:
            forked = await backend.start_executor(spec(SOME_SETTING="1"))
            started.append(forked.ref.pid)
            assert isinstance(forked.ref, Forked)
            # PYTHONHASHSEED is read as the interpreter starts: a fork could not apply it.
            spawned = await backend.start_executor(spec(PYTHONHASHSEED="7"))
            started.append(spawned.ref.pid)
            assert isinstance(spawned.ref, subprocess.Popen)
            with open(f"/proc/{spawned.ref.pid}/environ", "rb") as f:
                assert b"PYTHONHASHSEED=7\x00" in f.read()

            template = template_of(os.getpid())
            assert template is not None
            os.kill(template, signal.SIGKILL)
            # Its executors go with it; the spawned one does not.
            assert await asyncio.to_thread(forked.ref.wait, 10) == -signal.SIGKILL
            assert not alive(forked.ref.pid)
            assert alive(spawned.ref.pid)
            again = await backend.start_executor(spec())
            started.append(again.ref.pid)
            assert isinstance(again.ref, Forked)
            assert template_of(os.getpid()) not in (None, template)
        finally:
            await backend.close()
        # `close` stops every executor and ends the template.
        assert template_of(os.getpid()) is None
        assert not any(alive(pid) for pid in started)

    asyncio.run(scenario())
