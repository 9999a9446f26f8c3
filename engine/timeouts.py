"""Awaiting with a time limit, without losing a cancellation.

`asyncio.wait_for` on Python before 3.12 can swallow a cancellation that arrives while the
operation it waits for completes (python/cpython#86296): the cancelled task then goes on as if
it had never been cancelled — a loop polling with it keeps polling, and whoever cancelled it
waits for ever or until its own timeout. `asyncio.timeout` fixes it, but only from Python 3.11,
and the engine runs on 3.10 too. `within` is the engine's one way to await with a limit: a
cancellation of the caller always propagates, whatever the awaited operation did meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(seconds: float | None, awaitable: Awaitable[T]) -> T:
    """`await awaitable`, or raise the builtin `TimeoutError` once `seconds` have passed (never
    with `None`); the operation is then cancelled, and not waited for. When the caller is
    cancelled, so is the operation, and `CancelledError` propagates even if the operation had
    just finished: one whose result must not be lost then (an open connection) should clean
    up inside `awaitable` itself."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except BaseException:
        _abandon(task)
        raise
    if not done:
        _abandon(task)
        raise TimeoutError(f"not done within {seconds:g} s")
    return task.result()


def _abandon(task: asyncio.Future[Any]) -> None:
    """Cancel `task`, and retrieve whatever it ends with, so that nothing is logged as never
    retrieved."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def connects(host: str, port: int, seconds: float) -> bool:
    """Whether a TCP connection to `host:port` opens within `seconds` (it is closed at once):
    how a backend learns that a starting executor listens."""
    async def attempt() -> None:
        _reader, writer = await asyncio.open_connection(host, port)
        writer.close()

    try:
        await within(seconds, attempt())
    except (OSError, TimeoutError):
        return False
    return True
