"""`engine server` as a client sees it: a real server process on loopback (process backend),
applications deployed with `engine deploy`, every answer read over real HTTP.

One server serves most tests (module scope); the tests that need their own — a token, a run
limit of one, a `kill -9` in the middle of a burst — start one each. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverlib import REPO, SERVER_APPS, ServerProcess, check_burst, poll, submit_burst

APP = SERVER_APPS / "server_app.py"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("server") / "state").start()
    try:
        srv.deploy(APP)
        yield srv
    finally:
        srv.stop()


def started_pids(log: Path, n: int) -> list[int]:
    def read() -> list[int] | None:
        try:
            lines = [line.split("|") for line in log.read_text().splitlines()]
        except FileNotFoundError:
            return None
        pids = [int(f[2]) for f in lines if f[0] == "started"]
        return pids if len(pids) >= n else None

    return poll(read, 30, what=f"{n} started calls")  # type: ignore[no-any-return]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- submit, poll, result ------------------------------------------------------------------


def test_submit_poll_result(server: ServerProcess) -> None:
    began = time.monotonic()
    status, body = server.request("POST", "/v1/applications/inc/runs", 41)
    assert time.monotonic() - began < 2.0  # answered at once, not when the run is done
    assert status == 202 and body == {"run_id": body["run_id"], "status": "queued"}
    run = server.wait(body["run_id"])
    assert run["status"] == "succeeded" and run["result"] == 42 and run["error"] is None
    assert run["application"] == "inc" and run["version"] == 1
    assert run["created_at"] <= run["started_at"] <= run["ended_at"]
    assert run["duration"] >= 0 and run["queued_seconds"] >= 0
    assert run["calls"]["total"] == 1 and run["calls"]["succeeded"] == 1 and run["calls"]["executions"] == 1
    listed = server.ok("GET", "/v1/runs?application=inc&status=succeeded")
    assert body["run_id"] in [r["run_id"] for r in listed["runs"]]
    assert all(r["application"] == "inc" and r["status"] == "succeeded" for r in listed["runs"])
    assert server.ok("GET", "/v1/runs?application=fan&status=running")["runs"] == []
    apps = {a["name"]: a for a in server.ok("GET", "/v1/applications")["applications"]}
    assert set(apps) >= {"inc", "fan", "gated", "two_steps", "greet"}
    assert apps["greet"]["parameters"] == [
        {"name": "person", "type": "Person", "required": True},
        {"name": "greeting", "type": "str", "required": False}]
    assert apps["greet"]["description"] == "greets a person"


def test_run_remote_application(server: ServerProcess, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import FunctionError, Request, run_remote_application

    monkeypatch.setenv("ENGINE_SERVER", server.url)
    monkeypatch.syspath_prepend(str(SERVER_APPS))
    import server_app

    request = run_remote_application("inc", 1)
    assert isinstance(request, Request) and request.status == "succeeded" and request.output() == 2
    person = server_app.Person(name="ada", age=36)
    assert run_remote_application(server_app.greet, person, greeting="hi").output() == "hi ada (36)"
    assert run_remote_application("greet", {"name": "bo", "age": 7}).output() == "hello bo (7)"
    failed = run_remote_application(server_app.two_steps, str(tmp_path / "log"))
    assert failed.status == "failed"
    with pytest.raises(FunctionError, match="step two fails the first time") as info:
        failed.output()
    assert info.value.run_id == failed.id and info.value.function == "step_two"


def test_a_function_calls_another_deployed_application_by_name(server: ServerProcess) -> None:
    inc_runs = server.ok("GET", "/v1/runs?application=inc")["total"]
    run_id = server.submit("call_inc", 4)
    run = server.wait(run_id)
    assert run["status"] == "succeeded" and run["result"] == 50
    # A call of the run, not a request of its own: in the caller's graph, and no run of `inc`.
    nodes = server.ok("GET", f"/v1/runs/{run_id}/dag")["nodes"]
    assert [(n["kind"], n["function"]) for n in nodes if n["kind"] == "application"] == [("application", "inc")]
    assert server.ok("GET", "/v1/runs?application=inc")["total"] == inc_runs


# --- the DAG and its events ----------------------------------------------------------------


def test_dag_of_fan_out_and_tail_call(server: ServerProcess) -> None:
    run_id = server.submit("fan", 4)
    assert server.wait(run_id)["result"] == 0 + 1 + 4 + 9
    dag = server.ok("GET", f"/v1/runs/{run_id}/dag")
    nodes = {n["id"]: n for n in dag["nodes"]}
    by_function: dict[str, list[str]] = {}
    for n in dag["nodes"]:
        by_function.setdefault(n["function"], []).append(n["id"])
    assert {k: len(v) for k, v in by_function.items()} == {"fan": 1, "square": 4, "total": 1}
    (root,), (total,), squares = by_function["fan"], by_function["total"], set(by_function["square"])
    assert dag["root"] == root and nodes[root]["parent"] is None
    for n in dag["nodes"]:
        assert set(n) >= {"id", "function", "status", "attempts", "start", "end", "parent"}
        assert n["status"] == "succeeded" and n["attempts"] == 1
        assert n["start"] is not None and n["end"] >= n["start"]
    edges = {(e["from"], e["to"], e["kind"]) for e in dag["edges"]}
    assert len(edges) == len(dag["edges"])
    assert edges == (
        {(root, s, "parent") for s in squares} | {(root, total, "parent")}
        | {(s, total, "dependency") for s in squares} | {(root, total, "tail")})
    assert dag["run"]["status"] == "succeeded"


def read_events(server: ServerProcess, run_id: str, until: str = "end", timeout: float = 60):
    """Yield (event, data) from the SSE stream; stops after `until`."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request("GET", f"/v1/runs/{run_id}/events")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    event, data = None, None
    try:
        while True:
            line = response.readline()
            assert line, "the stream ended before its end event"
            line = line.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and event is not None:
                yield event, data
                if event == until:
                    return
                event, data = None, None
    finally:
        conn.close()


