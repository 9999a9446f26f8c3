"""1. Fan-out and combine.

The orchestrator creates one future per sub-agent — each answers the question from one angle —
and returns the combiner as a tail call. Returning the future finishes the orchestrator at once
(its container is released); the sub-agents run in parallel, each in its own container, and the
combiner starts when all of them have answered. Every answer is checkpointed as it arrives: if
one sub-agent fails after its retries, `engine resume RUN_ID` runs only that one and the
combiner again.

    cd examples/multiagent/fanout_combine
    engine run app.py:orchestrator --input '{"question": "Why do cities grow?"}'
"""

from __future__ import annotations

from pydantic import BaseModel

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model

ANGLES = ["history", "economics", "technology", "daily life", "risks"]


class Perspective(BaseModel):
    angle: str
    text: str


class Answer(BaseModel):
    question: str
    answer: str
    perspectives: list[Perspective]


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def sub_agent(question: str, angle: str) -> Perspective:
    text = ai(f"In one sentence, from the angle of {angle}: {question}", max_tokens=40)
    return Perspective(angle=angle, text=clip(text))


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def combine(question: str, *perspectives: Perspective) -> Answer:
    notes = "\n".join(f"- {p.angle}: {clip(p.text, 200)}" for p in perspectives)
    text = ai(f"Question: {question}\nNotes:\n{notes}\nAnswer the question in two sentences.", max_tokens=60)
    return Answer(question=question, answer=clip(text, 600), perspectives=list(perspectives))


@application()
@function()
def orchestrator(question: str, angles: int = 3, model: str | None = None) -> Answer:
    """`angles` sub-agents (1 to 5), one per angle; `model` is the run's, for every one of them."""
    use_model(model)
    chosen = ANGLES[: max(1, min(angles, len(ANGLES)))]
    return combine.future(question, *[sub_agent.future(question, a) for a in chosen])
