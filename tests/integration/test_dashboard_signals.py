"""The run page's signal forms in a real headless browser (Debian's chromium, driven by
Playwright, as in test_dashboard.py): a run waiting for two people shows as `waiting` with a form
per open wait; text that is not JSON gets the server's 400, the approval is sent from its form,
a second approval gets the server's 409 while the run still waits for the other signal, the
last signal finishes the run, and a send after that is refused (409) too. What the server stored
is checked over HTTP: one signal of each name, `draft` executed once, `publish` once. A
screenshot of the forms goes to `artifacts/dashboard-signals.png`."""

from __future__ import annotations

from pathlib import Path

import pytest
from serverlib import ServerProcess
from test_dashboard import ARTIFACTS, TOKEN, browser, new_page  # noqa: F401 - `browser` is a fixture

pytestmark = pytest.mark.browser

APP = Path(__file__).resolve().parent / "apps" / "app_signals.py"


@pytest.fixture
def server(tmp_path: Path):
    srv = ServerProcess(tmp_path / "state", token=TOKEN).start()
    try:
        srv.deploy(APP)
        yield srv
    finally:
        srv.stop()


def send(page, name: str, text: str) -> str:
    """Type `text` into the form of signal `name`, press Send, and return the server's answer
    as the page shows it (the form's data-outcome: sent, or the HTTP status)."""
    form = f"#run-waits form[data-signal='{name}']"
    page.fill(f"{form} textarea", text)
    page.evaluate(f"() => delete document.querySelector(\"{form} .action-result\").dataset.outcome")
    page.click(f"{form} button")
    page.wait_for_selector(f"{form} .action-result[data-outcome]")
    return page.get_attribute(f"{form} .action-result", "data-outcome")


def test_signals_are_sent_from_the_run_page_and_the_server_answers_each(
        browser, server: ServerProcess, side_effects) -> None:  # noqa: F811 - the fixture
    run_id = server.submit("double_review", {"topic": "owls", "log": str(side_effects)})
    errors: list[str] = []
    page = new_page(browser, errors)
    try:
        page.goto(f"{server.url}/#/runs/{run_id}")
        # Waiting for two people: the pill says so, and each open wait has its form.
        page.wait_for_selector("#run-status[data-status=waiting]")
        page.wait_for_selector("#run-waits form[data-signal='legal']")
        forms = page.eval_on_selector_all("#run-waits form", "els => els.map(e => e.dataset.signal)")
        assert sorted(forms) == ["approval", "legal"]
        assert "waiting for signal approval" in page.inner_text("#run-waits form[data-signal='approval']")
        assert side_effects.count("draft") == 1 and side_effects.count("publish") == 0

        form = "#run-waits form[data-signal='approval']"
        assert send(page, "approval", "{not json") == "400"
        assert "not valid JSON" in page.inner_text(f"{form} .action-result")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-signals.png"))
        assert send(page, "approval", '{"approved": true, "note": "ship it"}') == "sent"
        assert "approval #0" in page.inner_text(f"{form} .action-result")
        # Its wait closes; the run still waits for `legal`.
        page.wait_for_selector(f"{form}.closed")
        assert page.get_attribute("#run-status", "data-status") == "waiting"
        assert send(page, "approval", '{"approved": false}') == "409"
        assert "already has signal 'approval'" in page.inner_text(f"{form} .action-result")

        assert send(page, "legal", "") == "sent"  # an empty payload is null
        page.wait_for_selector("#run-status[data-status=succeeded]")
        page.wait_for_selector("#run-outcome:not([hidden])")
        outcome = page.inner_text("#run-outcome")
        assert "draft about owls" in outcome and "ship it" in outcome
        assert send(page, "legal", "true") == "409"
        assert "already succeeded" in page.inner_text("#run-waits form[data-signal='legal'] .action-result")
    finally:
        page.close()
    assert errors == []
    run = server.ok("GET", f"/v1/runs/{run_id}")
    assert run["result"] == {"text": "draft about owls", "approval": {"approved": True, "note": "ship it"},
                             "legal": None}
    assert sorted((s["name"], s["seq"]) for s in run["signals"]) == [("approval", 0), ("legal", 0)]
    assert side_effects.count("draft") == 1 and side_effects.count("publish") == 1