def test_events_stream_status_changes(server: ServerProcess, tmp_path: Path) -> None:
    gate, log = tmp_path / "gate", tmp_path / "log"
    run_id = server.submit("gated", {"n": 3, "gate": str(gate), "log": str(log)})
    seen: list[tuple[str, dict]] = []
    for event, data in read_events(server, run_id):
        seen.append((event, data))
        running = {d["id"] for e, d in seen if e == "call" and d["function"] == "wait_gate"
                   and d["status"] == "running"}
        if len(running) == 3 and not gate.exists():
            gate.touch()  # every call was seen running: let them finish
    assert gate.exists()
    calls: dict[str, list[str]] = {}
    for event, data in seen:
        if event == "call":
            calls.setdefault(data["id"], []).append(data["status"])
    waits = [s for s in calls.values() if "running" in s and len(s) > 1]
    assert len(waits) == 3 and all(s[-1] == "succeeded" for s in waits)
    run_states = [d["status"] for e, d in seen if e == "run"]
    assert run_states[-1] == "succeeded" and "running" in run_states
    assert seen[-1] == ("end", {"run_id": run_id, "status": "succeeded"})
    assert server.wait(run_id)["result"] == 0 + 1 + 2


# --- cancel and resume ---------------------------------------------------------------------


def test_cancel_stops_calls_and_executors(server: ServerProcess, tmp_path: Path) -> None:
    gate, log = tmp_path / "gate", tmp_path / "log"
    run_id = server.submit("gated", {"n": 2, "gate": str(gate), "log": str(log)})
    pids = started_pids(log, 2)
    assert all(alive(p) for p in pids)
    began = time.monotonic()
    assert server.ok("POST", f"/v1/runs/{run_id}/cancel") == {"run_id": run_id, "status": "cancelled"}
    run = server.ok("GET", f"/v1/runs/{run_id}")
    assert run["status"] == "cancelled" and run["error"]["kind"] == "cancelled"
    assert run["calls"]["running"] == 0 and run["calls"]["cancelled"] >= 2
    poll(lambda: not any(alive(p) for p in pids), 15, what="the cancelled calls' executors to stop")
    assert time.monotonic() - began < 15
    gate.touch()
    time.sleep(0.3)
    assert "finished" not in log.read_text()  # the calls' code did not go on
    status, body = server.request("POST", f"/v1/runs/{run_id}/cancel")
    assert status == 409 and "already cancelled" in body["error"]


