"""Tree benchmark: example 8's recursive research tree with the LLM replaced by a 200 ms sleep.

The shape is `examples/multiagent/recursive_research/app.py`'s: `research(question, depth)` makes
one model request (a plan at inner nodes, an answer at the leaves), fans out to `branching`
sub-questions one level deeper, and returns `synthesise.future(...)` over their answers as a tail
call; `synthesise` makes one model request too. Every model request is `time.sleep(0.2)` instead
(`LLM_SECONDS`), so the numbers are the engine's — scheduling, containers, checkpoints — around
calls that wait the way LLM calls wait.

At depth 3 × branching 10: 1 + 10 + 100 + 1,000 = 1,111 `research` calls and 1 + 10 + 100 = 111
`synthesise` calls. The critical path is 7 sequential model requests — 4 `research` levels down,
3 `synthesise` levels up — so with unlimited parallelism a run takes 7 × 0.2 s = 1.4 s (the ideal
`run.py` compares with). `engine.yaml` beside this file sets the pools for I/O-bound calls.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from engine import application, function

LLM_SECONDS = 0.2
DEPTH_CAP = 3
BRANCHING_CAP = 10


class Node(BaseModel):
    question: str
    depth: int
    answer: str
    children: list[Node] = Field(default_factory=list)


def fake_llm(prompt: str) -> str:
    time.sleep(LLM_SECONDS)  # stands in for one model request
    return f"an answer to: {prompt[:60]}"


@application()
@function(timeout=120)
def research(question: str, depth: int = 0, branching: int = BRANCHING_CAP,
             max_depth: int = DEPTH_CAP) -> Node:
    max_depth = max(0, min(max_depth, DEPTH_CAP))
    branching = max(0, min(branching, BRANCHING_CAP))
    if depth >= max_depth or branching == 0:
        return Node(question=question, depth=depth, answer=fake_llm(question))
    fake_llm(f"Split into {branching} sub-questions: {question}")  # the planning request
    subs = [f"{question} / part {i + 1}" for i in range(branching)]
    children = [research.future(q, depth + 1, branching, max_depth) for q in subs]
    return synthesise.future(question, depth, *children)  # type: ignore[return-value]


@function(timeout=120)
def synthesise(question: str, depth: int, *children: Node) -> Node:
    answer = fake_llm(f"Question: {question}; notes from {len(children)} sub-agents")
    return Node(question=question, depth=depth, answer=answer, children=list(children))
