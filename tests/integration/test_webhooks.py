"""Completion webhooks, sync execute (`?wait=`) and batch reads (`GET /v1/runs?ids=`), against a
real `engine server` (process backend) and a real local receiver (`Receiver`, an http.server in
a thread) that refuses attempts, holds them, and checks every signature.

Deliveries are counted at the receiver: every request it saw, with its `Engine-Delivery` id, and
what it answered. At least once means: for each run end exactly one delivery id, accepted at least
once; more than one request only with that same id.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from serverlib import SERVER_APPS, ServerProcess, poll

from engine.server.webhooks import verify

APP = SERVER_APPS / "webhook_app.py"
SECRET = "whsec-test-0123456789"
SUBMISSION = {"Content-Type": "application/vnd.engine.submission+json"}
# Fast retries, so that the tests see several attempts in seconds; a short attempt timeout, so
# that a claim left by a killed server runs out soon (its lease: timeout + 5 s).
FAST = {"ENGINE_WEBHOOK_INITIAL_DELAY": "0.2", "ENGINE_WEBHOOK_MAX_DELAY": "1",
        "ENGINE_WEBHOOK_TIMEOUT": "3", "ENGINE_WEBHOOK_POLL": "0.2"}


class Receiver:
    """A webhook receiver on a free loopback port. `plan(n)` says what to do with the n-th
    request (1-based): an HTTP status to answer, or "hold" to keep it unanswered until `release`."""

    def __init__(self, plan: Callable[[int], int | str] = lambda n: 200, secret: str | None = SECRET) -> None:
        self.plan = plan
        self.secret = secret
        self.seen: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signature = self.headers.get("Engine-Signature")
                with receiver.lock:
                    n = len(receiver.seen) + 1
                    entry = {"n": n, "at": time.monotonic(), "delivery": self.headers.get("Engine-Delivery"),
                             "headers": dict(self.headers), "body": json.loads(body), "answer": None,
                             "signed": signature is not None and receiver.secret is not None
                             and verify(receiver.secret, signature, body)}
                    receiver.seen.append(entry)
                action = receiver.plan(n)
                if action == "hold":
                    receiver.released.wait(60)
                    action = 500
                assert isinstance(action, int)
                if receiver.secret is not None and not entry["signed"]:
                    action = 401  # a receiver refuses what it cannot verify
                entry["answer"] = action
                try:
                    self.send_response(action)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    entry["answer"] = "connection lost"

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.seen if e["answer"] == 200]

    def close(self) -> None:
        self.released.set()
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(lambda n: 500 if n <= 2 else 200)
    yield r
    r.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("webhooks") / "state", env={**os.environ, **FAST}).start()
    try:
        srv.deploy(APP)
        yield srv
    finally:
        srv.stop()


def submit(server: ServerProcess, app: str, value: Any, webhook: dict[str, Any] | None,
           query: str = "") -> tuple[int, Any]:
    envelope: dict[str, Any] = {"input": value}
    if webhook is not None:
        envelope["webhook"] = webhook
    return server.request("POST", f"/v1/applications/{app}/runs{query}", envelope, headers=SUBMISSION)


def deliveries(server: ServerProcess, run_id: str) -> dict[str, Any]:
    return server.ok("GET", f"/v1/runs/{run_id}/webhooks")  # type: ignore[no-any-return]


# --- webhooks ------------------------------------------------------------------------------------


def test_refused_attempts_are_retried_with_backoff_and_signed(server: ServerProcess, receiver: Receiver) -> None:
    hook = {"url": receiver.url, "secret": SECRET, "headers": {"X-Team": "data"}}
    status, run = submit(server, "double", 21, hook, "?wait=30")
    assert status == 200 and run["status"] == "succeeded" and run["result"] == 42, run
    poll(receiver.accepted, 20, what="an accepted delivery")
    seen = receiver.seen
    assert [e["answer"] for e in seen] == [500, 500, 200]
    assert all(e["signed"] for e in seen)
    assert {e["delivery"] for e in seen} == {seen[0]["delivery"]}
    assert seen[0]["headers"]["X-Team"] == "data"
    body = seen[-1]["body"]
    assert body["run_id"] == run["run_id"] and body["status"] == "succeeded" and body["result"] == 42
    assert body["delivery_id"] == seen[0]["delivery"] and body["error"] is None
    # Back-off: 0.2 s, then 0.4 s (and the poll's granularity).
    gaps = [b["at"] - a["at"] for a, b in zip(seen, seen[1:], strict=False)]
    assert 0.15 < gaps[0] < 1.5 and 0.35 < gaps[1] < 2.0, gaps

    shown = poll(lambda: (d := deliveries(server, run["run_id"]))["deliveries"][0]["state"] == "delivered" and d,
                 10, what="the delivery recorded")
    (delivery,) = shown["deliveries"]
    assert delivery["delivery_id"] == seen[0]["delivery"] and delivery["status"] == "succeeded"
    assert [a["http_status"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in delivery["attempts"]] == [1, 2, 3]
    assert all(0 <= a["duration"] < 3 for a in delivery["attempts"])
    assert delivery["attempts"][0]["error"] == "HTTP 500" and delivery["attempts"][2]["error"] is None
    assert shown["webhook"] == {"url": receiver.url, "signed": True, "headers": ["X-Team"]}
    # The secret (and header values) never leave the server: not in the API, not in its log.
    assert SECRET not in json.dumps(shown) and "data" not in json.dumps(shown["webhook"])
    assert SECRET not in server.log_path.read_text()


def test_failed_and_large_results(server: ServerProcess) -> None:
    r = Receiver(secret=None)
    try:
        failed = server.ok("POST", "/v1/applications/boom/runs", None, raw=json.dumps(
            {"input": "no luck", "webhook": {"url": r.url}}).encode(), headers=SUBMISSION)["run_id"]
        large = submit(server, "big", 100_000, {"url": r.url})[1]["run_id"]
        poll(lambda: len(r.accepted()) == 2, 30, what="two deliveries")
        by_run = {e["body"]["run_id"]: e for e in r.accepted()}
        assert "Engine-Signature" not in by_run[failed]["headers"]  # no secret, no signature
        error = by_run[failed]["body"]["error"]
        assert by_run[failed]["body"]["status"] == "failed" and error["kind"] == "function_error"
        assert "no luck" in error["message"]
        body = by_run[large]["body"]
        assert body["result"] is None and body["result_url"] == f"/v1/runs/{large}/output"
        assert len(server.ok("GET", body["result_url"])) == 100_000
        assert len(r.seen) == 2
    finally:
        r.close()


def test_cancelled_runs_are_reported_queued_or_running(tmp_path: Path) -> None:
    """Both ways a run is cancelled write its final status — a queued run's by the control plane
    (`update_run_if`), a running run's by the scheduler — and each queues its delivery."""
    r = Receiver(secret=None)
    srv = ServerProcess(tmp_path / "state", env={**os.environ, **FAST},
                        extra=("--max-concurrent-runs", "1")).start()
    try:
        srv.deploy(APP)
        running = submit(srv, "sleepy", 60, {"url": r.url})[1]["run_id"]
        srv.wait(running, statuses=("running",))
        queued = submit(srv, "double", 1, {"url": r.url})[1]["run_id"]
        assert srv.ok("GET", f"/v1/runs/{queued}")["status"] == "queued"
        assert srv.ok("POST", f"/v1/runs/{queued}/cancel")["status"] == "cancelled"
        assert srv.ok("POST", f"/v1/runs/{running}/cancel")["status"] == "cancelled"
        poll(lambda: len(r.accepted()) == 2, 20, what="two deliveries")
        time.sleep(0.5)
        assert sorted((e["body"]["run_id"], e["body"]["status"]) for e in r.seen) == sorted(
            [(queued, "cancelled"), (running, "cancelled")])
        assert all(e["body"]["error"]["kind"] == "cancelled" for e in r.seen)
    finally:
        srv.stop()
        r.close()


