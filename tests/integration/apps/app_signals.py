"""Draft → wait for a person's approval → publish: `engine.signal` futures passed to a function,
so that nothing runs, and no executor is held, while the run waits. `draft` records each of its
executions (the tests count them); `gated_review` drafts first (blocking, until the test
creates the gate file) and only then creates its signal future, so that a signal can be sent
before its future exists; `double_review` waits for two signals (the dashboard's test sends
them from the run's page)."""

from __future__ import annotations

import os
import time
from typing import Any

from sidefx import record

from engine import application, function, signal


@function()
def draft(topic: str, log: str) -> str:
    record(log, "draft", topic)
    return f"draft about {topic}"


@function()
def gated_draft(topic: str, log: str, gate: str) -> str:
    record(log, "draft", topic)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"draft about {topic}"


@function()
def publish(text: str, approval: Any, log: str) -> dict:
    record(log, "publish")
    return {"text": text, "approval": approval}


@function()
def gather(items: list) -> list:
    return list(items)


@application()
@function()
def review(topic: str, log: str) -> dict:
    return publish.future(draft.future(topic, log), signal("approval"), log)  # type: ignore[return-value]


@application()
@function()
def review_with_timeout(topic: str, log: str, timeout: float) -> dict:
    return publish.future(draft.future(topic, log), signal("approval", timeout=timeout), log)  # type: ignore[return-value]


@application()
@function()
def gated_review(topic: str, log: str, gate: str) -> dict:
    text = gated_draft(topic, log, gate)
    return publish.future(text, signal("approval"), log)  # type: ignore[return-value]


@function()
def publish_signed(text: str, approval: Any, legal: Any, log: str) -> dict:
    record(log, "publish")
    return {"text": text, "approval": approval, "legal": legal}


@application()
@function()
def double_review(topic: str, log: str) -> dict:
    """Two people sign off: the run waits for `approval` and for `legal`."""
    return publish_signed.future(draft.future(topic, log), signal("approval"), signal("legal"), log)  # type: ignore[return-value]


@application()
@function()
def collect(n: int) -> list:
    return gather.future([signal("msg", repeatable=True) for _ in range(n)])  # type: ignore[return-value]
