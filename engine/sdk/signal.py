"""`engine.signal(name)`: a future whose value comes from outside the run — a person's approval,
a webhook — rather than from a function.

A signal future is a node of the call graph like any future (its id is deterministic: the
creating call's next child id), but no executor runs it. The scheduler completes it with the
payload of a signal of its name sent to the run (`POST /v1/runs/{id}/signals/{name}`, `engine
signal RUN_ID NAME --data JSON`), which the store keeps first: a signal sent before its future
exists waits for it, and one sent while no engine drives the run is found on resume. Pass it to
a function — `publish.future(draft, engine.signal("approval"))` — and nothing runs, and no
executor is held, while the run waits (docs/state-machine.md, "Signals").
"""

from __future__ import annotations

import math
import re
from typing import Any

from engine.errors import SDKUsageError
from engine.sdk import runtime as _rt
from engine.sdk.future import Future

#: A signal's name: a path segment of `POST /v1/runs/{id}/signals/{name}`.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def valid_signal_name(name: object) -> bool:
    return isinstance(name, str) and bool(_NAME.fullmatch(name)) and name not in (".", "..")


class SignalSource:
    """What a signal future stands for where other futures name their function: the signal's
    name and options (`Future.function`)."""

    __slots__ = ("name", "timeout", "repeatable")

    def __init__(self, name: str, timeout: float | None, repeatable: bool) -> None:
        self.name = name
        self.timeout = timeout
        self.repeatable = repeatable

    def __repr__(self) -> str:
        return f"<signal {self.name}>"


def signal(name: str, timeout: float | None = None, *, repeatable: bool = False) -> Future[Any]:
    """A future that completes with the payload of the signal `name` sent to this run.

    Start it like any future — pass it to another function's future, return it as a tail call,
    or `.result()` it (which holds this call's executor while it waits; passing it on does not).
    `timeout`: seconds from now (durably: from the future's creation, across resumes) after which
    it fails with `SignalTimeout` if no signal of its name has arrived.

    One signal of a name is accepted per run, and every future of that name gets its payload; a
    second is refused (HTTP 409). With `repeatable=True`, signals of the name queue up, and each
    future of it takes the oldest one not taken yet, in the order the futures become ready.

    Raises `SDKUsageError` outside a running function, for a name that is not 1-128 of
    `A-Za-z0-9_.-`, or a timeout that is not a positive finite number.
    """
    if not valid_signal_name(name):
        raise SDKUsageError(f"signal name {name!r}: use 1-128 letters, digits, '_', '.' or '-'")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise SDKUsageError(f"signal timeout {timeout!r}: a positive number of seconds, or None")
    _rt.require_context("engine.signal()")
    source: Any = SignalSource(name, float(timeout) if timeout is not None else None, bool(repeatable))
    return Future("signal", source, (), {})


__all__ = ["SignalSource", "signal", "valid_signal_name"]
