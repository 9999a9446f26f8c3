"""10. Any framework inside a function: one sub-agent speaks plain HTTP, one uses `openai`.

The function boundary is the container boundary: what a function's body imports is its own
business. `http_agent` calls the OpenAI-compatible endpoint with nothing but the standard
library (`urllib.request`), in the plain runtime image, which has no `openai` package at all;
`openai_agent` uses the `openai` client in the `llm` image. Any agent library works the same way:
install it in the function's `Image` and call it in the body. Both read `OPENAI_BASE_URL` and
`OPENAI_API_KEY`, passed to their containers as secrets, and both use the run's model (the
request state's `engine.model`, which `engine.ai` reads by itself and `http_agent` reads by hand).

    cd examples/multiagent/plain_http
    engine run app.py:orchestrator --input '{"question": "What do owls eat?"}'
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.request

from pydantic import BaseModel

from engine import ModelOutputError, RequestContext, ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model


class AgentAnswer(BaseModel):
    agent: str
    text: str
    openai_installed: bool


class Comparison(BaseModel):
    question: str
    answers: list[AgentAnswer]


def chat_over_http(prompt: str, max_tokens: int) -> str:
    """POST /chat/completions with urllib: the whole "framework" of this agent."""
    model = RequestContext.get().state.get("engine.model") or os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
    }
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"].rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=90) as response:  # noqa: S310 - the configured endpoint
        reply = json.load(response)
    text = (reply["choices"][0]["message"].get("content") or "").strip()
    if not text:
        raise ModelOutputError("the model returned an empty answer")
    return text


@function(secrets=SECRETS, retries=LLM_RETRIES, timeout=120)  # the runtime image: no openai here
def http_agent(question: str) -> AgentAnswer:
    text = chat_over_http(f"Answer in one sentence: {question}", max_tokens=40)
    return AgentAnswer(agent="http_agent", text=clip(text),
                       openai_installed=importlib.util.find_spec("openai") is not None)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def openai_agent(question: str) -> AgentAnswer:
    text = ai(f"Answer in one sentence: {question}", max_tokens=40)
    return AgentAnswer(agent="openai_agent", text=clip(text),
                       openai_installed=importlib.util.find_spec("openai") is not None)


@function()
def compare(question: str, *answers: AgentAnswer) -> Comparison:
    return Comparison(question=question, answers=list(answers))


@application()
@function()
def orchestrator(question: str, model: str | None = None) -> Comparison:
    use_model(model)
    return compare.future(question, http_agent.future(question), openai_agent.future(question))
