"""8. Recursive fan-out: one request becomes a tree of agents.

`research(question, depth)` splits its question into up to `branching` sub-questions (structured
output, validated), calls itself on each one level deeper, and returns `synthesise` over their
answers as a tail call — so a parent never waits in a container while its subtree works. At
`max_depth` (never more than 3) it answers directly. With the defaults (depth 3, branching 10)
one request is up to 1 + 10 + 100 + 1,000 = 1,111 research calls (and 111 syntheses); pass
smaller numbers to try it. Every finished node is checkpointed, so a failure deep in the tree
reruns only that branch on `engine resume`.

    cd examples/multiagent/recursive_research
    engine run app.py:research --input '{"question": "Why is the sky blue?", "branching": 2, "max_depth": 1}'
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from engine import ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model

DEPTH_CAP = 3
BRANCHING_CAP = 10

Question = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=80)]


class SubQuestions(BaseModel):
    questions: list[Question] = Field(min_length=1, max_length=BRANCHING_CAP)


class Node(BaseModel):
    question: str
    depth: int
    answer: str
    children: list[Node] = Field(default_factory=list)


@application()
@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def research(question: str, depth: int = 0, model: str | None = None, branching: int = BRANCHING_CAP,
             max_depth: int = DEPTH_CAP) -> Node:
    use_model(model)  # the root's; the children pass None and keep it
    max_depth = max(0, min(max_depth, DEPTH_CAP))
    branching = max(0, min(branching, BRANCHING_CAP))
    if depth >= max_depth or branching == 0:
        text = ai(f"Answer in one sentence: {question}", max_tokens=40)
        return Node(question=question, depth=depth, answer=clip(text))
    split = ai(f"Split this question into {branching} simpler sub-questions: {question}",
               schema=SubQuestions, max_tokens=24 * branching)
    subs = list(dict.fromkeys(split.questions))[:branching]
    children = [research.future(q, depth + 1, None, branching, max_depth) for q in subs]
    return synthesise.future(question, depth, *children)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def synthesise(question: str, depth: int, *children: Node) -> Node:
    notes = "\n".join(f"- {c.question} {clip(c.answer, 150)}" for c in children)
    text = ai(f"Question: {question}\nNotes:\n{notes}\nAnswer the question in one or two sentences.",
              max_tokens=50)
    return Node(question=question, depth=depth, answer=clip(text), children=list(children))