def test_resume_after_failure_reruns_only_what_failed(server: ServerProcess, tmp_path: Path) -> None:
    log = tmp_path / "log"
    run_id = server.submit("two_steps", str(log))
    run = server.wait(run_id)
    assert run["status"] == "failed" and run["error"]["kind"] == "function_error"
    assert "step two fails the first time" in run["error"]["message"]
    assert run["error"]["function"] == "step_two"
    dag = server.ok("GET", f"/v1/runs/{run_id}/dag")
    shown = {n["function"]: n["status"] for n in dag["nodes"]}
    assert shown == {"two_steps": "failed", "step_one": "succeeded", "step_two": "failed"}
    status, body = server.request("POST", f"/v1/runs/{run_id}/resume")
    assert status == 202 and body == {"run_id": run_id, "status": "queued"}
    run = server.wait(run_id)
    assert run["status"] == "succeeded" and run["result"] == "one+two" and run["error"] is None
    assert run["resumes"] == 1
    lines = log.read_text().split()
    assert lines.count("step_one") == 1 and lines.count("step_two") == 2  # step one was reused
    status, body = server.request("POST", f"/v1/runs/{run_id}/resume")
    assert status == 409 and "succeeded" in body["error"]


# --- idempotency, errors, auth ---------------------------------------------------------------


def test_idempotency_key_returns_the_same_run(server: ServerProcess) -> None:
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = server.request("POST", "/v1/applications/inc/runs", 5, headers=key)
    second = server.request("POST", "/v1/applications/inc/runs", 5, headers=key)
    assert first[0] == 202 and second[0] == 202
    assert second[1]["run_id"] == first[1]["run_id"] and second[1]["replayed"] is True
    assert server.wait(first[1]["run_id"])["result"] == 6
    third = server.request("POST", "/v1/applications/inc/runs", 5, headers=key)
    assert third[1] == {"run_id": first[1]["run_id"], "status": "succeeded", "replayed": True}
    status, body = server.request("POST", "/v1/applications/fan/runs", 5, headers=key)
    assert status == 409 and "inc" in body["error"]
    runs = server.ok("GET", "/v1/runs?application=inc&limit=1000")["runs"]
    assert sum(1 for r in runs if r["run_id"] == first[1]["run_id"]) == 1


@pytest.mark.parametrize(
    "path, body, status, expected",
    [
        ("/v1/applications/nope/runs", b"1", 404, "no application named 'nope'"),
        ("/v1/applications/nope/runs", b"{'x'", 404, "no application named 'nope'"),  # whatever the body
        ("/v1/applications/greet/runs", b'{"person": {"name": "a", "age": "old"}}', 422, "person.age"),
        ("/v1/applications/greet/runs", b'{"person": {"name": "a"}}', 422, "person.age"),
        ("/v1/applications/greet/runs", b'{"greeting": "hi"}', 422, "'person'"),
        ("/v1/applications/greet/runs", b'{"persn": {}}', 422, "'persn'"),
        ("/v1/applications/greet/runs", b'"ada"', 422, "JSON object"),
        ("/v1/applications/inc/runs", b'"seven"', 422, "input field x"),
        ("/v1/applications/inc/runs", b"", 422, "needs input (x)"),
        ("/v1/applications/inc/runs", b"{'x': 1}", 400, "not valid JSON"),
        ("/v1/applications/inc/runs", b'{"x": ', 400, "not valid JSON"),
        ("/v1/runs/no-such-run/cancel", b"", 404, "no run 'no-such-run'"),
        ("/v1/runs", b"", 405, "GET"),
        ("/v1/nothing", b"", 404, "no such path"),
    ],
)
def test_bad_requests_get_one_line_errors(server: ServerProcess, path: str, body: bytes,
                                          status: int, expected: str) -> None:
    got, data = server.request("POST", path, raw=body)
    assert got == status, data
    assert set(data) == {"error", "status"} and data["status"] == status
    assert expected in data["error"] and "\n" not in data["error"] and "Traceback" not in data["error"]


