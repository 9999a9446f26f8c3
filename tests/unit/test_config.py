"""engine.yaml: every mistake is a ConfigError naming the file and the key; valid overrides merge
over the decorator values."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from engine.app import load_app
from engine.config import EngineConfig, load_config
from engine.errors import ConfigError, SDKUsageError
from engine.sdk.retries import Retries

_names = itertools.count()

APP = '''
from engine import Retries, application, function


@function(timeout=5, cpu=2, memory=0.5, retries=Retries(max_retries=1, initial_delay=0.3))
def research(topic: str) -> str:
    return topic


@function(concurrency=3)
def summarise(text: str) -> str:
    return text


@application(retries=Retries(max_retries=4, initial_delay=0.01))
@function()
def main(question: str) -> str:
    return research.future(question)
'''


def write_app(tmp_path: Path, config: str | None = None) -> Path:
    """A fresh app module (a unique name: Python caches modules by name) and its engine.yaml."""
    directory = tmp_path / f"project{next(_names)}"
    directory.mkdir()
    path = directory / f"cfgapp_{next(_names)}_{abs(hash(str(tmp_path))) % 10**8}.py"
    path.write_text(APP)
    if config is not None:
        (directory / "engine.yaml").write_text(textwrap.dedent(config))
    return path


def test_no_config_uses_decorator_values(tmp_path: Path) -> None:
    app = load_app(f"{write_app(tmp_path)}:main")
    research = app.functions["research"]
    assert (research.config.timeout, research.config.cpu, research.config.memory) == (5, 2, 0.5)
    assert research.retries == Retries(max_retries=1, initial_delay=0.3)
    # A function without a policy takes the application's.
    assert app.functions["summarise"].retries == Retries(max_retries=4, initial_delay=0.01)
    assert app.functions["summarise"].config.concurrency == 3
    assert app.config_path is None and app.config == EngineConfig()


def test_overrides_merge_over_decorator_values(tmp_path: Path) -> None:
    path = write_app(tmp_path, """
        backend: process
        max_executors: 3
        idle_timeout: 0.5
        functions:
          research:
            timeout: 9
            retries: {max_retries: 3, initial_delay: 0.1}
          summarise:
            memory: 4
    """)
    app = load_app(f"{path}:main")
    assert app.config_path == path.parent / "engine.yaml"
    assert (app.config.backend, app.config.max_executors, app.config.idle_timeout) == (
        "process", 3, 0.5)
    research = app.functions["research"]
    assert research.config.timeout == 9  # overridden
    assert (research.config.cpu, research.config.memory) == (2, 0.5)  # kept from the decorator
    assert research.retries == Retries(max_retries=3, initial_delay=0.1)
    summarise = app.functions["summarise"]
    assert summarise.config.memory == 4
    assert summarise.config.concurrency == 3
    assert summarise.retries == Retries(max_retries=4, initial_delay=0.01)  # the app's default
    assert app.functions["main"].config.timeout == 300


def test_explicit_config_path_wins(tmp_path: Path) -> None:
    path = write_app(tmp_path, "functions: {research: {timeout: 1}}\n")
    other = tmp_path / "other.yaml"
    other.write_text("functions: {research: {timeout: 2}}\n")
    app = load_app(f"{path}:main", config_path=other)
    assert app.functions["research"].config.timeout == 2


def test_empty_config_is_the_default(tmp_path: Path) -> None:
    path = write_app(tmp_path, "# nothing here\n")
    app = load_app(f"{path}:main")
    assert app.config == EngineConfig()


@pytest.mark.parametrize(
    "config, expected",
    [
        ("colour: red\n", r"unknown key 'colour'"),
        ("functions:\n  research:\n    cpus: 2\n", r"unknown key 'functions\.research\.cpus'"),
        ("functions:\n  research:\n    timeout: soon\n", r"functions\.research\.timeout"),
        ("functions:\n  research:\n    timeout: -1\n", r"functions\.research\.timeout"),
        ("max_executors: many\n", r"max_executors"),
        ("backend: kubernetes\n", r"backend"),
        ("functions:\n  research:\n    retries: {max_retries: -2}\n",
         r"functions\.research\.retries\.max_retries"),
        ("functions: [research]\n", r"functions"),
        ("functions:\n  no_such_function: {cpu: 1}\n", r"functions\.no_such_function"),
        ("- just\n- a list\n", r"mapping"),
        ("functions: {research: [\n", r"not valid YAML"),
    ],
)
def test_config_mistakes_name_the_file_and_key(tmp_path: Path, config: str, expected: str) -> None:
    path = write_app(tmp_path, config)
    with pytest.raises(ConfigError, match=expected) as info:
        load_app(f"{path}:main")
    message = str(info.value)
    assert str(path.parent / "engine.yaml") in message
    assert "\n" not in message  # one line
    assert isinstance(info.value, SDKUsageError)


def test_unknown_function_lists_the_defined_ones(tmp_path: Path) -> None:
    path = write_app(tmp_path, "functions:\n  reserch: {cpu: 1}\n")
    with pytest.raises(ConfigError, match="reserch") as info:
        load_app(f"{path}:main")
    assert "research" in str(info.value) and "summarise" in str(info.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_load_app_target_mistakes(tmp_path: Path) -> None:
    path = write_app(tmp_path)
    cases = {
        f"{path}": "FILE.py:FUNCTION",
        f"{tmp_path / 'nope.py'}:main": "no such file",
        f"{path}:absent": "no function 'absent'",
        f"{path}:Retries": "not decorated with @function",
        f"{path}:research": "not an application",
    }
    for target, expected in cases.items():
        with pytest.raises(SDKUsageError, match=expected):
            load_app(target)


def test_import_failure_is_one_usage_error(tmp_path: Path) -> None:
    broken = tmp_path / f"broken_{next(_names)}.py"
    broken.write_text("import engine\nraise RuntimeError('top-level failure')\n")
    with pytest.raises(SDKUsageError, match="RuntimeError: top-level failure"):
        load_app(f"{broken}:main")
    bad_syntax = tmp_path / f"syntax_{next(_names)}.py"
    bad_syntax.write_text("def (:\n")
    with pytest.raises(SDKUsageError, match="syntax error"):
        load_app(f"{bad_syntax}:main")


def test_missing_secret_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_TEST_SECRET_XYZ", raising=False)
    path = write_app(tmp_path, "functions: {research: {secrets: [ENGINE_TEST_SECRET_XYZ]}}\n")
    with pytest.raises(SDKUsageError, match="ENGINE_TEST_SECRET_XYZ"):
        load_app(f"{path}:main")
    env_file = tmp_path / "secrets.env"
    env_file.write_text("# comment\nexport ENGINE_TEST_SECRET_XYZ='s3cret'\n")
    app = load_app(f"{path}:main", env_file=env_file)
    assert app.functions["research"].env() == {"ENGINE_TEST_SECRET_XYZ": "s3cret"}
