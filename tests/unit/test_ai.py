"""`engine.ai` against a real HTTP server in the test that speaks OpenAI's chat-completions shape
and answers from a script: malformed JSON then valid JSON, 429 with `Retry-After`, 500 then
200. Checks what reaches the server (model, messages, `response_format`), the retries and their
waits, and the token counters recorded in the call's metrics. The same helper inside a real run,
where the function's `Retries` absorb a malformed answer, is tests/integration/test_ai_run.py."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chatlib import ChatServer, completion
from pydantic import BaseModel, Field

import engine
from engine import ModelOutputError, SDKUsageError, ai
from engine.sdk import ai as ai_module
from engine.sdk import runtime as rt

pytest.importorskip("openai")
import openai  # noqa: E402


class Plan(BaseModel):
    topics: list[str] = Field(min_length=1)


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    server = ChatServer()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    monkeypatch.setattr(ai_module, "BASE_DELAY", 0.05)
    try:
        yield server
    finally:
        server.close()


class StateRuntime(rt.Runtime):
    """A call's runtime with state and headers only (the scheduler's side is not needed)."""

    def __init__(self, state: dict[str, Any] | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.state = state or {}
        self._headers = headers or []

    def start(self, futures: Any) -> None:  # pragma: no cover - not used here
        raise AssertionError

    def wait(self, futures: Any, timeout: Any, return_when: Any) -> None:  # pragma: no cover
        raise AssertionError

    def headers(self) -> list[tuple[str, str]]:
        return self._headers

    def get_state(self, key: str) -> tuple[bool, Any]:
        return (key in self.state, self.state.get(key))


def in_call(runtime: StateRuntime) -> rt.CallContext:
    return rt.CallContext(runtime, "run-1", "call-1", "fn")


def run_in(ctx: rt.CallContext, fn: Any, *args: Any, **kwargs: Any) -> Any:
    token = rt.enter(ctx)
    try:
        return fn(*args, **kwargs)
    finally:
        rt.leave(token)


def test_text_in_text_out_outside_a_call(chat: ChatServer) -> None:
    chat.script = [(200, {}, completion("  Bees dance.  "))]
    assert ai("How do bees talk?", system="Be brief.", max_tokens=20, temperature=0.1) == "Bees dance."
    (_, body), = chat.requests
    assert body["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "How do bees talk?"}]
    assert body["max_tokens"] == 20 and body["temperature"] == 0.1
    assert body["model"] == ai_module.DEFAULT_MODEL and "response_format" not in body


def test_token_counters_are_recorded_per_call(chat: ChatServer) -> None:
    chat.script = [(200, {}, completion("one", 30, 5)), (200, {}, completion("two", 12, 9))]
    ctx = in_call(StateRuntime())
    run_in(ctx, ai, "first")
    run_in(ctx, ai, "second")
    assert ctx.metrics.counters == {"ai.requests": 2, "ai.prompt_tokens": 42, "ai.completion_tokens": 14}


def test_the_run_model_comes_from_state_then_header_then_environment(
        chat: ChatServer, monkeypatch: pytest.MonkeyPatch) -> None:
    chat.script = [(200, {}, completion("ok"))]
    run_in(in_call(StateRuntime({"engine.model": "from-state"}, [("X-Engine-Model", "from-header")])), ai, "q")
    run_in(in_call(StateRuntime({}, [("X-Engine-Model", "from-header")])), ai, "q")
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    run_in(in_call(StateRuntime()), ai, "q")
    run_in(in_call(StateRuntime({"engine.model": "from-state"})), ai, "q", model="explicit")
    assert [body["model"] for _, body in chat.requests] == ["from-state", "from-header", "from-env", "explicit"]


def test_schema_malformed_answer_is_a_retryable_error_then_valid(chat: ChatServer) -> None:
    chat.script = [(200, {}, completion("I think the topics are bees and flowers.")),
                   (200, {}, completion('Sure: ```json\n{"topics": ["bees", "flo')),
                   (200, {}, completion('{"topics": ["bees", "flowers"]}'))]
    ctx = in_call(StateRuntime())
    with pytest.raises(ModelOutputError, match="no JSON for Plan") as caught:
        run_in(ctx, ai, "Topics?", schema=Plan, max_tokens=30)
    # A FunctionError: the function fails, and its Retries run it again.
    assert isinstance(caught.value, engine.FunctionError)
    # JSON cut off by max_tokens is read up to its last complete value.
    assert run_in(ctx, ai, "Topics?", schema=Plan) == Plan(topics=["bees"])
    assert run_in(ctx, ai, "Topics?", schema=Plan) == Plan(topics=["bees", "flowers"])
    body = chat.requests[0][1]
    assert body["response_format"] == {"type": "json_object", "schema": Plan.model_json_schema()}
    assert body["messages"][-1]["content"].endswith('an object with the keys "topics".')
    assert ctx.metrics.counters["ai.requests"] == 3  # the malformed answers cost tokens too


def test_an_answer_that_does_not_validate_names_the_field(chat: ChatServer) -> None:
    chat.script = [(200, {}, completion('{"topics": []}'))]
    with pytest.raises(ModelOutputError, match=r"Plan\.topics: List should have at least 1 item"):
        ai("Topics?", schema=Plan)


def test_an_empty_answer_is_a_model_output_error(chat: ChatServer) -> None:
    chat.script = [(200, {}, completion(""))]
    with pytest.raises(ModelOutputError, match="empty answer"):
        ai("Anything?")


def test_429_waits_for_retry_after(chat: ChatServer) -> None:
    chat.script = [(429, {"Retry-After": "1"}, {"error": {"message": "slow down", "type": "rate_limit"}}),
                   (200, {}, completion("fine"))]
    started = time.monotonic()
    assert ai("q") == "fine"
    (first, _), (second, _) = chat.requests
    assert second - first >= 1.0  # honoured, where the backoff alone would be 0.05 s
    assert time.monotonic() - started < 5


def test_500_then_200_retries_with_backoff(chat: ChatServer) -> None:
    chat.script = [(500, {}, {"error": {"message": "boom"}}), (503, {}, {"error": {"message": "busy"}}),
                   (200, {}, completion("recovered"))]
    ctx = in_call(StateRuntime())
    assert run_in(ctx, ai, "q") == "recovered"
    assert len(chat.requests) == 3
    assert ctx.metrics.counters["ai.requests"] == 1  # only answered requests count


def test_attempts_are_bounded(chat: ChatServer) -> None:
    chat.script = [(500, {}, {"error": {"message": "down for good"}})]
    with pytest.raises(openai.InternalServerError):
        ai("q")
    assert len(chat.requests) == ai_module.ATTEMPTS


def test_a_client_error_is_not_retried(chat: ChatServer) -> None:
    chat.script = [(400, {}, {"error": {"message": "bad request"}})]
    with pytest.raises(openai.BadRequestError):
        ai("q")
    assert len(chat.requests) == 1


def test_retry_after_forms() -> None:
    assert ai_module.retry_after({"retry-after": "2"}) == 2.0
    assert ai_module.retry_after({"retry-after-ms": "250"}) == 0.25
    assert ai_module.retry_after({}) is None
    assert ai_module.retry_after({"retry-after": "soon"}) is None
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < (ai_module.retry_after({"retry-after": later}) or 0) <= 30


def test_without_openai_a_one_line_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(SDKUsageError, match=r"needs the openai package: pip install 'engine\[ai\]'"):
        ai("q")


@pytest.mark.parametrize(("args", "kwargs"), [((3,), {}), (("q",), {"system": 1}), (("q",), {"schema": dict})])
def test_bad_arguments_are_usage_errors(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(SDKUsageError, match=r"ai\(\)"):
        ai(*args, **kwargs)


def test_import_engine_does_not_import_openai() -> None:
    import subprocess

    code = "import engine, sys; print('openai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
