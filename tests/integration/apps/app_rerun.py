"""A research-like tree for `engine rerun` (tests/integration/test_rerun.py).

The root plans topics (a call it waits for), researches each one — `research` looks up two facts
and hands off to `combine` by tail call — critiques each one, and waits for `synthesise` over the
research. Every function records each execution; `combine` and `synthesise` stamp their results
with VERSION, and `lookup` sleeps PAUSE × (i + 1): the tests change both in a copy of this file
between a run and its rerun.
"""

from __future__ import annotations

import time

from sidefx import record

from engine import application, function

VERSION = "v1"
PAUSE = 0.0


@function()
def plan(question: str, log: str) -> list[str]:
    record(log, "plan", question)
    return [f"{question}-{i}" for i in range(3)]


@function(concurrency=6)
def lookup(topic: str, i: int, log: str) -> str:
    record(log, "lookup", topic, i)
    time.sleep(PAUSE * (i + 1))
    return f"fact {i} of {topic}"


@function()
def combine(topic: str, log: str, *facts: str) -> str:
    record(log, "combine", topic)
    return f"{topic}: {'; '.join(facts)} ({VERSION})"


@function()
def research(topic: str, log: str) -> str:
    record(log, "research", topic)
    facts = [lookup.future(topic, i, log) for i in range(2)]
    return combine.future(topic, log, *facts)  # type: ignore[return-value]


@function()
def critique(topic: str, log: str) -> str:
    record(log, "critique", topic)
    return f"critique of {topic}"


@function()
def synthesise(question: str, log: str, *reports: str) -> str:
    record(log, "synthesise", question)
    return f"{VERSION} answer to {question}: " + " | ".join(reports)


@application()
@function()
def rerun_app(question: str, log: str) -> dict[str, object]:
    record(log, "root", question)
    topics = plan(question, log)
    reports = [research.future(t, log) for t in topics]
    critiques = [critique(t, log) for t in topics]
    answer = synthesise(question, log, *reports)
    return {"answer": answer, "critiques": critiques}
