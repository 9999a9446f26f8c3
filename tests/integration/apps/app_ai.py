"""`engine.ai` in a real run (tests/integration/test_ai_run.py): the root sets the run's model, a
child asks for structured output and is retried when the answer is malformed. `model_app` takes
no model at all: `engine run --model` chooses it for the whole tree, and each call reports the
model it would use (`ai_model()`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from engine import RequestContext, Retries, ai, ai_model, application, function

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


@function(secrets=SECRETS)
def ask(question: str, model: str | None = None) -> dict:
    return {"text": ai(question, model=model, max_tokens=10), "run_model": ai_model()}


@function()
def pack(root_model: str, *answers: dict) -> dict:
    return {"root": root_model, "answers": list(answers)}


@application()
@function()
def model_app(question: str) -> dict:
    # One after the other, so that the model server sees the requests in this order.
    first = ask(question)
    second = ask(f"again: {question}", "explicit-model")  # model= wins over the run's
    return pack.future(ai_model(), first, second, ask.future(f"last: {question}"))  # type: ignore[return-value]
