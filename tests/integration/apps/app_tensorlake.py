"""Tensorlake's SDK surface on real executors: delayed starts (`run_later`), decorators stacked
with `@function()` outermost and application-level retries, map/reduce over any iterable,
`result(timeout=)` raising `engine.TimeoutError`, and `RequestError` passing through a caller's
`except FunctionError`. Functions log to the file whose path they are given."""

from __future__ import annotations

import time

from sidefx import count, record

import engine
from engine import FunctionError, RequestError, Retries, application, function


@function()
def stamp(tag: str, log: str) -> float:
    """Records when it ran (wall clock) and returns that time."""
    return record(log, "stamp", tag)


@function()
def after(t: float, log: str) -> float:
    return record(log, "after", t)


@function()
@application()
def delayed(delay: float, log: str) -> dict:
    """`run_later` then `result()`: the call starts no earlier than `delay` s after it is made."""
    asked = time.time()
    fut = stamp.future("later", log).run_later(delay)
    started = fut.result()
    return {"asked": asked, "started": started}


@function()
@application()
def delayed_tail(delay: float, log: str) -> float:
    """A delayed future returned as a tail call, with a dependant started before it is due."""
    record(log, "asked")
    first = stamp.future("tail", log).run_later(delay)
    return after.future(first, log)


@function()
def flaky(log: str) -> str:
    """Fails on its first attempt; sets no retry policy of its own."""
    record(log, "flaky")
    if count(log, "flaky") < 2:
        raise RuntimeError("first attempt fails")
    return "ok"


@function()
@application(retries=Retries(max_retries=2, initial_delay=0.05), tags={"suite": "tensorlake"})
def app_retries(log: str) -> str:
    """`@function()` above `@application()`; the application's retries cover `flaky`."""
    return flaky.future(log)


@function()
def double(x: int) -> int:
    return 2 * x


@function()
def add(a: int, b: int) -> int:
    return a + b


@function()
@application()
def iterables(n: int) -> dict:
    """map and reduce over a generator, a range and a tuple, blocking and as futures."""
    return {
        "generator": double.map(x for x in range(n)),
        "range": add.reduce(range(n), 0),
        "tuple": double.future.map(tuple(range(n))).result(),
    }


@function()
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@function()
@application()
def timeout_then_value(seconds: float) -> list[str]:
    """`result(timeout=)` shorter than the call raises engine.TimeoutError (a builtin
    TimeoutError too); the call keeps running and a later `result()` has its value."""
    fut = sleepy.future(seconds)
    out = []
    try:
        fut.result(timeout=0.05)
    except engine.TimeoutError as exc:
        out.append(f"timeout:{isinstance(exc, TimeoutError)}")
    out.append(fut.result())
    return out


@function()
def refuse(x: int) -> int:
    raise RequestError(f"refused {x}")


@function()
@application()
def request_error_passes(x: int) -> str:
    """A caller's `except FunctionError` does not swallow a callee's RequestError."""
    try:
        refuse(x)
    except FunctionError:
        return "swallowed"
    return "unreachable"


@function()
def shout(word: str) -> str:
    print(f"shout says {word}")
    return word.upper()


@application()
@function()
def chatty(word: str) -> str:
    """Prints, logs through `Logger` and calls a function that prints: all of it should reach
    the stdout of whoever ran the request locally."""
    engine.Logger.get_logger(step="chatty").info("about to shout", word=word)
    return shout(word)
