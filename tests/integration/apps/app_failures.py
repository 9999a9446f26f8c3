"""Failure handling: retries with backoff, RequestError, timeouts, a failing branch."""

from __future__ import annotations

import os
import time

from sidefx import count, record, wait_for_checkpoints

from engine import RequestError, Retries, application, function


@function(retries=Retries(max_retries=3, initial_delay=0.1, delay_multiplier=8, max_delay=10))
def flaky(log: str, failures: int) -> str:
    """Fails its first `failures` executions."""
    record(log, "flaky")
    print(f"flaky attempt {count(log, 'flaky')}")
    if count(log, "flaky") <= failures:
        raise RuntimeError(f"flaky failure #{count(log, 'flaky')}")
    return "ok"


@application()
@function()
def retry_app(log: str, failures: int) -> str:
    return flaky.future(log, failures)


@function(retries=Retries(max_retries=2, initial_delay=0.05, delay_multiplier=1))
def always_fails(log: str) -> str:
    record(log, "always_fails")
    raise RuntimeError("always fails")


@application()
@function()
def exhausted_app(log: str) -> str:
    return always_fails.future(log)


@function(retries=Retries(max_retries=3, initial_delay=0.05))
def refuses(log: str) -> str:
    record(log, "refuses")
    raise RequestError("the input is unusable")


@application()
@function()
def request_error_app(log: str) -> str:
    return refuses.future(log)


@function(retries=Retries(max_retries=3, initial_delay=0.05))
def caller_of_refuses(log: str) -> str:
    record(log, "caller")
    return refuses(log)  # blocking: the RequestError propagates through this call


@application()
@function()
def request_error_nested_app(log: str) -> str:
    return caller_of_refuses.future(log)


@function()
def dawdles(log: str) -> str:
    record(log, "dawdles")
    time.sleep(60)
    record(log, "dawdled")
    return "late"


@application()
@function()
def request_error_caught_app(log: str) -> str:
    """Catches a callee's RequestError and tries to go on: the request fails all the same, and
    the sibling still running is stopped."""
    sibling = dawdles.future(log)
    sibling.run()
    try:
        refuses(log)
    except RequestError:
        record(log, "went_on")
        return "caught it"
    return sibling.result()


@function()
def inherits(log: str) -> str:
    record(log, "inherits")
    if count(log, "inherits") < 2:
        raise RuntimeError("first attempt fails")
    return "second time lucky"


@application(retries=Retries(max_retries=1, initial_delay=0.05))
@function()
def app_default_retries(log: str) -> str:
    return inherits.future(log)


@function(timeout=1)
def snail(log: str) -> str:
    record(log, "snail")
    time.sleep(30)
    return "too late"


@application()
@function()
def timeout_app(log: str) -> str:
    return snail.future(log)


# --- a failing branch with healthy siblings, then resume -------------------------------------


@function(concurrency=8)
def healthy(i: int, log: str) -> int:
    record(log, "healthy", i)
    return i


@function()
def fragile(n: int, log: str, flag: str) -> int:
    """Fails while `flag` exists, once its n healthy siblings are checkpointed (so the run's
    failure cannot cancel them: the test checks each ran exactly once)."""
    record(log, "fragile")
    wait_for_checkpoints("healthy", n)
    if os.path.exists(flag):
        raise RuntimeError("fragile is broken while the flag file exists")
    return 100


@application()
@function()
def branches(n: int, log: str, flag: str) -> int:
    record(log, "branches")
    parts = [healthy.future(i, log) for i in range(n)]
    return join_logged.future(log, *parts, fragile.future(n, log, flag))


@function()
def join_logged(log: str, *values: int) -> int:
    record(log, "join")
    return sum(values)


# --- executors that die, parents that fail after their children ----------------------------------


@function(retries=Retries(max_retries=1, initial_delay=0.05))
def dies_once(log: str) -> int:
    record(log, "dies_once", os.getpid())
    if count(log, "dies_once") == 1:
        os._exit(3)  # the executor process dies mid-call
    return os.getpid()


@application()
@function()
def executor_lost_app(log: str) -> int:
    return dies_once.future(log)


@function()
def always_dies(log: str) -> int:
    record(log, "always_dies")
    os._exit(4)


@application()
@function()
def executor_lost_fatal_app(log: str) -> int:
    return always_dies.future(log)


@function(retries=Retries(max_retries=1, initial_delay=0.05))
def parent_fails_after_children(log: str) -> int:
    """Blocks on two children, then fails on its first attempt: the retry must reuse them."""
    record(log, "parent")
    total = healthy(1, log) + healthy(2, log)
    if count(log, "parent") == 1:
        raise RuntimeError("the parent fails after its children finished")
    return total


@application()
@function()
def parent_retry_app(log: str) -> int:
    return parent_fails_after_children.future(log)


@application()
@function()
def blocking_parent(log: str, flag: str) -> int:
    """Not a tail call: it waits for its children, then fails while `flag` exists."""
    record(log, "blocking_parent")
    values = [healthy(i, log) for i in range(3)]
    mapped = healthy_square.map(values)
    if os.path.exists(flag):
        raise RuntimeError("the parent is broken while the flag file exists")
    return sum(values) + sum(mapped)


@function(concurrency=8)
def healthy_square(x: int) -> int:
    return x * x


@function()
def big(size: int) -> str:
    return "x" * size


@function()
def length(text: str) -> int:
    return len(text)


@application()
@function()
def big_values(size: int) -> dict:
    text = big.future(size)
    return {"length": length(text), "text": text.result()}


# --- resume after the user fixed what a parent passes to its child -------------------------------


@function()
def check_value(value: str, log: str) -> str:
    record(log, "check_value", value)
    if value != "good":
        raise ValueError(f"bad value {value!r}")
    return value


@application()
@function()
def reads_its_input(path: str, log: str) -> str:
    """Passes the content of `path` (which the user fixes between tries) to its child."""
    with open(path) as fh:
        value = fh.read().strip()
    return check_value(value, log) + "!"
