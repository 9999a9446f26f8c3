"""Future.wait with each RETURN_WHEN, and timeouts. `sleeper` serves many calls per executor and
is warmed up first, so that the timings below are not dominated by executor start-up."""

from __future__ import annotations

import time

from sidefx import record

from engine import RETURN_WHEN, Future, application, function


@function(concurrency=8)
def sleeper(seconds: float, tag: str, log: str) -> str:
    record(log, "sleeper_start", tag)
    time.sleep(seconds)
    record(log, "sleeper_end", tag)
    return tag


@function(concurrency=8)
def failer(seconds: float, log: str) -> str:
    record(log, "failer")
    time.sleep(seconds)
    raise ValueError("failer gave up")


def _warm(log: str) -> None:
    sleeper(0, "warm", log)
    Future.wait([failer.future(0, log)])  # warms failer's executor; its failure is not raised


@application()
@function()
def first_completed(log: str) -> dict:
    _warm(log)
    fast = sleeper.future(0.1, "fast", log)
    slow = sleeper.future(60, "slow", log)
    t0 = time.monotonic()
    done, not_done = Future.wait([slow, fast], return_when=RETURN_WHEN.FIRST_COMPLETED)
    return {
        "done": [f.result() for f in done],
        "not_done": len(not_done),
        "slow_done": slow.done(),
        "waited": time.monotonic() - t0,
    }


@application()
@function()
def first_failure(log: str) -> dict:
    _warm(log)
    ok = sleeper.future(0.05, "ok", log)
    bad = failer.future(1.0, log)
    slow = sleeper.future(60, "slow", log)
    done, not_done = Future.wait([ok, bad, slow], return_when=RETURN_WHEN.FIRST_FAILURE)
    exc = bad.exception
    return {
        "done": len(done),
        "not_done": len(not_done),
        "slow_done": slow.done(),
        "bad_exception": type(exc).__name__,
        "bad_function": getattr(exc, "function", None),
        "bad_cause": type(exc.__cause__).__name__ if exc is not None else None,
        "ok_result": ok.result(),
    }


@application()
@function()
def all_completed(log: str) -> dict:
    _warm(log)
    a = sleeper.future(0.2, "a", log)
    b = sleeper.future(0.4, "b", log)
    bad = failer.future(0.1, log)
    done, not_done = Future.wait([a, b, bad], return_when=RETURN_WHEN.ALL_COMPLETED)
    return {
        "done": len(done),
        "not_done": len(not_done),
        "values": [a.result(), b.result()],
        "bad_exception": type(bad.exception).__name__,
    }


@application()
@function()
def wait_timeout(log: str) -> dict:
    _warm(log)
    fast = sleeper.future(0.05, "fast", log)
    slow = sleeper.future(60, "slow", log)
    t0 = time.monotonic()
    done, not_done = Future.wait([fast, slow], timeout=1.5)
    waited = time.monotonic() - t0
    try:
        slow.result(timeout=0.2)
        result_timeout = None
    except TimeoutError as exc:  # the builtin: Future.result's own timeout
        result_timeout = type(exc).__name__
    return {
        "done": [f.result() for f in done],
        "not_done": len(not_done),
        "waited": waited,
        "result_timeout": result_timeout,
    }
