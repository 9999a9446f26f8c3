"""2. Parallel research with synthesis.

A planner splits the question into sub-topics as structured output: JSON validated by a pydantic
model (`Plan`). A small model's JSON is often malformed — `engine.ai` raises `ModelOutputError`
for anything that does not validate, and the planner's `Retries` ask again. The orchestrator blocks
on the plan (it needs the topics to know what to fan out over), starts one researcher per topic
in parallel, and returns the synthesis as a tail call.

    cd examples/multiagent/research_synthesis
    engine run app.py:research --input '{"question": "How do bees find flowers?", "subtopics": 3}'
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model

Topic = Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=40)]


class Plan(BaseModel):
    topics: list[Topic] = Field(min_length=1, max_length=10)


class Finding(BaseModel):
    topic: str
    summary: str


class Report(BaseModel):
    question: str
    findings: list[Finding]
    synthesis: str


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def plan(question: str, subtopics: int) -> list[str]:
    answer = ai(f"List {subtopics} short sub-topics to research for the question: {question}",
                schema=Plan, max_tokens=16 * subtopics)
    # A small model repeats itself: keep distinct topics, in order. `Plan` already guarantees one.
    return list(dict.fromkeys(answer.topics))[:subtopics]


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def investigate(question: str, topic: str) -> Finding:
    text = ai(f"Question: {question}\nIn one sentence, what matters about {topic}?", max_tokens=40)
    return Finding(topic=topic, summary=clip(text))


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def synthesise(question: str, *findings: Finding) -> Report:
    notes = "\n".join(f"- {f.topic}: {clip(f.summary, 200)}" for f in findings)
    text = ai(f"Question: {question}\nFindings:\n{notes}\nAnswer the question in two sentences.", max_tokens=60)
    return Report(question=question, findings=list(findings), synthesis=clip(text, 600))


@application()
@function()
def research(question: str, subtopics: int = 3, model: str | None = None) -> Report:
    use_model(model)
    topics = plan(question, max(1, min(subtopics, 10)))  # a blocking call: we need the plan
    return synthesise.future(question, *[investigate.future(question, t) for t in topics])
