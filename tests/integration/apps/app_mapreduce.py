"""map and reduce. Items take one argument, so these functions log to $ENGINE_TEST_LOG."""

from __future__ import annotations

from sidefx import record

from engine import application, function


@function()
def numbers(n: int) -> list[int]:
    record(None, "numbers", n)
    return list(range(1, n + 1))


@function()
def double(x: int) -> int:
    record(None, "double", x)
    return 2 * x


@function()
def add(a: int, b: int) -> int:
    record(None, "add", a, b)
    return a + b


@application()
@function()
def map_list(items: list[int]) -> list[int]:
    """`fn.future.map(list)` returned as a tail call."""
    return double.future.map(items)


@application()
@function()
def map_of_future(n: int) -> list[int]:
    """`fn.map(future_of_list)`: blocks, fanning out over a list only known at run time."""
    return double.map(numbers.future(n))


@application()
@function()
def map_of_futures(n: int) -> list[int]:
    """Items that are themselves futures."""
    return double.future.map([double.future(i) for i in range(n)])


@application()
@function()
def reduce_with_initial(items: list[int], initial: int) -> int:
    return add.future.reduce(items, initial)


@application()
@function()
def reduce_no_initial(items: list[int]) -> int:
    return add.future.reduce(items)


@application()
@function()
def map_then_reduce(n: int) -> int:
    """sum(2*i for i in 1..n): reduce over the future of a map over the future of a list."""
    return add.future.reduce(double.future.map(numbers.future(n)), 0)
