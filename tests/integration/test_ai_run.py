"""`engine.ai` inside a real run on the process backend, against the chat-completions server of
tests/chatlib.py: a malformed answer fails the call and its `Retries` run it again, the
model the root wrote to the request state reaches every call, and the token counters are
recorded per call and summed per run as `engine show` reports them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chatlib import ChatServer, completion

from engine import run_local_application

pytest.importorskip("openai")


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    server = ChatServer()
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    try:
        yield server
    finally:
        server.close()


def test_retries_absorb_a_malformed_answer_and_tokens_add_up(chat, apps, state_dir, show) -> None:
    chat.script = [
        (200, {}, completion("The topics are bees and flowers.", 20, 8)),   # planner, attempt 1
        (429, {"Retry-After": "0.2"}, {"error": {"message": "slow down"}}),  # planner, attempt 2
        (200, {}, completion('{"topics": ["bees", "flowers"]}', 21, 9)),
        (200, {}, completion("Bees visit flowers.", 30, 5)),                # writer
    ]
    app = apps("app_ai")
    request = run_local_application(app.ai_app, "How do bees feed?", "tiny-model")
    assert request.output() == "Bees visit flowers."
    assert [body["model"] for _, body in chat.requests] == ["tiny-model"] * 4
    assert chat.requests[-1][1]["messages"][0] == {"role": "system", "content": "Be brief."}

    info = show(request.id)
    calls = {c["function"]: c for c in info["call_list"]}
    planner = calls["planner"]
    assert planner["attempts"] == 2
    assert planner["metrics"]["counters"] == {"ai.requests": 2, "ai.prompt_tokens": 41, "ai.completion_tokens": 17}
    assert calls["writer"]["metrics"]["counters"] == {"ai.requests": 1, "ai.prompt_tokens": 30,
                                                      "ai.completion_tokens": 5}
    assert info["metrics"]["counters"] == {"ai.requests": 3, "ai.prompt_tokens": 71, "ai.completion_tokens": 22}
