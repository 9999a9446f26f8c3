"""The dashboard in a real headless browser: Debian's chromium, driven by Playwright.

The server runs with a token, so the page must first ask for it. Then: a run held open by a
gate is watched while its calls run (nodes appear, status colours), the gate opens, and the
page reaches the final state on its own; a run of 1,222 calls (the recursive example) is drawn
collapsed and stays fast; a screenshot goes to `artifacts/dashboard.png`.

Needs `chromium` (apt) and `playwright` (pip, the `dev` extra; no browser download: it drives
/usr/bin/chromium). Skipped when they are missing, unless ENGINE_REQUIRE_BROWSER=1 (as in
`make test`), which turns a missing browser into a failure.
"""

from __future__ import annotations

import os
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
        assert not page.is_hidden("#btn-cancel")
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
        assert page.is_hidden("#btn-cancel")
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
        # The runs list shows both runs with their status and duration.
        page.goto(f"{server.url}/#/")
        page.wait_for_selector(f"#runs-body tr[data-run='{run_id}']")
        row = page.inner_text(f"#runs-body tr[data-run='{run_id}']")
        assert "agent" in row and "succeeded" in row and " s" in row
    finally:
        page.close()
    assert errors == []
    print(f"dashboard: render of 1,222 calls collapsed {render_ms:.1f} ms, expanded {expand_ms:.1f} ms")
