"""Call graphs: fan-out/fan-in by tail call, chained parallel stages, a future shared by several
consumers, and futures started with .run() for control."""

from __future__ import annotations

import os
import time

from sidefx import record, wait_for

from engine import application, function

# When this process imported the application: an executor does as it is initialised.
IMPORTED_AT = time.time()


@function()
def square(x: int, log: str) -> int:
    record(log, "square", x)
    return x * x


@function()
def increment(x: int, log: str) -> int:
    record(log, "increment", x)
    return x + 1


@function()
def total(*values: int) -> list[int]:
    # Returns its inputs too, so tests can check their order.
    return [sum(values), *values]


@application()
@function()
def fan(n: int, log: str) -> list[int]:
    """Fan out n squares, fan in with `total`, returned as a tail call."""
    record(log, "fan")
    return total.future(*[square.future(i, log) for i in range(n)])


@application()
@function()
def stages(n: int, log: str) -> list[int]:
    """Stage 1 squares in parallel; stage 2 increments each stage-1 result in parallel."""
    record(log, "stages")
    first = [square.future(i, log) for i in range(n)]
    second = [increment.future(f, log) for f in first]
    return total.future(*second)


@function()
def stage_one(n: int, log: str) -> list[int]:
    record(log, "stage_one", n)
    return [i * 10 for i in range(n)]


@application()
@function()
def stages_blocking(n: int, log: str) -> list[int]:
    """Stage 2 fans out over the *value* of stage 1, which the parent waits for."""
    record(log, "stages_blocking")
    items = stage_one(n, log)
    return total.future(*[increment.future(x, log) for x in items])


@function()
def expensive(log: str) -> int:
    record(log, "expensive")
    return 7


@function()
def plus(x: int, y: int, log: str) -> int:
    record(log, "plus", y)
    return x + y


@function()
def flatten(values: list, pair: tuple) -> list:
    assert isinstance(values, list) and isinstance(pair, tuple)
    return [*values, *pair]


@application()
@function()
def shared(log: str) -> list:
    """One future consumed by several callers (positionally, by keyword, inside a list and a
    tuple) and by the parent itself."""
    base = expensive.future(log)
    a = plus.future(base, 1, log)
    b = plus.future(x=base, y=2, log=log)
    direct = base.result()
    return flatten.future([a, b, 0], pair=(base, direct))


@function()
def worker(tag: str, log: str) -> str:
    record(log, "worker", tag)
    return tag.upper()


@application()
@function()
def control(log: str) -> dict:
    """Start two futures with .run(), prove they run while the parent keeps working, then read
    their results. Without .run() the wait below would time out: nobody started them."""
    a = worker.future("a", log).run()
    b = worker.future("b", log).run()
    wait_for(log, "worker", 2, timeout=30)  # the parent's "work": it runs while they run
    record(log, "parent_result")
    return {"results": [a.result(), b.result()]}


# --- tail calls in odd places, recursion, pool limits -------------------------------------------


@function()
def leaf(x: int) -> int:
    return x + 1


@function()
def middle(x: int) -> int:
    return leaf.future(x * 10)  # a tail call from a call that is itself a tail call


@application()
@function()
def tail_chain(x: int) -> int:
    return middle.future(x)


@application()
@function()
def tail_of_started(x: int) -> list[int]:
    running = leaf.future(x).run()
    finished = leaf.future(x + 1)
    finished.result()
    return total.future(running, finished)  # both already started, one already done


@function()
def depth(n: int) -> int:
    """Recursion: each level blocks on the next, in an executor of the same function."""
    return 0 if n == 0 else depth(n - 1) + 1


@application()
@function()
def recurse(n: int) -> int:
    return depth(n)


@function(max_containers=1, concurrency=1)
def serial(i: int, log: str) -> int:
    record(log, "serial_start", i)
    import time

    time.sleep(0.2)
    record(log, "serial_end", i)
    return i


@application()
@function()
def serial_app(n: int, log: str) -> list[int]:
    return total.future(*[serial.future(i, log) for i in range(n)])


@function(concurrency=3, max_containers=1)
def together(i: int, log: str) -> int:
    import os
    import time

    record(log, "together_start", i, os.getpid())
    time.sleep(0.4)
    record(log, "together_end", i, os.getpid())
    return i


@application()
@function()
def together_app(n: int, log: str) -> list[int]:
    return total.future(*[together.future(i, log) for i in range(n)])


@function(max_containers=3)
def broad(i: int, log: str) -> int:
    record(log, "broad", i, os.getpid(), repr(IMPORTED_AT))
    time.sleep(1.0)
    return i


@application()
@function()
def broad_app(n: int, log: str, think: float) -> list[int]:
    """Works `think` seconds (a model call planning), then fans out to `n` calls of `broad`."""
    time.sleep(think)
    record(log, "broad_fanout")
    return total.future(*[broad.future(i, log) for i in range(n)])  # type: ignore[return-value]


@function(concurrency=16)
def double(i: int) -> int:
    return i * 2


@function()
def nap(seconds: float) -> int:
    import time

    time.sleep(seconds)
    return 0


@function()
def add_up(*values: int) -> int:
    return sum(values)


@application()
@function()
def wide(n: int) -> int:
    """A fan-out of n trivial calls and one that takes 2 s, joined by one tail call."""
    return add_up.future(*[double.future(i) for i in range(n)], nap.future(2.0))