def test_two_different_content_lengths_are_refused_at_once(server: ServerProcess) -> None:
    """RFC 9112, section 6.3: a request smuggling vector behind a proxy. Refused with 400 and the
    connection closed, not left waiting for a body."""
    import socket

    request = (b"POST /v1/applications/inc/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n41")
    began = time.monotonic()
    with socket.create_connection((server.address, server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    assert time.monotonic() - began < 2.0
    assert answer.startswith(b"HTTP/1.1 400 ") or answer.startswith(b"HTTP/1.0 400 "), answer[:200]
    assert server.request("GET", "/healthz")[0] == 200
    # Logged as the client's mistake it is: one warning line, no traceback.
    line = poll(lambda: next((json.loads(text) for text in server.log().splitlines()
                              if "Duplicate Content-Length" in text), None), 10, what="the log line")
    assert line["level"] == "warning" and "exc" not in line, line


@pytest.mark.parametrize("depth", [100_000, 500])
def test_deeply_nested_json_is_a_bad_request(server: ServerProcess, depth: int) -> None:
    """Deeper than Python's recursion limit (100,000) or than the server takes (500): one line, 400."""
    status, data = server.request("POST", "/v1/applications/inc/runs", raw=b"[" * depth + b"]" * depth,
                                  headers={"Content-Type": "application/json"})
    assert status == 400, data
    assert set(data) == {"error", "status"} and data["status"] == 400
    assert "not valid JSON: it nests deeper than 200 levels" in data["error"] and "\n" not in data["error"]


def test_unknown_run_and_openapi(server: ServerProcess) -> None:
    for suffix in ("", "/dag", "/events", "/logs"):
        status, data = server.request("GET", f"/v1/runs/nope{suffix}")
        assert status == 404 and "no run 'nope'" in data["error"]
    doc = server.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), path) for path, item in doc["paths"].items() for m in item if m != "parameters"}
    assert set(_routes()) == documented


def _routes() -> list[tuple[str, str]]:
    """The routes the server's aiohttp router serves, as OpenAPI path templates (the dashboard's
    files, and the same paths with a trailing slash, excluded)."""
    from engine.server.api import API

    api = API(None, None, None, max_body=1)  # type: ignore[arg-type]
    out = set()
    for route in api.app.router.routes():
        template = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical)  # type: ignore[union-attr]
        if template not in ("/", "/static/{file}") and not template.endswith("/"):
            out.add((route.method, template))
    return sorted(out)


def test_metrics(server: ServerProcess) -> None:
    server.wait(server.submit("inc", 1))
    status, text = server.request("GET", "/metrics")
    assert status == 200
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["engine_runs_queued"] == 0
    assert values['engine_runs_accepted_total{application="inc"}'] >= 1
    assert values['engine_runs_finished_total{status="succeeded"}'] >= 1
    assert values['engine_calls_finished_total{outcome="succeeded"}'] >= 1
    assert values['engine_call_dispatch_latency_seconds_count{backend="process"}'] >= 1
    assert values['engine_executor_starts_total{backend="process",function="inc"}'] >= 1
    assert "engine_calls_running" in values and 'engine_executors_live{backend="process"}' in values
    for family in ("engine_runs_queued", "engine_calls_running", "engine_call_dispatch_latency_seconds"):
        assert f"# TYPE {family} " in text
    assert "# TYPE engine_blob_bytes_total counter" in text


def blob_bytes(server: ServerProcess) -> dict[str, float]:
    status, text = server.request("GET", "/metrics")
    assert status == 200
    return {line.split('"')[1]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith("engine_blob_bytes_total{")}


def test_a_large_value_moves_through_the_blobs_service(server: ServerProcess) -> None:
    size = 6 * 1024 * 1024
    before = blob_bytes(server)
    run = server.wait(server.submit("large_value", size))
    assert run["status"] == "succeeded" and run["result"] == size
    after = blob_bytes(server)
    # Put by the executor that made it, got by the one that measured it: never inline.
    assert after["put"] - before["put"] >= size and after["get"] - before["get"] >= size, (before, after)


