"""When an executor decides it is left alone (`engine.executor.lifetime.Lifetime.check`), on a
clock the test turns. The processes and containers themselves are in
tests/integration/test_orphans.py."""

from __future__ import annotations

import os

import pytest

from engine.errors import SDKUsageError
from engine.executor.forkserver import startup_env
from engine.executor.lifetime import (
    DEFAULT_ORPHAN_TIMEOUT_S,
    ORPHAN_TIMEOUT_ENV,
    Lifetime,
    executor_env,
    parse_orphan_timeout,
)
from engine.procstat import parent_of


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_open_stream_holds_the_executor_however_long() -> None:
    clock = Clock()
    life = Lifetime(orphan_timeout=10, init_timeout=300, clock=clock)
    clock.now += 250
    life.initialized()
    life.stream_opened()
    clock.now += 3600
    assert life.check() is None


def test_the_grace_counts_from_the_end_of_initialize_then_from_the_last_stream() -> None:
    clock = Clock()
    life = Lifetime(orphan_timeout=10, init_timeout=300, clock=clock)
    clock.now += 200
    life.initialized()
    clock.now += 10
    assert life.check() is None
    clock.now += 0.5
    assert life.check() == "no scheduler connection for 10 s"

    life = Lifetime(orphan_timeout=10, init_timeout=300, clock=clock)
    life.initialized()
    life.stream_opened()
    life.stream_opened()
    clock.now += 60
    life.stream_closed()
    clock.now += 60
    assert life.check() is None  # one stream is still open
    life.stream_closed()
    clock.now += 9
    assert life.check() is None
    clock.now += 2
    assert life.check() == "no scheduler connection for 10 s"


def test_an_executor_nobody_initialises_ends_after_the_init_timeout() -> None:
    clock = Clock()
    life = Lifetime(orphan_timeout=10, init_timeout=300, clock=clock)
    clock.now += 299
    assert life.check() is None
    clock.now += 2
    assert life.check() == "nobody initialised it within 300 s"


def test_the_parent_check_is_on_the_parent_of_this_very_process() -> None:
    assert Lifetime(orphan_timeout=10, parent_pid=os.getppid()).check() is None
    # Never our parent: what an executor sees once its engine died and it was adopted.
    reason = Lifetime(orphan_timeout=10, parent_pid=os.getpid()).check()
    assert reason == f"its engine process {os.getpid()} is gone"


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan", "inf"])
def test_a_grace_must_be_a_positive_number_of_seconds(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=ORPHAN_TIMEOUT_ENV):
        parse_orphan_timeout(text)
    monkeypatch.setenv(ORPHAN_TIMEOUT_ENV, text)
    with pytest.raises(SDKUsageError, match=ORPHAN_TIMEOUT_ENV):
        executor_env()


def test_backends_pass_the_engines_grace_or_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ORPHAN_TIMEOUT_ENV, raising=False)
    assert executor_env() == {ORPHAN_TIMEOUT_ENV: f"{DEFAULT_ORPHAN_TIMEOUT_S:g}"}
    monkeypatch.setenv(ORPHAN_TIMEOUT_ENV, "2.5")
    assert executor_env() == {ORPHAN_TIMEOUT_ENV: "2.5"}


def test_a_forked_executor_checks_its_template_and_the_templates_parent() -> None:
    # This process plays the executor, its parent the template, and that one's parent the engine.
    template, engine = os.getppid(), parent_of(os.getppid())
    assert engine is not None
    assert Lifetime(orphan_timeout=10, parent_pid=engine, template_pid=template).check() is None
    reason = Lifetime(orphan_timeout=10, parent_pid=engine + 100000, template_pid=template).check()
    assert reason == f"its engine process {engine + 100000} is gone"
    reason = Lifetime(orphan_timeout=10, parent_pid=engine, template_pid=os.getpid()).check()
    assert reason == f"its template process {os.getpid()} is gone"


def test_what_a_fork_cannot_change_is_what_the_interpreter_reads_at_start() -> None:
    env = {"PYTHONPATH": "/x", "LD_PRELOAD": "l.so", "GLIBC_TUNABLES": "t", "MALLOC_ARENA_MAX": "2",
           "TMPDIR": "/tmp/a", "ENGINE_EXCHANGE_DIR": "/e", "SECRET": "s"}
    assert startup_env(env) == {"PYTHONPATH": "/x", "LD_PRELOAD": "l.so", "GLIBC_TUNABLES": "t",
                                "MALLOC_ARENA_MAX": "2"}
