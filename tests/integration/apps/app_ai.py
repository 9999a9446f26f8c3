"""`engine.ai` in a real run (tests/integration/test_ai.py): the root sets the run's model, a
child asks for structured output and is retried when the answer is malformed."""

from __future__ import annotations

from pydantic import BaseModel, Field

from engine import RequestContext, Retries, ai, application, function

SECRETS = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]


class Plan(BaseModel):
    topics: list[str] = Field(min_length=1)


@function(secrets=SECRETS, retries=Retries(max_retries=2, initial_delay=0.1))
def planner(question: str) -> list[str]:
    return ai(f"Topics of: {question}", schema=Plan, max_tokens=30).topics


@function(secrets=SECRETS)
def writer(question: str, topics: list[str]) -> str:
    return ai(f"{question} Cover: {', '.join(topics)}", system="Be brief.")


@application()
@function()
def ai_app(question: str, model: str) -> str:
    RequestContext.get().state.set("engine.model", model)
    return writer.future(question, planner.future(question))
