"""11. Draft, review by a person, publish.

The model writes a short draft; a person reads it and approves or rejects it; only then is it
published. The entry point returns `publish.future(draft.future(topic), signal("approval"))`:
`publish` runs once both its inputs exist, the draft (a call) and the approval (a signal sent
from outside the run). Between the two the run is `waiting`: nothing of it executes and no
container is held, for minutes or for days. The approval is stored the moment it is sent, so
it survives a crash of the engine (`kill -9`) and a resume; the draft's checkpoint is reused
then, so the person approves the text they read, not a new one.

Served (the way a person's approval usually arrives: over HTTP, or from the run's page on the
dashboard, which shows a form for each open wait):

    cd examples/multiagent/approval
    engine server &                       # with OPENAI_BASE_URL and OPENAI_API_KEY set
    engine deploy app.py
    curl -X POST localhost:8900/v1/applications/post/runs -d '{"topic": "city bees"}'
    curl localhost:8900/v1/runs/RUN_ID    # "waiting": true, "waits": [{"name": "approval", ...}]
    curl -X POST localhost:8900/v1/runs/RUN_ID/signals/approval -d '{"approved": true, "note": "ok"}'

Or with `engine run`, which waits in the foreground, and `engine signal` from another terminal:

    engine run app.py:post --input '{"topic": "city bees"}' --model gemma-3-270m
    engine signal RUN_ID approval --data '{"approved": false, "note": "too vague"}'
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from engine import ai, ai_model, application, function, signal
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, use_model


class Draft(BaseModel):
    topic: str
    text: str
    model: str  # the model that wrote it


class Approval(BaseModel):
    """What the reviewer sends: `{"approved": true, "note": "..."}` (or just `true` / `false`)."""

    approved: bool
    note: str = ""


class Outcome(BaseModel):
    status: Literal["published", "rejected"]
    text: str | None  # the published text; None when rejected
    note: str
    draft: Draft


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120)
def draft(topic: str) -> Draft:
    text = clip(ai(f"Write two short sentences for a newsletter about {topic}.", max_tokens=60), 600)
    print(f"draft by {ai_model()}: {text}")  # what the reviewer reads: the call's logs
    return Draft(topic=topic, text=text, model=ai_model())


@function()
def publish(draft: Draft, approval: Any) -> Outcome:
    """Publish the draft as it was approved, or say why not. A payload that is not an approval
    rejects the draft with a note saying what was expected: the signal is taken once, so
    failing here would leave the run with nothing to wait for."""
    try:
        decision = Approval.model_validate({"approved": approval} if isinstance(approval, bool) else approval)
    except ValidationError:
        return Outcome(status="rejected", text=None, draft=draft,
                       note=f'not an approval: {clip(repr(approval), 200)} (send {{"approved": true, "note": "..."}})')
    if not decision.approved:
        return Outcome(status="rejected", text=None, note=decision.note, draft=draft)
    text = f"{draft.text}\n\n({decision.note})" if decision.note else draft.text
    return Outcome(status="published", text=text, note=decision.note, draft=draft)


@application()
@function()
def post(topic: str, model: str | None = None) -> Outcome:
    """Draft a post about `topic` with `model` (default: the run's), publish it once approved."""
    use_model(model)
    return publish.future(draft.future(topic), signal("approval"))  # type: ignore[return-value]
