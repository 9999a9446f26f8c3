"""3. Multi-perspective analysis: specialists read the same proposal, a judge decides.

Three specialist agents — risk, finance, legal — each read the proposal from their angle and
return a structured verdict; the judge weighs the three. They are separate functions so that each
has its own settings (the legal reviewer writes more, so it has a longer timeout and more
retries in `engine.yaml`). The specialists run in parallel and each verdict is checkpointed when
it arrives: if the slow one fails for good (its retries exhausted, say because the model server
went away), the run fails with its finished siblings stored, and `engine resume RUN_ID` runs only
the failed specialist and the judge — the others are never asked again.

    cd examples/multiagent/multi_perspective
    engine run app.py:review --input '{"proposal": "Open a second office in Lisbon next year."}'
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model

Verdict = Literal["approve", "revise", "reject"]
Sentence = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=100)]


class Opinion(BaseModel):
    """What the model is asked to fill in."""

    verdict: Verdict
    reason: Sentence


class Assessment(BaseModel):
    angle: str
    verdict: Verdict
    reason: str


class Decision(BaseModel):
    proposal: str
    verdict: Verdict
    reason: str
    assessments: list[Assessment]


def assess(angle: str, proposal: str, max_tokens: int = 60) -> Assessment:
    opinion = ai(
        f"You review proposals for {angle}. Proposal: {proposal}\n"
        "Give a verdict (approve, revise or reject) and a one-sentence reason.",
        schema=Opinion, max_tokens=max_tokens,
    )
    return Assessment(angle=angle, verdict=opinion.verdict, reason=clip(opinion.reason))


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def risk_review(proposal: str) -> Assessment:
    return assess("risk", proposal)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def finance_review(proposal: str) -> Assessment:
    return assess("finance", proposal)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def legal_review(proposal: str) -> Assessment:
    return assess("legal compliance", proposal, max_tokens=90)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def judge(proposal: str, *assessments: Assessment) -> Decision:
    notes = "\n".join(f"- {a.angle}: {a.verdict}, {clip(a.reason, 150)}" for a in assessments)
    opinion = ai(
        f"Proposal: {proposal}\nReviews:\n{notes}\n"
        "As the judge, give the final verdict (approve, revise or reject) and a one-sentence reason.",
        schema=Opinion, max_tokens=60,
    )
    return Decision(proposal=proposal, verdict=opinion.verdict, reason=clip(opinion.reason),
                    assessments=list(assessments))


@application()
@function()
def review(proposal: str, model: str | None = None) -> Decision:
    use_model(model)
    specialists = [risk_review, finance_review, legal_review]
    return judge.future(proposal, *[s.future(proposal) for s in specialists])
