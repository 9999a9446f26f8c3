"""Applications the webhook and sync-execute tests deploy (`tests/integration/test_webhooks.py`)."""

from __future__ import annotations

import time

from engine import application, function


@application()
@function()
def double(x: int) -> int:
    return 2 * x


@application()
@function()
def boom(message: str) -> int:
    raise ValueError(message)


@application()
@function()
def big(n: int) -> str:
    """A result too large to ride in a webhook's body: the receiver gets its URL."""
    return "x" * n


@application()
@function()
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
