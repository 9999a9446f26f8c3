"""How the examples read a small model's JSON (`examples/multiagent/llm.py`), without a model:
what is accepted leniently, and what raises `MalformedAnswer` for the function's retries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from multiagent.llm import MalformedAnswer, parse  # noqa: E402


class Plan(BaseModel):
    topics: list[str] = Field(min_length=1)


class Opinion(BaseModel):
    verdict: str
    reason: str


@pytest.mark.parametrize("text", [
    '{"topics": ["a", "b"]}',
    'Sure! Here it is:\n```json\n{"topics": ["a", "b"]}\n```',
    'The plan is {"topics": ["a", "b"]} as asked.',
    '["a", "b"]',                             # a bare list for a one-field schema
    '{"topics": ["a", "b", "unfinished',      # cut off by max_tokens
])
def test_lenient_forms_are_read(text: str) -> None:
    assert parse(text, Plan).topics == ["a", "b"]


@pytest.mark.parametrize("text", [
    "",
    "I think the topics are bees and flowers.",
    '{"topics": []}',                         # valid JSON, invalid Plan
    '{"verdict": "approve", "reason": "cut',  # nothing complete to keep
])
def test_malformed_answers_raise(text: str) -> None:
    schema = Opinion if "verdict" in text else Plan
    with pytest.raises(MalformedAnswer):
        parse(text, schema)


def test_a_raw_line_break_inside_a_string_is_read() -> None:
    """Seen from the local model: `"subject": "The delivery was late and the box was\n"` with
    the line break written raw, which strict JSON refuses."""
    opinion = parse('{"verdict": "approve", "reason": "late and the box was\n" ,"x": 1}', Opinion)
    assert opinion.reason == "late and the box was\n"