def test_the_application_webhook_from_engine_yaml(tmp_path: Path) -> None:
    r = Receiver()
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(APP, project / "app.py")
    (project / "engine.yaml").write_text(
        f"webhook:\n  url: {r.url}\n  secret: {SECRET}\n  headers: {{X-From: yaml}}\n")
    srv = ServerProcess(tmp_path / "state", env={**os.environ, **FAST}).start()
    try:
        srv.deploy(project / "app.py")
        run_id = srv.submit("double", 5)  # the plain JSON body, unchanged
        poll(r.accepted, 30, what="the delivery")
        (entry,) = r.seen
        assert entry["signed"] and entry["headers"]["X-From"] == "yaml"
        assert entry["body"]["run_id"] == run_id and entry["body"]["result"] == 10
        # A submission's own webhook replaces the application's.
        other = Receiver(secret=None)
        try:
            run2 = submit(srv, "double", 6, {"url": other.url})[1]["run_id"]
            poll(other.accepted, 30, what="the submission's delivery")
            assert other.seen[0]["body"]["run_id"] == run2 and len(r.seen) == 1
        finally:
            other.close()
        shown = srv.ok("GET", f"/v1/runs/{run_id}/webhooks")
        assert SECRET not in json.dumps(shown)
    finally:
        srv.stop()
        r.close()


