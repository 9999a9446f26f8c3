"""Tensorlake's SDK names and semantics on real executor processes (process backend, real gRPC):
`Future.run_later`, decorators in either order with application-level retries, map/reduce over
any iterable, `result(timeout=)`, `RequestError` versus `FunctionError`, and what the calls print reaching the
stdout of whoever ran the request."""

from __future__ import annotations

import json

import pytest

from engine import RequestError, run_local_application


def test_run_later_starts_the_call_no_earlier_than_the_delay(apps, state_dir, side_effects) -> None:
    app = apps("app_tensorlake")
    out = run_local_application(app.delayed, 1.0, str(side_effects)).output()
    assert out["started"] - out["asked"] >= 1.0
    assert side_effects.count("stamp", "later") == 1


def test_a_delayed_tail_call_and_its_dependant(apps, state_dir, side_effects) -> None:
    app = apps("app_tensorlake")
    request = run_local_application(app.delayed_tail, 0.8, str(side_effects))
    assert request.status == "succeeded"
    asked = float(side_effects.tagged("asked")[0][0])
    stamped = float(side_effects.tagged("stamp")[0][1])
    assert stamped - asked >= 0.8
    after = side_effects.tagged("after")
    assert len(after) == 1 and float(after[0][0]) == stamped  # received the delayed value
    assert request.output() >= stamped


def test_application_retries_cover_its_functions_with_function_outermost(
        apps, state_dir, side_effects) -> None:
    app = apps("app_tensorlake")
    assert app.app_retries.is_application
    assert app.app_retries.application.tags == {"suite": "tensorlake"}
    request = run_local_application(app.app_retries, str(side_effects))
    assert request.output() == "ok"
    assert side_effects.count("flaky") == 2  # one failure, one retry from the application's policy


def test_map_and_reduce_over_any_iterable(apps, state_dir) -> None:
    app = apps("app_tensorlake")
    out = run_local_application(app.iterables, 4).output()
    assert out == {"generator": [0, 2, 4, 6], "range": 6, "tuple": [0, 2, 4, 6]}


def test_result_timeout_raises_engine_timeout_error_and_the_call_goes_on(apps, state_dir) -> None:
    app = apps("app_tensorlake")
    assert run_local_application(app.timeout_then_value, 1.0).output() == ["timeout:True", "woke"]


def test_request_error_is_not_a_function_error(apps, state_dir) -> None:
    app = apps("app_tensorlake")
    request = run_local_application(app.request_error_passes, 7)
    with pytest.raises(RequestError, match="refused 7"):
        request.output()


def test_what_calls_print_reaches_the_local_callers_stdout(apps, state_dir, capsys) -> None:
    # Tensorlake's local runner shows function output where the person running it looks; the
    # executors here run in processes of their own, so the output is copied over at the end.
    app = apps("app_tensorlake")
    assert run_local_application(app.chatty, "hey").output() == "HEY"
    lines = capsys.readouterr().out.splitlines()
    assert "shout says hey" in lines
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert [(e["event"], e["word"], e["step"], e["level"]) for e in logged] == [
        ("about to shout", "hey", "chatty", "info")]
