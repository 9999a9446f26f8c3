"""9. Async functions: the fan-out of example 1 with `async def`, `await` and `asyncio.gather`.

Calling an `async def` function returns a coroutine; awaiting it runs the call in the function's
own container. `asyncio.gather` awaits several at once, so the sub-agents run in parallel, and
inside a sub-agent `asyncio.to_thread(ai, ...)` keeps the event loop free while the model answers
(the request context follows the call into the thread). The
orchestrator stays alive here (it awaits its children instead of making a tail call), which is
the price of writing the combination step as ordinary code after the gather.

    cd examples/multiagent/async_fanout
    engine run app.py:orchestrator --input '{"question": "Why do we sleep?"}'
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model

ANGLES = ["biology", "history", "everyday life", "health"]


class Perspective(BaseModel):
    angle: str
    text: str


class Answer(BaseModel):
    question: str
    answer: str
    perspectives: list[Perspective]


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
async def sub_agent(question: str, angle: str) -> Perspective:
    text = await asyncio.to_thread(ai, f"In one sentence, from the angle of {angle}: {question}",
                                   max_tokens=40)
    return Perspective(angle=angle, text=clip(text))


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
async def combine(question: str, perspectives: list[Perspective]) -> str:
    notes = "\n".join(f"- {p.angle}: {clip(p.text, 200)}" for p in perspectives)
    return clip(await asyncio.to_thread(ai, f"Question: {question}\nNotes:\n{notes}\nAnswer in two sentences.",
                                        max_tokens=60), 600)


@application()
@function()
async def orchestrator(question: str, angles: int = 3, model: str | None = None) -> Answer:
    use_model(model)
    chosen = ANGLES[: max(1, min(angles, len(ANGLES)))]
    perspectives = await asyncio.gather(*[sub_agent(question, a) for a in chosen])
    answer = await combine(question, list(perspectives))
    return Answer(question=question, answer=answer, perspectives=list(perspectives))
