"""5. Chaining parallel stages: stage 2 fans out over stage 1's results.

Stage 1 drafts one idea per seed, in parallel. `stage_two` receives every stage-1 result (the
engine starts it once they all exist) and fans out again: one critic per idea, in parallel.
`shortlist` ranks the critiques. Each hand-over is a tail call, so no function waits in a
container for the next stage; the orchestrator only describes the first hop.

    cd examples/multiagent/chained_stages
    engine run app.py:chain --input '{"goal": "get more people to cycle to work"}'
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model


class Idea(BaseModel):
    seed: str
    idea: str


class Score(BaseModel):
    """What the critic is asked to fill in."""

    score: int = Field(ge=1, le=10)
    note: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=80)]


class Critique(BaseModel):
    idea: Idea
    score: int
    note: str


class Shortlist(BaseModel):
    goal: str
    ranked: list[Critique]


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def draft_idea(goal: str, seed: str) -> Idea:
    text = ai(f"Goal: {goal}\nIn one sentence, propose one {seed} idea.", max_tokens=40)
    return Idea(seed=seed, idea=clip(text))


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def critique(goal: str, idea: Idea) -> Critique:
    score = ai(f"Goal: {goal}\nIdea: {idea.idea}\nScore the idea from 1 to 10 and add a short note.",
               schema=Score, max_tokens=50)
    return Critique(idea=idea, score=score.score, note=clip(score.note))


@function()
def stage_two(goal: str, *ideas: Idea) -> Shortlist:
    """Stage 2: one critic per stage-1 idea, then the ranking — all as one tail call."""
    return shortlist.future(goal, *[critique.future(goal, idea) for idea in ideas])


@function()
def shortlist(goal: str, *critiques: Critique) -> Shortlist:
    return Shortlist(goal=goal, ranked=sorted(critiques, key=lambda c: -c.score))


@application()
@function()
def chain(goal: str, seeds: list[str] | None = None, model: str | None = None) -> Shortlist:
    use_model(model)
    seeds = seeds or ["cheap", "quick", "bold"]
    return stage_two.future(goal, *[draft_idea.future(goal, s) for s in seeds])
