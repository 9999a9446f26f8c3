"""async functions: `await fn(x)` and `asyncio.gather(a(x), a(y))`."""

from __future__ import annotations

import asyncio

from sidefx import record

from engine import Future, application, function


@function(concurrency=4)
async def slow_double(x: int, log: str) -> int:
    record(log, "start", x)
    await asyncio.sleep(0.5)
    record(log, "end", x)
    return 2 * x


@function()
def triple(x: int) -> int:
    return 3 * x


@application()
@function()
async def gather_app(x: int, y: int, log: str) -> list[int]:
    first = await slow_double(x, log)
    both = await asyncio.gather(slow_double(x + 1, log), slow_double(y, log))
    # A sync function called from async code blocks; its future form can be awaited.
    third = await triple.future(first)
    return [first, *both, third]


@function()
async def adouble(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


@function()
async def aadd(a: int, b: int) -> int:
    return a + b


@application()
@function()
async def async_map_reduce(n: int) -> dict:
    """map and reduce of async functions are awaited; calls may go to Future.wait as is."""
    values = await adouble.map(list(range(n)))
    total = await aadd.reduce(values, 0)
    done, not_done = Future.wait([adouble(100), adouble(200)])
    return {"values": values, "total": total, "waited": sorted(f.result() for f in done),
            "not_done": len(not_done)}
