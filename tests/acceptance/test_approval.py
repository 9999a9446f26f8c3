"""Example 11 (`examples/multiagent/approval`: draft, review by a person, publish) end to end on
Docker, against the local model (the `llm` fixture, llmlib.py).

- Served: `engine server --backend docker` with the example deployed; a run submitted over HTTP
  with the `X-Engine-Model` header drafts and then waits — `waiting`, its one open wait
  `approval`, no container of it alive. The server is killed with `kill -9`, a new one starts on
  the same state directory, and the approval goes over HTTP: the run is published with the draft
  written before the crash. The store says `draft` executed once (its checkpoint was reused) and
  `publish` once.
- `engine run --model` in the foreground, rejected with `engine signal` from outside: the model
  that `--model` named wrote the draft (inside the container, `engine.ai_model()`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from llmlib import LLM, MODEL

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from serverlib import ServerProcess, poll  # noqa: E402

pytestmark = [pytest.mark.acceptance, pytest.mark.docker]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "multiagent" / "approval"
BUILD_TIMEOUT = 900  # the runtime and `llm` images, when the engine's code changed


@pytest.fixture
def env(llm: LLM, tmp_path: Path) -> dict[str, str]:
    """The environment of every engine process here: the model server, a state directory of the
    test's, short leases (a restarted server takes the killed one's run over sooner)."""
    out = {**os.environ, "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": llm.api_key,
           "ENGINE_STATE_DIR": str(tmp_path / "state"), "ENGINE_LEASE_TTL": "3"}
    out.pop("ENGINE_BACKEND", None)
    out.pop("ENGINE_SERVER", None)
    # The images, built ahead (cached), so that neither deploying nor running waits for a build.
    built = subprocess.run([sys.executable, "-m", "engine.cli", "image", "build", str(EXAMPLE / "app.py")],
                           env=out, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, built.stderr[-3000:]
    return out


def containers_of(run_id: str, *, running: bool = True) -> list[Any]:
    from engine import images

    return images.docker_client().containers.list(  # an ended engine's are being removed
        all=not running, filters={"label": ["engine.managed=1", f"engine.run={run_id}"]},
        ignore_removed=True)


def remove_containers_of(run_id: str) -> None:
    import docker.errors

    for container in containers_of(run_id, running=False):
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # removed meanwhile: the ended engine sent its removal
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise


def calls_by_function(state_dir: Path, run_id: str) -> dict[str, Any]:
    """The run's calls as the store holds them, by function (one call each in this example)."""
    from engine.store import open_store, store_url

    store = open_store(store_url(state_dir))
    try:
        return {c.function: c for c in store.load_calls(run_id)}
    finally:
        store.close()


def test_approval_over_http_after_the_server_was_killed_while_the_run_waited(env, tmp_path) -> None:
    state_dir = Path(env["ENGINE_STATE_DIR"])
    config = tmp_path / "server.yaml"
    config.write_text("idle_timeout: 1\n")  # the draft's idle container goes soon after its call
    server = ServerProcess(state_dir, backend="docker", env=env, extra=("--config", str(config)))
    run_id = None
    try:
        server.start()
        server.deploy(EXAMPLE / "app.py")
        run_id = server.submit("post", {"topic": "city bees"}, headers={"X-Engine-Model": MODEL})
        run = poll(lambda: (r := server.ok("GET", f"/v1/runs/{run_id}"))["waiting"] and r, timeout=300,
                   interval=0.2, what="the run to wait for its approval")
        assert run["status"] == "running"  # the store's status: its driver holds it
        assert [w["name"] for w in run["waits"]] == ["approval"] and run["signals"] == []
        # The reviewer reads the draft in the call's logs.
        logs = server.ok("GET", f"/v1/runs/{run_id}/logs?function=draft")["logs"]
        assert len(logs) == 1 and logs[0]["text"].startswith(f"draft by {MODEL}: ")
        drafted = logs[0]["text"].split(": ", 1)[1].strip()
        # Nothing of it runs while it waits: no container (the draft's went when it was idle,
        # none started for publish).
        poll(lambda: not containers_of(run_id), timeout=60, interval=0.2, what="the run's containers to go")
        assert server.ok("GET", f"/v1/runs/{run_id}")["waiting"]

        server.kill9()
        assert not containers_of(run_id)
        server.start()
        status, sent = server.request("POST", f"/v1/runs/{run_id}/signals/approval",
                                      {"approved": True, "note": "ok to send"})
        assert status == 200 and sent == {"run_id": run_id, "name": "approval", "seq": 0}, sent
        status, refused = server.request("POST", f"/v1/runs/{run_id}/signals/approval", {"approved": False})
        assert status == 409 and "already has signal" in refused["error"], refused

        run = server.wait(run_id, timeout=300)
        assert run["status"] == "succeeded", run
        result = run["result"]
        assert result["status"] == "published" and result["note"] == "ok to send"
        assert result["draft"]["text"] == drafted and result["draft"]["model"] == MODEL
        assert result["text"] == f"{drafted}\n\n(ok to send)"
        calls = calls_by_function(state_dir, run_id)
        assert (calls["draft"].executions, calls["publish"].executions) == (1, 1)
        assert run["waits"] == [] and [s["name"] for s in run["signals"]] == ["approval"]
        poll(lambda: not containers_of(run_id), timeout=60, interval=0.2, what="the run's containers to go")
    finally:
        server.stop()
        if run_id is not None:
            remove_containers_of(run_id)


def test_engine_run_with_model_waits_and_takes_a_rejection_from_engine_signal(env) -> None:
    def engine(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=EXAMPLE, env=env,
                              capture_output=True, text=True, timeout=60)

    def waiting_run() -> str | None:
        listed = engine("runs", "--json")
        runs = json.loads(listed.stdout) if listed.returncode == 0 else []
        if not runs:
            return None
        shown = engine("show", runs[0]["run_id"], "--json")
        return runs[0]["run_id"] if shown.returncode == 0 and json.loads(shown.stdout)["waiting"] else None

    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run", "app.py:post", "--backend", "docker", "--json",
         "--input", json.dumps({"topic": "rainy days"}), "--model", MODEL],
        cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_id = None
    try:
        run_id = poll(waiting_run, timeout=300, interval=0.5, what="the run to wait for its approval")
        sent = engine("signal", run_id, "approval", "--data", '{"approved": false, "note": "too vague"}')
        assert sent.returncode == 0, sent.stderr
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.send_signal(2)  # Ctrl-C: the engine stops its containers
            proc.wait(60)
        if run_id is not None:
            remove_containers_of(run_id)
    assert proc.returncode == 0, err[-3000:]
    outcome = json.loads(out.strip().splitlines()[-1])
    result = outcome["result"]
    assert outcome["status"] == "succeeded" and result["status"] == "rejected" and result["text"] is None
    assert result["note"] == "too vague" and result["draft"]["text"]
    assert result["draft"]["model"] == MODEL  # --model reached the call in its container