def test_kill_9_before_the_delivery_succeeded_delivers_after_restart(tmp_path: Path) -> None:
    """The run ends; its first attempt is refused, the second held open by the receiver; the
    server is killed (-9) meanwhile. After a restart the delivery — the same delivery id — is
    sent again (once the dead server's claim ran out) and accepted: one delivery id, accepted
    once, requests only with that id."""
    r = Receiver(lambda n: 500 if n == 1 else ("hold" if n == 2 else 200))
    srv = ServerProcess(tmp_path / "state", env={**os.environ, **FAST}).start()
    try:
        srv.deploy(APP)
        status, run = submit(srv, "double", 4, {"url": r.url, "secret": SECRET}, "?wait=30")
        assert status == 200 and run["result"] == 8
        poll(lambda: len(r.seen) >= 2, 20, what="the held attempt")
        srv.kill9()
        killed_at = time.monotonic()
        r.released.set()  # the held request answers into a dead connection
        srv.start()
        poll(r.accepted, 40, what="the delivery after the restart")
        waited = time.monotonic() - killed_at
        time.sleep(1.0)  # nothing more arrives
        assert [e["answer"] for e in r.seen][0] == 500 and len(r.accepted()) == 1
        assert len(r.seen) == 3, [e["answer"] for e in r.seen]
        assert {e["delivery"] for e in r.seen} == {r.seen[0]["delivery"]}
        assert all(e["signed"] for e in r.seen)
        # The claim of the killed server ran out first: timeout (3 s) + 5 s after it was taken.
        assert waited < 20, waited
        (delivery,) = srv.ok("GET", f"/v1/runs/{run['run_id']}/webhooks")["deliveries"]
        assert delivery["state"] == "delivered"
        # The held attempt died with its server: recorded are the refused one and the accepted one.
        assert [a["http_status"] for a in delivery["attempts"]] == [500, 200]
    finally:
        srv.stop()
        r.close()


@pytest.mark.parametrize(("webhook", "words"), [
    ({"url": "ftp://example.com/x"}, "webhook.url"),
    ({"url": "not a url"}, "webhook.url"),
    ({"url": "http://"}, "webhook.url"),
    ({"url": "http://example.com", "headers": {"Content-Type": "text/plain"}}, "webhook.headers"),
    ({"url": "http://example.com", "colour": "red"}, "webhook.colour"),
    ({"secret": "s"}, "webhook.url"),
])
def test_a_bad_webhook_is_a_422_with_one_line(server: ServerProcess, webhook: dict[str, Any], words: str) -> None:
    status, body = submit(server, "double", 1, webhook)
    assert status == 422, body
    assert words in body["error"] and "\n" not in body["error"], body


def test_envelope_mistakes(server: ServerProcess) -> None:
    status, body = server.request("POST", "/v1/applications/double/runs", raw=b"{", headers=SUBMISSION)
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = server.request("POST", "/v1/applications/double/runs", {"inputs": 1}, headers=SUBMISSION)
    assert status == 422 and "inputs" in body["error"]
    status, body = server.request("POST", "/v1/applications/double/runs", {"input": "x"}, headers=SUBMISSION)
    assert status == 422 and "x" in body["error"]


# --- sync execute and batch reads ----------------------------------------------------------------


def test_wait_answers_200_with_the_result_or_202_when_it_runs_out(server: ServerProcess) -> None:
    began = time.monotonic()
    status, run = server.request("POST", "/v1/applications/double/runs?wait=30", 8)
    assert status == 200 and run["status"] == "succeeded" and run["result"] == 16, run
    assert "calls" in run and time.monotonic() - began < 30
    status, run = server.request("POST", "/v1/applications/boom/runs?wait=30", "bad")
    assert status == 200 and run["status"] == "failed" and run["error"]["kind"] == "function_error"
    began = time.monotonic()
    status, accepted = server.request("POST", "/v1/applications/sleepy/runs?wait=0.5", 5)
    waited = time.monotonic() - began
    assert status == 202 and accepted["status"] in ("queued", "running"), accepted
    assert 0.5 <= waited < 3, waited
    for bad in ("301", "-1", "abc", "nan", "inf"):
        status, body = server.request("POST", f"/v1/applications/double/runs?wait={bad}", 1)
        assert status == 400 and "wait" in body["error"], (bad, body)


