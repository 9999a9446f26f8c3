"""Awaiting with a time limit (`engine.timeouts`): the value, a timeout, and above all a
cancellation that arrives as the awaited operation completes, which `asyncio.wait_for` loses
before Python 3.12 (python/cpython#86296) — a polling loop then never ends."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engine.timeouts import connects, within


async def _wait_for(seconds: float, awaitable: Awaitable[Any]) -> Any:
    return await asyncio.wait_for(awaitable, seconds)


IMPLEMENTATIONS = [
    pytest.param(within, id="within"),
    # The same race, shown to lose the cancellation with asyncio.wait_for: the test below can
    # tell a correct implementation from the one every call site used before.
    pytest.param(_wait_for, id="asyncio.wait_for", marks=pytest.mark.xfail(
        sys.version_info < (3, 12), strict=True, reason="python/cpython#86296")),
]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_a_cancellation_arriving_as_the_operation_completes_is_never_lost(
        impl: Callable[[float, Awaitable[Any]], Awaitable[Any]]) -> None:
    async def main() -> None:
        operation = asyncio.get_running_loop().create_future()
        waiting = asyncio.ensure_future(impl(10.0, operation))
        await asyncio.sleep(0)  # `waiting` now waits for `operation`
        operation.set_result("done")  # completes in the same loop turn as the cancellation
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())


def test_the_value_comes_back_and_a_timeout_cancels_the_operation() -> None:
    async def main() -> None:
        assert await within(1.0, asyncio.sleep(0, result="value")) == "value"
        assert await within(None, asyncio.sleep(0, result="no limit")) == "no limit"

        slow = asyncio.ensure_future(asyncio.sleep(30))
        with pytest.raises(TimeoutError):
            await within(0.05, slow)
        await asyncio.sleep(0)
        assert slow.cancelled()

        failing = asyncio.get_running_loop().create_future()
        failing.set_exception(OSError("refused"))
        with pytest.raises(OSError, match="refused"):
            await within(1.0, failing)

    asyncio.run(main())


def test_a_cancelled_caller_cancels_the_operation() -> None:
    async def main() -> None:
        operation = asyncio.ensure_future(asyncio.sleep(30))
        waiting = asyncio.ensure_future(within(10.0, operation))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)
        assert operation.cancelled()

    asyncio.run(main())


def test_connects_tells_a_listening_port_from_a_closed_one() -> None:
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        assert asyncio.run(connects("127.0.0.1", listening.getsockname()[1], 1.0))
        assert not asyncio.run(connects("127.0.0.1", closed.getsockname()[1], 1.0))