def test_token_auth(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state", token="s3cret").start()
    try:
        for path in ("/v1/applications", "/v1/runs", "/metrics"):
            status, body = srv.request("GET", path, token=None)
            assert status == 401 and "Bearer" in body["error"]
            assert srv.request("GET", path, token="wrong")[0] == 401
            assert srv.request("GET", path)[0] == 200
        assert srv.request("POST", "/v1/applications/inc/runs", 1, token=None)[0] == 401
        assert srv.request("GET", "/healthz", token=None)[0] == 200
        status, page = srv.request("GET", "/", token=None)
        assert status == 200 and "<html" in page  # the dashboard then asks for the token
        env = {**os.environ, "ENGINE_SERVER": srv.url}
        env.pop("ENGINE_TOKEN", None)
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "deploy", str(APP)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "401" in proc.stderr
        assert srv.deploy(APP)["applications"]  # with ENGINE_TOKEN
        assert srv.wait(srv.submit("inc", 2))["result"] == 3
    finally:
        srv.stop()


def test_server_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "server", "--host", "0.0.0.0",
                           "--state-dir", str(tmp_path / "state"), "--backend", "process"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "--token" in proc.stderr and "Traceback" not in proc.stderr


# --- deployments and versions ----------------------------------------------------------------

VERSIONED = '''
import os, time
from engine import application, function

VERSION = {version}

@application()
@function()
def which(gate: str) -> int:
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return VERSION
'''


def test_redeploy_makes_a_new_version_and_runs_finish_on_theirs(server: ServerProcess, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    app = project / "versioned.py"
    app.write_text(VERSIONED.format(version=1))
    assert [(a["name"], a["version"], a["new"]) for a in server.deploy(app)["applications"]] == [("which", 1, True)]
    gate = tmp_path / "gate"
    old = server.submit("which", str(gate))
    poll(lambda: server.ok("GET", f"/v1/runs/{old}")["calls"]["running"] == 1, 30, what="v1 running")
    app.write_text(VERSIONED.format(version=2))
    assert [(a["version"], a["new"]) for a in server.deploy(app)["applications"]] == [(2, True)]
    assert [(a["version"], a["new"]) for a in server.deploy(app)["applications"]] == [(2, False)]
    opened = tmp_path / "open"
    opened.touch()
    new = server.submit("which", str(opened))
    assert server.wait(new)["result"] == 2
    gate.touch()
    run = server.wait(old)
    assert run["result"] == 1 and run["version"] == 1  # finished on the version it started on
    assert server.ok("GET", "/v1/applications/which")["versions"] == [1, 2]


def test_deploy_errors_are_one_line(server: ServerProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    env = {**os.environ, "ENGINE_SERVER": server.url}
    for file, expected in ((bad, "syntax error"), (none, "defines no @application()"),
                           (tmp_path / "missing.py", "no such Python file")):
        proc = subprocess.run([sys.executable, "-m", "engine.cli", "deploy", str(file)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr
    status, body = server.request("POST", "/v1/deployments?file=app.py", raw=b"not a zip")
    assert status == 400 and "zip" in body["error"]


# --- queueing -------------------------------------------------------------------------------


def test_runs_beyond_the_limit_wait_queued_and_start_oldest_first(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state", extra=("--max-concurrent-runs", "1")).start()
    try:
        srv.deploy(APP)
        gate, log = tmp_path / "gate", tmp_path / "log"
        first = srv.submit("gated", {"n": 1, "gate": str(gate), "log": str(log)})
        started_pids(log, 1)
        waiting = [srv.submit("inc", i) for i in range(3)]
        dropped = srv.submit("inc", 99)
        assert all(srv.ok("GET", f"/v1/runs/{r}")["status"] == "queued" for r in waiting + [dropped])
        assert srv.ok("GET", "/healthz")["runs_queued"] == 4
        assert srv.ok("POST", f"/v1/runs/{dropped}/cancel")["status"] == "cancelled"
        gate.touch()
        assert srv.wait(first)["status"] == "succeeded"
        runs = [srv.wait(r) for r in waiting]
        assert [r["result"] for r in runs] == [1, 2, 3]
        starts = [r["started_at"] for r in runs]
        assert starts == sorted(starts)  # oldest first
        assert all(r["queued_seconds"] > 0 for r in runs)
        assert srv.ok("GET", f"/v1/runs/{dropped}")["status"] == "cancelled"
        assert srv.ok("GET", f"/v1/runs/{dropped}")["calls"]["total"] == 0  # it never started
    finally:
        srv.stop()


BURST = 500


def test_burst_is_accepted_and_survives_kill_9(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "state").start()
    try:
        srv.deploy(APP)
        accepted_before_kill: set[int] = set()
        killed = {"done": False}

        def on_accept(i: int) -> None:
            if killed["done"]:
                return
            accepted_before_kill.add(i)
            if len(accepted_before_kill) >= BURST // 3:
                # In the middle of the burst, at once: the server may answer the rest of it
                # faster than a loop watching the count would notice.
                srv.kill9()
                killed["done"] = True

        async def scenario() -> dict[int, tuple[int, dict]]:
            deadline = time.monotonic() + 120
            burst = asyncio.ensure_future(submit_burst([srv], BURST, on_accept, deadline))
            while not killed["done"]:
                assert time.monotonic() < deadline and not burst.done()
                await asyncio.sleep(0.005)
            await asyncio.to_thread(srv.start)
            return await burst

        results = asyncio.run(scenario())
        assert killed["done"] and BURST // 3 <= len(accepted_before_kill) < BURST
        check_burst(srv, results, BURST, timeout=150)
    finally:
        srv.stop()


def test_restart_resumes_running_runs(tmp_path: Path) -> None:
    """A server killed while runs execute: after a restart they resume from their checkpoints
    and finished calls are not executed again."""
    srv = ServerProcess(tmp_path / "state").start()
    try:
        srv.deploy(APP)
        gate, log = tmp_path / "gate", tmp_path / "log"
        run_id = srv.submit("gated", {"n": 3, "gate": str(gate), "log": str(log)})
        started_pids(log, 3)
        srv.kill9()
        gate.touch()  # the orphaned executors finish their calls and exit; the results are lost
        srv._reap_executors()
        srv.start()
        run = srv.wait(run_id)
        assert run["status"] == "succeeded" and run["result"] == 3 and run["resumes"] == 1
        dag = srv.ok("GET", f"/v1/runs/{run_id}/dag")
        root = next(n for n in dag["nodes"] if n["id"] == dag["root"])
        assert root["executions"] == 1  # it had handed off by tail call: checkpointed, not re-run
        waits = [n for n in dag["nodes"] if n["function"] == "wait_gate"]
        assert len(waits) == 3 and all(n["executions"] == 2 for n in waits)  # running at the kill
    finally:
        srv.stop()


def test_dashboard_files_are_served(server: ServerProcess) -> None:
    status, page = server.request("GET", "/")
    assert status == 200 and "/static/dashboard.js" in page
    for name in ("dashboard.js", "dashboard.css"):
        assert server.request("GET", f"/static/{name}")[0] == 200
    assert server.request("GET", "/static/nope.js")[0] == 404
    # No CDN, no third-party code: nothing is loaded from anywhere but this server.
    for name in ("index.html", "dashboard.js", "dashboard.css"):
        text = (REPO / "engine" / "server" / "static" / name).read_text()
        assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", text), name


def test_a_state_directory_from_before_leases_is_taken_up_with_nothing_lost(tmp_path: Path) -> None:
    """A state directory written before deployments lived in the store and before runs recorded
    their version (schema 2: code under apps/<name>/<version>/, a queued run naming its version
    only by path): the server imports the deployment and runs the queued run."""
    import hashlib
    import sqlite3

    from engine import wire
    from engine.app import zip_project
    from engine.scheduler.scheduler import root_call_id
    from engine.store.schema import MIGRATIONS

    state = tmp_path / "state"
    version_dir = state / "apps" / "inc" / "1"
    (version_dir / "code").mkdir(parents=True)
    bundle = zip_project(SERVER_APPS)
    (version_dir / "code.zip").write_bytes(bundle)
    import zipfile
    with zipfile.ZipFile(version_dir / "code.zip") as zf:
        zf.extractall(version_dir / "code")
    digest = hashlib.sha256(bundle).hexdigest()
    (version_dir / "deployment.json").write_text(json.dumps(
        {"name": "inc", "version": 1, "digest": digest, "file": "server_app.py", "deployed_at": time.time()}))
    db = sqlite3.connect(state / "engine.db")
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        db.executescript(script)
        db.execute(f"PRAGMA user_version={number}")
    db.execute(
        "INSERT INTO runs (run_id, application, status, root_call_id, app_file, module, backend, input, "
        "created_at) VALUES (?, ?, 'queued', ?, ?, 'server_app', 'process', ?, ?)",
        ("old-run", "inc", root_call_id("old-run"), str((version_dir / "code" / "server_app.py").resolve()),
         wire.dumps({"x": 41}), time.time()))
    db.commit()
    db.close()

    srv = ServerProcess(state).start()
    try:
        run = srv.wait("old-run")
        assert (run["status"], run["result"], run["version"]) == ("succeeded", 42, 1)
        apps = srv.ok("GET", "/v1/applications")
        assert [a["name"] for a in apps["applications"]] == ["inc"]
    finally:
        srv.stop()
