"""The `engine` command line as a user runs it: a real subprocess, real executors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent / "apps" / "app_cli.py"


def one_line_error(code: int, out: str, err: str, expected: str) -> None:
    """A user mistake: exit 2, exactly one line on stderr saying what is wrong, no traceback."""
    assert code == 2, (out, err)
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    assert expected in lines[0], err
    assert "Traceback" not in err + out
    assert out == ""


def test_run_json_success(cli) -> None:
    code, out, err = cli("run", f"{APP}:hello", "--input", '"ada"', "--json")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    result = json.loads(out)
    assert set(result) == {"run_id", "status", "result", "error"}
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["result"] == "HELLO ADA!"


def test_run_never_formats_the_result_it_returns(cli, tmp_path) -> None:
    """`engine run` hands the outcome back without a repr of it: Python 3.11's `asyncio.run`
    formats its task, result and all, as it ends (seconds and gigabytes for a large value)."""
    reprs = tmp_path / "reprs"
    code, out, err = cli("run", f"{APP}:tally", "--input", "5", "--json", env={"APP_CLI_REPRS": str(reprs)})
    assert code == 0, err
    assert json.loads(out)["result"] == {"items": [0, 1, 2, 3, 4]}
    assert not reprs.exists(), reprs.read_text()


def test_run_plain_output(cli) -> None:
    code, out, err = cli("run", f"{APP}:greet", "--input", '{"name": "bo", "times": 2}')
    assert code == 0, err
    assert json.loads(out) == {"greeting": "hi bo hi bo"}
    code, out, err = cli("run", f"{APP}:hello", "--input", '"x"')
    assert (code, out) == (0, "HELLO X!\n")


def test_run_pydantic_input(cli) -> None:
    code, out, err = cli("run", f"{APP}:describe", "--input", '{"name": "ada", "age": 36}', "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == "ada is 36"


def test_run_failure_exit_1(cli, state_dir) -> None:
    code, out, err = cli("run", f"{APP}:boom", "--input", '"on purpose"', "--json")
    assert code == 1
    result = json.loads(out)
    assert set(result) == {"run_id", "status", "result", "error"}
    assert result["status"] == "failed" and result["result"] is None
    assert "explode" in result["error"] and "exploded: on purpose" in result["error"]
    # Without --json: the error and how to continue, on stderr.
    code, out, err = cli("run", f"{APP}:boom", "--input", '"again"')
    assert code == 1 and out == ""
    assert "ValueError: exploded: again" in err and "engine resume" in err


@pytest.mark.parametrize(
    "target, input_json, expected",
    [
        ("missing_file.py:hello", '"x"', "no such file"),
        (f"{APP}:nope", '"x"', "has no function 'nope'"),
        (f"{APP}:not_an_app", "1", "not an application"),
        (f"{APP}:undecorated", "1", "not decorated with @function"),
        (f"{APP}", '"x"', "FILE.py:FUNCTION"),
        (f"{APP}:describe", '{"name": "ada", "age": "old"}', "person.age"),
        (f"{APP}:greet", '{"name": "bo", "times": "twice"}', "times"),
        (f"{APP}:greet", '{"nam": "bo"}', "nam"),
        (f"{APP}:hello", "42", "name"),
        (f"{APP}:hello", '"unterminated', "not valid JSON"),
        (f"{APP}:hello", "{'single': 1}", "not valid JSON"),
        (f"{APP}:hello", None, "needs input"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_2(cli, state_dir, target, input_json,
                                                expected) -> None:
    args = ["run", target, "--json"] + (["--input", input_json] if input_json is not None else [])
    one_line_error(*cli(*args), expected)
    assert not (state_dir / "engine.db").exists()  # nothing ran, nothing recorded


@pytest.mark.parametrize(
    "config, expected",
    [
        ("functions: {shout: [\n", "not valid YAML"),
        ("colour: red\n", "unknown key 'colour'"),
        ("functions:\n  shout:\n    timeout: soon\n", "functions.shout.timeout"),
        ("functions:\n  shuot: {cpu: 1}\n", "functions.shuot"),
    ],
)
def test_malformed_engine_yaml(cli, tmp_path, config, expected) -> None:
    project = tmp_path / "project"
    project.mkdir()
    app = project / "cli_yaml_app.py"
    shutil.copy(APP, app)
    (project / "engine.yaml").write_text(config)
    code, out, err = cli("run", f"{app}:hello", "--input", '"x"')
    one_line_error(code, out, err, expected)
    assert str(project / "engine.yaml") in err


def test_bad_arguments_and_unknown_runs(cli, state_dir) -> None:
    one_line_error(*cli("run", f"{APP}:hello", "--backend", "kubernetes"), "invalid choice")
    one_line_error(*cli("frobnicate"), "invalid choice")
    one_line_error(*cli("runs"), "no runs")
    cli("run", f"{APP}:greet", "--input", '{"name": "a"}', "--json")
    for command in ("show", "logs", "resume"):
        one_line_error(*cli(command, "no-such-run"), "no-such-run")


def test_runs_newest_first(cli) -> None:
    ids = []
    for name in ("first", "second", "third"):
        code, out, err = cli("run", f"{APP}:greet", "--input", json.dumps({"name": name}), "--json")
        assert code == 0, err
        ids.append(json.loads(out)["run_id"])
    code, out, err = cli("runs", "--json")
    assert code == 0, err
    runs = json.loads(out)
    assert [r["run_id"] for r in runs] == ids[::-1]
    assert all(r["application"] == "greet" and r["status"] == "succeeded" for r in runs)
    assert all(set(r) >= {"run_id", "application", "status", "start", "duration"} for r in runs)
    code, out, err = cli("runs", env={"COLUMNS": "200"})  # the table
    assert code == 0 and all(i in out for i in ids)
    assert out.index(ids[2]) < out.index(ids[1]) < out.index(ids[0])


def test_runs_table_shows_whole_run_ids(cli) -> None:
    code, out, err = cli("run", f"{APP}:greet", "--input", '{"name": "a"}', "--json")
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("runs", env={"COLUMNS": "80"})
    assert code == 0, err
    assert run_id in out


def test_show_json(cli) -> None:
    code, out, err = cli("run", f"{APP}:hello", "--input", '"ada"', "--json")
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("show", run_id, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["run_id"] == run_id and info["status"] == "succeeded"
    assert info["result"] == "HELLO ADA!" and info["error"] is None
    assert info["calls"] == {"total": 2, "succeeded": 2, "failed": 0, "reused": 0,
                             "executed": 2, "executions": 2}
    calls = {c["function"]: c for c in info["call_list"]}
    assert set(calls) == {"hello", "shout"}
    for call in calls.values():
        assert set(call) >= {"function", "parent", "status", "attempts", "duration"}
        assert call["status"] == "succeeded" and call["attempts"] == 1
        assert call["duration"] is not None and call["duration"] >= 0
    assert calls["hello"]["parent"] is None
    assert calls["shout"]["parent"] == calls["hello"]["id"]
    code, out, err = cli("show", run_id)  # the human form
    assert code == 0 and run_id in out and "shout" in out


def test_show_failed_run(cli) -> None:
    code, out, err = cli("run", f"{APP}:boom", "--input", '"why"', "--json")
    run_id = json.loads(out)["run_id"]
    info = json.loads(cli("show", run_id, "--json").stdout)
    assert info["status"] == "failed" and "exploded: why" in info["error"]
    assert info["calls"]["failed"] >= 1
    explode = next(c for c in info["call_list"] if c["function"] == "explode")
    assert explode["status"] == "failed" and "exploded: why" in explode["error"]


def test_logs_show_what_functions_printed(cli) -> None:
    code, out, err = cli("run", f"{APP}:hello", "--input", '"ada"', "--json")
    run_id = json.loads(out)["run_id"]
    code, out, err = cli("logs", run_id)
    assert code == 0, err
    assert "hello was asked to greet ada" in out
    assert "shouting 'hello ada'" in out
    code, out, err = cli("logs", run_id, "--function", "shout")
    assert code == 0 and "shouting" in out and "greet ada" not in out


def test_secrets_come_from_the_env_file(cli, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ENGINE_TEST_TOKEN_7F3A", raising=False)
    app = APP.parent / "app_secret.py"
    one_line_error(*cli("run", f"{app}:secret_app", "--input", '"!"'), "ENGINE_TEST_TOKEN_7F3A")
    env_file = tmp_path / "secrets.env"
    env_file.write_text("ENGINE_TEST_TOKEN_7F3A=abc123\n")
    code, out, err = cli("run", f"{app}:secret_app", "--input", '"!"', "--env-file", str(env_file),
                         "--json")
    assert code == 0, err
    assert json.loads(out)["result"] == "321cba!"


def test_unusable_state_dir_is_one_line(cli, tmp_path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    one_line_error(*cli("run", f"{APP}:greet", "--input", '{"name": "a"}', "--state-dir",
                        str(not_a_dir)), "state")
