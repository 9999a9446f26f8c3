"""6. Futures for more control: start sub-agents, work meanwhile, act on the first results.

The orchestrator starts one sub-agent per style (`.run()` starts a future at once), asks the
model for keywords itself while they work, then waits with `Future.wait(...,
return_when=RETURN_WHEN.FIRST_COMPLETED)` and handles each answer as it arrives. As soon as
`enough` answers are in it returns, without waiting for the stragglers: when a run finishes, the
engine cancels its calls that are still queued or running and stops their containers. A failed
sub-agent (retries exhausted) does not fail the orchestrator: `Future.wait` never raises, and a
done future's `.exception` says whether it failed.

    cd examples/multiagent/futures_control
    engine run app.py:orchestrator --input '{"question": "What is a good first pet?"}'
"""

from __future__ import annotations

import time

from pydantic import BaseModel

from engine import RETURN_WHEN, Future, ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model


class Draft(BaseModel):
    style: str
    text: str


class Outcome(BaseModel):
    question: str
    keywords: str
    answers: list[Draft]
    arrival_seconds: list[float]
    failed: list[str]
    not_waited_for: list[str]


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def answer(question: str, style: str) -> Draft:
    text = ai(f"Answer in one {style} sentence: {question}", max_tokens=40)
    return Draft(style=style, text=clip(text))


@application()
@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=300)
def orchestrator(question: str, styles: list[str] | None = None, enough: int = 2,
                 model: str | None = None) -> Outcome:
    use_model(model)
    styles = styles or ["plain", "vivid", "formal"]
    started = time.monotonic()
    futures = {answer.future(question, s).run(): s for s in styles}

    # Our own work, while the sub-agents run in their containers.
    keywords = clip(ai(f"Give three keywords for: {question}", max_tokens=16), 120)

    answers: list[Draft] = []
    arrival: list[float] = []
    failed: list[str] = []
    pending = list(futures)
    while pending and len(answers) < enough:
        done, pending = Future.wait(pending, timeout=240, return_when=RETURN_WHEN.FIRST_COMPLETED)
        if not done:
            raise RuntimeError(f"no sub-agent answered within 240 s ({len(pending)} still running)")
        for fut in done:
            if fut.exception is not None:
                failed.append(futures[fut])
                print(f"{futures[fut]} failed: {fut.exception}")
                continue
            answers.append(fut.result())
            arrival.append(round(time.monotonic() - started, 2))
            print(f"{futures[fut]} answered after {arrival[-1]} s")
    if not answers:
        raise RuntimeError(f"every sub-agent failed: {failed}")
    return Outcome(question=question, keywords=keywords, answers=answers, arrival_seconds=arrival,
                   failed=failed, not_waited_for=[futures[f] for f in pending])
