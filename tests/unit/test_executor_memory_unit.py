"""`engine.executor.memory`: when an executor gives freed memory back, and its settings' checks."""

from __future__ import annotations

import os

import pytest
from test_executor_lifetime import Clock

from engine.errors import SDKUsageError
from engine.executor import memory
from engine.executor.lifetime import EXECUTOR_ENV_DEFAULTS, executor_env, parse_idle_trim


def test_trims_once_after_the_idle_time_and_never_during_a_call() -> None:
    clock, trims = Clock(), []
    trim = memory.Trim(idle_s=10, clock=clock, trim=lambda: trims.append(clock.now))
    clock.now += 60
    trim.tick()
    assert trims == []  # a fresh executor has nothing freed to give back
    trim.busy()  # a call begins; a second begins and ends, the first still runs
    trim.busy()
    clock.now += 60
    trim.tick()
    assert trims == []  # one call still runs
    trim.idle()  # the last running call ended
    clock.now += 9.9
    trim.tick()
    assert trims == []
    clock.now += 0.2
    trim.tick()
    trim.tick()
    clock.now += 60
    trim.tick()
    assert trims == [230.1]  # once per idle spell, 10 s after the last call ended
    trim.busy()
    clock.now += 20
    trim.idle()
    trim.tick()
    assert len(trims) == 1  # the idle time counts from the end of the last call
    clock.now += 10
    trim.tick()
    assert len(trims) == 2 and trim.trims == 2


def test_zero_trims_at_the_first_tick_after_each_call() -> None:
    trims: list[int] = []
    trim = memory.Trim(idle_s=0, trim=lambda: trims.append(1))
    trim.busy()
    trim.idle()
    trim.tick()
    assert trims == [1]


@pytest.mark.parametrize(("text", "seconds"), [(None, 10.0), ("", 10.0), (" ", 10.0), ("0", 0.0), ("2.5", 2.5)])
def test_idle_trim_setting(text: str | None, seconds: float) -> None:
    assert parse_idle_trim(text) == seconds


@pytest.mark.parametrize("text", ["-1", "soon", "nan", "inf"])
def test_a_bad_idle_trim_is_one_clear_error_before_any_executor_starts(text: str, monkeypatch) -> None:
    monkeypatch.setenv(memory.IDLE_TRIM_ENV, text)
    with pytest.raises(SDKUsageError, match=r"ENGINE_EXECUTOR_IDLE_TRIM must be a number of seconds 0 or more, not"):
        executor_env()


def test_the_engine_passes_its_idle_trim_on_to_every_executor(monkeypatch) -> None:
    monkeypatch.delenv(memory.IDLE_TRIM_ENV, raising=False)
    assert memory.IDLE_TRIM_ENV not in executor_env()
    monkeypatch.setenv(memory.IDLE_TRIM_ENV, "2.50")
    assert executor_env()[memory.IDLE_TRIM_ENV] == "2.5"
    assert EXECUTOR_ENV_DEFAULTS == {"GLIBC_TUNABLES": memory.GLIBC_TUNABLES}


def test_forgets_only_its_own_defaults(monkeypatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", memory.GLIBC_TUNABLES)
    memory.forget_defaults()
    assert "GLIBC_TUNABLES" not in os.environ
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")
    memory.forget_defaults()
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"

