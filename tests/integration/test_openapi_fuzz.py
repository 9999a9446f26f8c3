"""schemathesis against a real `engine server`: the OpenAPI document it serves is the contract,
and every answer must keep it.

One server with a token (process backend), two deployed files (JSON inputs, `File` inputs and
outputs, an application open to unauthenticated requests) and a few runs in each final state.
The schemathesis CLI then generates requests from `/openapi.json` — once with the token, once
without — and checks every answer: no 5xx (`not_a_server_error`), only documented statuses
(`status_code_conformance`) and content types (`content_type_conformance`), bodies that match
their schema (`response_schema_conformance`, server-sent events included).

Path parameters are real half of the time (schemathesis dictionaries): a deployed application's
name, a run's id; the rest of the time they are generated, and mostly unknown. Only applications
safe to run with any input are named (no fan-out of a generated size, no file paths as input).
Bounded and repeatable: at most 25 examples per operation, deterministic generation (which keeps
no example database between runs), one worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverlib import SERVER_APPS, ServerProcess

TOKEN = "fuzz-token"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
HOOKS = Path(__file__).resolve().with_name("schemathesis_hooks.py")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Not echo_file: it reverses its input's bytes and keeps their content type, so a JSON body comes
# back labelled JSON but no longer JSON — served as the application made it, but not what a
# client parsing application/json expects. The fixture's run of it (a PNG) is fuzzed as any run.
SAFE_APPLICATIONS = ["inc", "greet", "raw", "inc_json", "public_size", "broken"]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, list[str]]]:
    """The server, and ids of runs that succeeded (JSON and File results), failed and were
    cancelled before they started."""
    tmp = tmp_path_factory.mktemp("fuzz")
    srv = ServerProcess(tmp / "state", token=TOKEN, extra=("--max-concurrent-runs", "2")).start()
    try:
        srv.deploy(SERVER_APPS / "server_app.py")
        srv.deploy(SERVER_APPS / "file_app.py")
        runs = [srv.submit("inc", 1), srv.submit("two_steps", str(tmp / "log")),
                srv.submit("greet", {"person": {"name": "ada", "age": 36}})]
        status, accepted = srv.request("POST", "/v1/applications/echo_file/runs", raw=b"\x89PNG\r\n",
                                       headers={"Content-Type": "image/png"})
        assert status == 202, accepted
        runs.append(accepted["run_id"])
        for run_id in runs:
            srv.wait(run_id)
        # A run cancelled before it started: the gated runs hold both slots until it is.
        gate = tmp / "gate"
        held = [srv.submit("gated", {"n": 1, "gate": str(gate), "log": str(tmp / "gated")}) for _ in range(2)]
        queued = srv.submit("inc", 2)
        assert srv.ok("POST", f"/v1/runs/{queued}/cancel")["status"] == "cancelled"
        runs.append(queued)
        gate.touch()
        for run_id in held:
            srv.wait(run_id)
        yield srv, runs
    finally:
        srv.stop()


@pytest.mark.parametrize("with_token", [True, False], ids=["with-token", "without-token"])
def test_every_answer_keeps_the_openapi_document(fuzzed: tuple[ServerProcess, list[str]], tmp_path: Path,
                                                 with_token: bool) -> None:
    srv, runs = fuzzed
    config = tmp_path / "schemathesis.toml"
    config.write_text("\n".join([
        f"hooks = {json.dumps(str(HOOKS))}",
        "[dictionaries.applications]",
        f"values = {json.dumps(SAFE_APPLICATIONS)}",
        "[dictionaries.runs]",
        f"values = {json.dumps(runs)}",
        "[parameters]",
        '"path.name" = { dictionary = "applications", probability = 0.5 }',
        '"path.run_id" = { dictionary = "runs", probability = 0.5 }',
    ]) + "\n")
    report = tmp_path / "report.json"
    command = [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{srv.url}/openapi.json",
               "--checks", CHECKS, "--max-examples", "25", "--generation-deterministic", "--workers", "1",
               "--continue-on-failure", "--no-color", "--request-timeout", "10",
               "--report", "json", "--report-json-path", str(report)]
    if with_token:
        command += ["--header", f"Authorization: Bearer {TOKEN}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    (tmp_path / "schemathesis.out").write_text(proc.stdout)
    assert proc.returncode == 0, f"{proc.stdout[-12000:]}\n{proc.stderr[-3000:]}\n--- server log:\n{srv.log()}"
    data = json.loads(report.read_text())
    operations, cases = data["operations"], data["test_cases"]
    print(f"schemathesis, {'with' if with_token else 'without'} the token: {operations['tested']} operations, "
          f"{cases['generated']} test cases, {data['running_time']:.1f} s")
    # Every documented operation but the document itself (schemathesis leaves its own source out).
    documented = sum(len(item) for item in srv.ok("GET", "/openapi.json")["paths"].values())
    assert operations["tested"] == operations["total"] == documented - 1
    assert cases["errored"] == 0 and cases["with_failures"] == 0
