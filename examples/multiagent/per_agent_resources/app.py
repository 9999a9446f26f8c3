"""7. Different resources per agent: more CPU and memory for one, a custom image for another.

`deep_reader` gets more CPU and memory than the default; `fact_checker` runs in an image of its
own (`TOOLS_IMAGE`: the runtime image plus `openai` and a persona set at build time). Both are set
in the decorator and overridden in `engine.yaml` — the YAML wins, without touching the code. Each
agent reports what its container enforces (its cgroup's CPU quota and memory limit) and which
image it saw, so the result shows the settings taking effect. The process backend enforces none
of this (limits read as null there).

In `engine.yaml`, `image:` names an image that is already built (`engine-fn-NAME:TAG`, as
`engine image build app.py` prints), for swapping in an image built elsewhere; the image's
definition itself lives in the code.

    cd examples/multiagent/per_agent_resources
    engine run app.py:analyse --input '{"text": "Tea was drunk in China long before it reached Europe."}'
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from engine import Image, ai, application, function
from multiagent.common import LLM_IMAGE, LLM_RETRIES, SECRETS, clip, openai_requirement, use_model

TOOLS_IMAGE = (
    Image(name="llm-tools")
    .run(f"pip install {openai_requirement()}")
    .env("AGENT_PERSONA", "a careful fact-checker")
)


class Limits(BaseModel):
    cpus: float | None
    memory_gb: float | None


class AgentReport(BaseModel):
    agent: str
    text: str
    limits: Limits
    persona: str | None


class Analysis(BaseModel):
    text: str
    reports: list[AgentReport]


def container_limits() -> Limits:
    """The CPU quota and memory limit of this container (cgroup v2, then v1); None if unlimited."""

    def read(*paths: str) -> str:
        for path in paths:
            try:
                return Path(path).read_text().strip()
            except OSError:
                continue
        return ""

    cpus = None
    quota, _, period = read("/sys/fs/cgroup/cpu.max").partition(" ")
    if not period:
        quota = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        period = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota.lstrip("-").isdigit() and int(quota) > 0 and period.isdigit():
        cpus = round(int(quota) / int(period), 3)
    memory = read("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
    memory_gb = round(int(memory) / 1024**3, 3) if memory.isdigit() and int(memory) < 2**60 else None
    return Limits(cpus=cpus, memory_gb=memory_gb)


@function(image=LLM_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120, cpu=1.0, memory=1.0)
def deep_reader(text: str) -> AgentReport:
    answer = ai(f"Read carefully and explain in two sentences: {text}", max_tokens=60)
    return AgentReport(agent="deep_reader", text=clip(answer), limits=container_limits(),
                       persona=os.environ.get("AGENT_PERSONA"))


@function(image=TOOLS_IMAGE, secrets=SECRETS, retries=LLM_RETRIES, timeout=120, cpu=0.5, memory=0.5)
def fact_checker(text: str) -> AgentReport:
    persona = os.environ.get("AGENT_PERSONA", "a fact-checker")
    answer = ai(f"As {persona}, say in one sentence whether this is true: {text}", max_tokens=40)
    return AgentReport(agent="fact_checker", text=clip(answer), limits=container_limits(),
                       persona=os.environ.get("AGENT_PERSONA"))


@function()
def combine(text: str, *reports: AgentReport) -> Analysis:
    return Analysis(text=text, reports=list(reports))


@application()
@function()
def analyse(text: str, model: str | None = None) -> Analysis:
    use_model(model)
    return combine.future(text, deep_reader.future(text), fact_checker.future(text))
