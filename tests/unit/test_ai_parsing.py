"""How `engine.ai` reads a small model's JSON (`engine.sdk.ai.parse`), without a model: what is
accepted leniently, and what raises `ModelOutputError` for the function's retries."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from engine import ModelOutputError
from engine.sdk.ai import parse


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
    with pytest.raises(ModelOutputError):
        parse(text, schema)


def test_a_raw_line_break_inside_a_string_is_read() -> None:
    """Seen from the local model: `"subject": "The delivery was late and the box was\n"` with
    the line break written raw, which strict JSON refuses."""
    opinion = parse('{"verdict": "approve", "reason": "late and the box was\n" ,"x": 1}', Opinion)
    assert opinion.reason == "late and the box was\n"