def test_batch_read_of_many_runs(server: ServerProcess) -> None:
    ids = [server.submit("double", i) for i in range(3)]
    for run_id in ids:
        server.wait(run_id)
    asked = [ids[2], "nope-1", ids[0], ids[1], ids[0], "nope-2"]
    listed = server.ok("GET", "/v1/runs?ids=" + ",".join(asked))
    assert [r["run_id"] for r in listed["runs"]] == [ids[2], ids[0], ids[1]]
    assert all(r["status"] == "succeeded" for r in listed["runs"])
    assert listed["unknown"] == ["nope-1", "nope-2"] and listed["total"] == 3
    assert "unknown" not in server.ok("GET", "/v1/runs?limit=2")
    many = ",".join(f"r{i}" for i in range(500))
    assert server.ok("GET", f"/v1/runs?ids={many}")["unknown"][499] == "r499"
    status, body = server.request("GET", f"/v1/runs?ids={many},r500")
    assert status == 400 and "at most 500" in body["error"]
    status, body = server.request("GET", f"/v1/runs?ids={ids[0]}&status=failed")
    assert status == 400 and "ids" in body["error"]
    status, body = server.request("GET", "/v1/runs?ids=,,")
    assert status == 400


# --- the outbox in the store, on both dialects -----------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'engine.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_the_outbox_commits_with_the_final_status_and_claims_are_exclusive(store_url: str) -> None:
    from engine.store import Delivery, DeliveryAttempt, RunRow, RunWebhook, open_store

    one, two = open_store(store_url), open_store(store_url)
    try:
        def new_run(run_id: str, hook: bool = True) -> None:
            one.create_run(RunRow(run_id=run_id, application="a", status="running", root_call_id=run_id + "-root",
                                  app_file="app.py", module="app", config_path=None, backend="process",
                                  input=b"", created_at=time.time(), version=1))
            if hook:
                one.set_run_webhook(run_id, RunWebhook("http://127.0.0.1:9/h", SECRET, {"X-A": "b"}))
            one.commit()

        new_run("r-rolled-back")
        one.update_run("r-rolled-back", status="succeeded", ended_at=time.time())
        one.rollback()  # the final status never committed: nor did its delivery
        assert one.deliveries("r-rolled-back") == []
        new_run("r-no-hook", hook=False)
        one.update_run("r-no-hook", status="failed")
        one.commit()
        assert one.deliveries("r-no-hook") == []
        for i in range(20):
            new_run(f"r{i}")
            one.update_run(f"r{i}", status="succeeded", ended_at=time.time())
        one.commit()
        assert [d.status for d, _ in two.deliveries("r3")] == ["succeeded"]

        # Two servers claim at once: every due delivery goes to exactly one of them.
        a = one.claim_deliveries("claim-a", 30, 12)
        b = two.claim_deliveries("claim-b", 30, 50)
        assert len(a) == 12 and len(b) == 8
        assert not {d.delivery_id for d in a} & {d.delivery_id for d in b}
        assert one.claim_deliveries("claim-c", 30, 50) == []  # all held

        # An attempt recorded under a claim that no longer holds the row changes nothing but
        # the history; under the live claim it moves the delivery on.
        d: Delivery = a[0]
        stale = DeliveryAttempt(d.delivery_id, 1, time.time(), 0.01, 500, "HTTP 500")
        one.finish_delivery_attempt(d, "claim-b", stale, state="delivered", retry_in=0)
        assert two.deliveries(d.run_id)[0][0].state == "pending"
        one.finish_delivery_attempt(d, "claim-a", stale, state="pending", retry_in=0)
        ok = DeliveryAttempt(d.delivery_id, 2, time.time(), 0.01, 200, None)
        again = two.claim_deliveries("claim-b", 30, 50)
        assert [x.delivery_id for x in again] == [d.delivery_id] and again[0].attempts == 1
        two.finish_delivery_attempt(again[0], "claim-b", ok, state="delivered", retry_in=0)
        ((shown, attempts),) = one.deliveries(d.run_id)
        assert shown.state == "delivered" and [x.http_status for x in attempts] == [500, 500, 200]

        # A claim whose lease ran out (its server died) is taken by the next claimant.
        new_run("r-lease")
        one.update_run("r-lease", status="cancelled")
        one.commit()
        (held,) = one.claim_deliveries("claim-dead", 0.2, 50)
        assert two.claim_deliveries("claim-b", 30, 50) == []
        time.sleep(0.3)
        assert [x.delivery_id for x in two.claim_deliveries("claim-b", 30, 50)] == [held.delivery_id]
    finally:
        one.close()
        two.close()
