"""The dashboard in a real headless browser: Debian's chromium, driven by Playwright.

The server runs with a token, so the page must first ask for it. Then: a run held open by a
gate is watched while its calls run (nodes appear, status colours), the gate opens, and the
page reaches the final state on its own; a run of 1,222 calls (the recursive example) is drawn
collapsed and stays fast, in the graph and in the timeline; screenshots go to `artifacts/`.
The timeline draws a bar per call and the failed attempts of a retried call; the Cancel button
cancels a running run, Resume finishes a failed one; an application's page builds a form from
its input schema, refuses a bad input with the server's message and starts a run that succeeds.

Needs `chromium` (apt) and `playwright` (pip, the `dev` extra; no browser download: it drives
/usr/bin/chromium). Skipped when they are missing, unless ENGINE_REQUIRE_BROWSER=1 (as in
`make test`), which turns a missing browser into a failure.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from serverlib import REPO, SERVER_APPS, ServerProcess

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "artifacts"
TOKEN = "dashboard-token"


def _missing(what: str) -> None:
    if os.environ.get("ENGINE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required (ENGINE_REQUIRE_BROWSER=1): run `make browser`")
    pytest.skip(f"{what} is not installed (`make browser`)")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package")
    if not CHROMIUM.exists():
        _missing(str(CHROMIUM))
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = ServerProcess(tmp_path_factory.mktemp("dashboard") / "state", token=TOKEN).start()
    try:
        srv.deploy(SERVER_APPS / "server_app.py")
        srv.deploy(REPO / "examples" / "recursive" / "app.py")
        srv.deploy(SERVER_APPS / "dashboard_app.py")
        yield srv
    finally:
        srv.stop()


def new_page(browser, errors: list[str], token: str | None = TOKEN):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if token:
        page.add_init_script(f"sessionStorage.setItem('engine-token', {token!r})")
    return page


def statuses(page) -> list[str]:
    return page.eval_on_selector_all("#graph g.node", "els => els.map(e => e.dataset.status)")


def test_asks_for_the_token_then_follows_a_run_live(browser, server: ServerProcess, tmp_path: Path) -> None:
    gate, log = tmp_path / "gate", tmp_path / "log"
    run_id = server.submit("gated", {"n": 5, "gate": str(gate), "log": str(log)})
    errors: list[str] = []
    page = new_page(browser, errors, token=None)
    try:
        page.goto(f"{server.url}/#/runs/{run_id}")
        page.wait_for_selector("#token-dialog[open]")  # 401: the page asks
        page.fill("#token-input", TOKEN)
        page.click("#token-form button")
        # Nodes appear while the run executes, coloured by status.
        page.wait_for_function(
            "() => document.querySelectorAll('#graph g.node[data-status=running]').length === 5")
        assert page.get_attribute("#run-status", "data-status") == "running"
        assert sorted(statuses(page)).count("running") == 5
        assert page.is_enabled("#btn-cancel") and page.is_disabled("#btn-resume")
        gate.touch()
        # The page reaches the final state by itself.
        page.wait_for_selector("#run-status[data-status=succeeded]")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#graph g.node')].every(e => e.dataset.status === 'succeeded')")
        assert len(statuses(page)) == 7  # gated, 5 × wait_gate, total
        page.wait_for_selector("#run-outcome:not([hidden])")
        assert "10" in page.inner_text("#run-outcome")
        # A call's details and what it printed.
        page.click("#graph g.node:has-text('wait_gate') >> nth=0")
        page.wait_for_function("() => document.querySelector('#call-logs').textContent.includes('waiting for the gate')")
        assert "succeeded" in page.inner_text("#details")
        assert page.is_disabled("#btn-cancel") and page.is_disabled("#btn-resume")  # succeeded: neither applies
    finally:
        page.close()
    assert errors == []


def test_a_thousand_calls_are_drawn_collapsed_and_fast(browser, server: ServerProcess) -> None:
    run_id = server.submit("agent", None)  # an empty body: every parameter has its default
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/runs/{run_id}")
        page.wait_for_selector("#graph g.node")
        page.wait_for_selector("#run-status[data-status=succeeded]", timeout=90_000)
        page.wait_for_function("() => document.querySelector('#graph').dataset.nodes === '1222'")
        visible = int(page.get_attribute("#graph", "data-visible"))
        assert visible <= 80  # 1,222 calls, a few dozen boxes: fan-outs are collapsed
        groups = page.eval_on_selector_all("#graph g.cluster", "els => els.map(e => e.textContent)")
        assert groups and all("×10" in g for g in groups)
        render_ms = page.evaluate("() => { const t = performance.now(); render(); return performance.now() - t; }")
        assert render_ms < 1000, render_ms
        expand_ms = page.evaluate("""() => { const t = performance.now(); expandAll(); render();
                                            return performance.now() - t; }""")
        assert int(page.get_attribute("#graph", "data-visible")) == 1222
        assert expand_ms < 5000, expand_ms
        page.click("#collapse-all")
        assert int(page.get_attribute("#graph", "data-visible")) == visible
        page.click("#graph g.node:not(.cluster):has-text('agent') >> nth=2")
        page.wait_for_function("() => document.querySelector('#call-logs').textContent !== 'loading…'")
        page.evaluate("() => document.querySelector('#graph').scrollTo(0, 0)")
        time.sleep(0.2)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"))
        page.click("#graph g.cluster >> nth=0")  # open one group
        # Its 10 agents appear, each with its leaves collapsed again and its tally: 9 + 20 more.
        assert int(page.get_attribute("#graph", "data-visible")) == visible + 9 + 20
        # The timeline: one row per call, laid out once; scrolling redraws only the rows in view.
        page.click("#view-timeline")
        page.wait_for_function("() => document.querySelector('#timeline').dataset.rows === '1222'")
        assert "view=timeline" in page.url
        layout_ms = page.evaluate("() => { const t = performance.now(); render(); return performance.now() - t; }")
        assert layout_ms < 1000, layout_ms
        frame_ms = page.evaluate("""() => { const s = document.querySelector('#tl-scroll');
            const t = performance.now();
            for (let i = 0; i < 40; i++) { s.scrollTop = i * 700; drawTimeline(); }
            return (performance.now() - t) / 40; }""")
        assert frame_ms < 50, frame_ms
        page.evaluate("() => document.querySelector('#tl-scroll').scrollTo(0, 0)")
        time.sleep(0.2)
        page.screenshot(path=str(ARTIFACTS / "timeline.png"))
        # Folding the root (its ▸ mark) leaves one row, with the span of everything under it.
        box = page.locator("#tl-scroll").bounding_box()
        page.mouse.click(box["x"] + 8, box["y"] + 24 + 11)
        page.wait_for_function("() => document.querySelector('#timeline').dataset.rows === '1'")
        page.mouse.click(box["x"] + 8, box["y"] + 24 + 11)
        page.wait_for_function("() => document.querySelector('#timeline').dataset.rows === '1222'")
        # The runs list shows both runs with their status and duration.
        page.goto(f"{server.url}/#/")
        page.wait_for_selector(f"#runs-body tr[data-run='{run_id}']")
        row = page.inner_text(f"#runs-body tr[data-run='{run_id}']")
        assert "agent" in row and "succeeded" in row
        # Its duration, last, as `fmtDuration` writes it: "722 ms", "1.25 s" or "2m 05s".
        assert re.fullmatch(r"\d+ ms|\d+\.\d+ s|\d+m \d\ds", row.split("\t")[-1].strip()), row
    finally:
        page.close()
    assert errors == []
    print(f"dashboard: render of 1,222 calls collapsed {render_ms:.1f} ms, expanded {expand_ms:.1f} ms; "
          f"timeline layout {layout_ms:.1f} ms, a scrolled frame {frame_ms:.2f} ms")


def timeline(page, key: str) -> int:
    return int(page.get_attribute("#timeline", f"data-{key}"))


def test_the_timeline_shows_each_call_and_the_failed_attempts_of_a_retried_one(
        browser, server: ServerProcess, tmp_path: Path) -> None:
    run_id = server.submit("retried", {"n": 4, "log": str(tmp_path / "log")})
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/runs/{run_id}?view=timeline")
        page.wait_for_selector("#timeline:not([hidden])")
        page.wait_for_selector("#run-status[data-status=succeeded]")
        # retried, 4 × flaky, add: a bar each, every one final; flaky(0) failed twice, then succeeded.
        page.wait_for_function("() => document.querySelector('#timeline').dataset.final === '6'")
        assert (timeline(page, "calls"), timeline(page, "rows")) == (6, 6)
        assert (timeline(page, "retried"), timeline(page, "failed-attempts")) == (1, 2)
        assert page.is_hidden("#graph")
        retried = page.evaluate("() => state.dag.nodes.find((n) => n.failed_attempts.length).id")
        point = page.evaluate(f"() => timelinePoint({retried!r})")
        page.mouse.move(point["x"], point["y"])
        page.wait_for_selector(f"#tl-tip:not([hidden])[data-id='{retried}']")
        tip = page.inner_text("#tl-tip")
        assert "flaky" in tip and retried in tip and "attempts 3" in tip and "succeeded" in tip
        assert tip.count("fails its first two attempts") == 2 and "#1" in tip and "#2" in tip
        assert "waited" in tip and "ran" in tip
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "timeline-retries.png"))
        # The application's own call ran until it handed off to `add` by tail call, not to the end.
        root = page.evaluate("() => state.dag.root")
        root_point = page.evaluate(f"() => timelinePoint({root!r})")
        page.mouse.move(root_point["x"], root_point["y"])
        page.wait_for_selector(f"#tl-tip:not([hidden])[data-id='{root}']")
        assert "handed off by tail call" in page.inner_text("#tl-tip")
        # A click selects the call: its details list the failed attempts.
        page.mouse.click(point["x"], point["y"])
        page.wait_for_function("() => document.querySelector('#details').textContent.includes('failed attempts')")
        assert page.inner_text("#details").count("fails its first two attempts") == 2
        # The graph view is one click away and shows the same call with its attempts.
        page.click("#view-graph")
        page.wait_for_selector(f"#graph g.node[data-id='{retried}']:has-text('×3')")
        # A call's progress and metrics, when it reports them: a bar on its box, and its details.
        page.evaluate(f"""() => {{
            const n = state.dag.nodes.find((n) => n.id === {retried!r});
            n.progress = {{current: 3, total: 4, message: "chunk 3"}};
            n.metrics = {{counters: {{tokens: 1200}}, timers: {{llm: {{count: 2, sum: 1.5}}}}}};
            render(); }}""")
        assert float(page.get_attribute(f"#graph g.node[data-id='{retried}'] rect.progress", "width")) == (196 - 12) * 0.75
        details = page.inner_text("#details")
        assert "3 / 4 · chunk 3" in details and "tokens" in details and "1,200" in details and "750 ms each" in details
        page.click("#view-timeline")
        page.wait_for_selector("#timeline:not([hidden])")
    finally:
        page.close()
    assert errors == []


def test_cancel_a_running_run_from_its_page(browser, server: ServerProcess, tmp_path: Path) -> None:
    gate, log = tmp_path / "gate", tmp_path / "log"
    run_id = server.submit("gated", {"n": 3, "gate": str(gate), "log": str(log)})
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/runs/{run_id}?view=timeline")
        # The timeline follows the run live: its three calls start running.
        page.wait_for_function("() => document.querySelector('#timeline').dataset.running === '3'")
        assert page.is_enabled("#btn-cancel") and page.is_disabled("#btn-resume")
        page.click("#btn-cancel")
        page.wait_for_selector("#run-status[data-status=cancelled]")
        assert "cancel" in page.inner_text("#action-result")
        assert page.get_attribute("#action-result", "data-outcome") in ("cancelled", "cancelling")
        page.wait_for_function("() => document.querySelector('#timeline').dataset.running === '0'")
        assert page.is_disabled("#btn-cancel") and page.is_enabled("#btn-resume")
        assert server.ok("GET", f"/v1/runs/{run_id}")["status"] == "cancelled"
    finally:
        gate.touch()
        page.close()
    assert errors == []


def test_resume_a_failed_run_from_its_page(browser, server: ServerProcess, tmp_path: Path) -> None:
    log = tmp_path / "log"
    run_id = server.submit("two_steps", str(log))  # one parameter: the body is its value
    assert server.wait(run_id)["status"] == "failed"  # step_two fails its first execution
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/runs/{run_id}")
        page.wait_for_selector("#run-status[data-status=failed]")
        page.wait_for_selector("#run-outcome.err:not([hidden])")
        assert page.is_disabled("#btn-cancel") and page.is_enabled("#btn-resume")
        page.click("#btn-resume")
        page.wait_for_selector("#run-status[data-status=succeeded]")
        assert "resumed" in page.inner_text("#action-result")
        page.wait_for_selector("#run-outcome:not(.err):not([hidden])")
        assert "one+two" in page.inner_text("#run-outcome")
        assert page.is_disabled("#btn-resume")
    finally:
        page.close()
    assert errors == []
    lines = log.read_text().split()
    assert (lines.count("step_one"), lines.count("step_two")) == (1, 2)  # step_one's result was reused


def test_an_application_page_builds_a_form_from_its_input_schema_and_starts_a_run(
        browser, server: ServerProcess) -> None:
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/apps")
        page.wait_for_selector("#apps-body tr[data-app=greet]")
        assert "greets a person" in page.inner_text("#apps-body tr[data-app=greet]")
        page.click("#apps-body tr[data-app=greet] a")
        page.wait_for_selector("#form-fields [data-path='person.name']")
        assert page.locator("#versions-body tr").count() >= 1
        assert page.input_value("[data-path='greeting']") == "hello"  # the parameter's default
        assert page.get_attribute("[data-path='person.age']", "type") == "number"
        # A missing field: the server's message, and the page stays.
        page.fill("[data-path='person.name']", "Ada")
        page.click("#submit-run")
        page.wait_for_selector("#form-result.err")
        assert "person.age" in page.inner_text("#form-result")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "application.png"))
        assert "#/apps/greet" in page.url
        page.fill("[data-path='person.age']", "36")
        page.click("#submit-run")
        page.wait_for_url(re.compile(r".*#/runs/[^/?]+$"))
        page.wait_for_selector("#run-status[data-status=succeeded]")
        page.wait_for_selector("#run-outcome:not([hidden])")
        assert "hello Ada (36)" in page.inner_text("#run-outcome")
    finally:
        page.close()
    assert errors == []


def test_a_rerun_shows_its_origin_and_marks_the_calls_it_reused(
        browser, server: ServerProcess, tmp_path: Path) -> None:
    log = tmp_path / "log"
    origin = server.submit("two_steps", str(log))
    assert server.wait(origin)["status"] == "failed"  # step_two fails its first execution
    server.ok("POST", f"/v1/runs/{origin}/resume")
    assert server.wait(origin)["status"] == "succeeded"
    status, body = server.request("POST", f"/v1/runs/{origin}/rerun", {"from": "step_two"})
    assert status == 202, body
    assert server.wait(body["run_id"])["result"] == "one+two"
    reused = {n["id"] for n in server.ok("GET", f"/v1/runs/{body['run_id']}/dag")["nodes"] if n["reused"]}
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/runs/{body['run_id']}")
        page.wait_for_selector("#run-status[data-status=succeeded]")
        assert f"rerun of {origin} from step_two" in page.inner_text("#run-meta")
        assert page.inner_text("#run-reused") == "1 executed, 2 reused"
        shown = page.eval_on_selector_all("#graph g.node.reused", "els => els.map(e => e.dataset.id)")
        assert set(shown) == reused and len(reused) == 2
    finally:
        page.close()
    assert errors == []
    lines = log.read_text().split()
    assert (lines.count("step_one"), lines.count("step_two")) == (1, 3)  # step_one was reused again
