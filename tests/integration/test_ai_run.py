"""`engine.ai` inside a real run on the process backend, against the chat-completions server of
tests/chatlib.py: a malformed answer fails the call and its `Retries` run it again, the
model the root wrote to the request state reaches every call, and the token counters are
recorded per call and summed per run as `engine show` reports them. `engine run --model` sets the
run's model for every call that passes no `model=`, and `engine resume` keeps it: what the model
server received says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from chatlib import ChatServer, completion

from engine import run_local_application

pytest.importorskip("openai")

APP = Path(__file__).resolve().parent / "apps" / "app_ai.py"


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


def test_engine_run_model_reaches_every_call_and_resume_keeps_it(chat, cli, state_dir, monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "env-model")  # what a call would use without --model
    refused = (400, {}, {"error": {"message": "no such thing", "type": "invalid_request_error"}})
    chat.script = [(200, {}, completion("one")), (200, {}, completion("two")), refused,
                   (200, {}, completion("three"))]
    code, out, err = cli("run", f"{APP}:model_app", "--input", '"bees"', "--model", "picked-model", "--json")
    assert code == 1, err  # the third request was refused: the last `ask` failed, and the run
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("resume", run_id, "--json")
    assert code == 0, err
    # Every request without model= asked for the run's model, the resumed one too.
    assert [body["model"] for _, body in chat.requests] == [
        "picked-model", "explicit-model", "picked-model", "picked-model"]
    assert json.loads(out)["result"] == {"root": "picked-model", "answers": [
        {"text": "one", "run_model": "picked-model"}, {"text": "two", "run_model": "picked-model"},
        {"text": "three", "run_model": "picked-model"}]}

    chat.script, chat.requests[:] = [(200, {}, completion("four"))], []
    code, out, err = cli("run", f"{APP}:model_app", "--input", '"ants"', "--json")
    assert code == 0, err
    assert json.loads(out)["result"]["root"] == "env-model"  # no --model: OPENAI_MODEL
    assert {body["model"] for _, body in chat.requests} == {"env-model", "explicit-model"}


def test_engine_run_refuses_an_empty_model_in_one_line(cli) -> None:
    code, out, err = cli("run", f"{APP}:model_app", "--input", '"bees"', "--model", " ")
    assert code == 2 and err.strip().count("\n") == 0 and "--model" in err and "Traceback" not in err, err
