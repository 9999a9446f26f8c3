"""The one seam between the SDK and whatever runs it.

`Future`, `Function.__call__` and `Future.wait` never talk to gRPC, the scheduler or the store
directly. They ask the *current runtime*: an object implementing `Runtime`, installed for the
duration of a call by the function executor (`engine.executor.runtime`). Outside a call there is
no runtime, and blocking on a future is a usage error: start work with `run_local_application`.

Call IDs are made here, because their determinism is a durability invariant: a call's children
are numbered in the order the call creates them, so re-running a parent (after a failure or an
engine crash) maps each child onto the ID it had before, and finished children are reused from
their checkpoints instead of running again. Reordering the inputs of `child_id` changes every
ID and makes resumed runs re-execute finished work.
"""

from __future__ import annotations

import abc
import contextvars
import hashlib
import itertools
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import SDKUsageError

if TYPE_CHECKING:
    from engine.sdk.future import RETURN_WHEN, Future


def child_id(parent_id: str, seq: int, kind: str, function: str) -> str:
    """Deterministic ID of the `seq`-th future created by call `parent_id`."""
    digest = hashlib.sha256(f"{parent_id}\x00{seq}\x00{kind}\x00{function}".encode()).hexdigest()
    return "c" + digest[:23]


class Runtime(abc.ABC):
    """What a runner provides to the SDK while a call executes."""

    @abc.abstractmethod
    def start(self, futures: Sequence[Future]) -> None:
        """Start `futures` and every not-yet-started future they depend on."""

    @abc.abstractmethod
    def wait(
        self, futures: Sequence[Future], timeout: float | None, return_when: RETURN_WHEN
    ) -> None:
        """Block until `return_when` holds for `futures` (or `timeout` passes), recording the
        outcome of each future that finished on it (`Future._resolve`)."""

    # The request context (`engine.sdk.context`). A runtime without one refuses.

    def headers(self) -> list[tuple[str, str]]:
        """The submitting HTTP request's headers (name, value), in order."""
        raise SDKUsageError("this runtime has no request context")

    def get_state(self, key: str) -> tuple[bool, Any]:
        """(found, value) of `key` in the request's state."""
        raise SDKUsageError("this runtime has no request context")

    def set_state(self, key: str, value: Any) -> None:
        raise SDKUsageError("this runtime has no request context")

    def progress(self, current: float, total: float, message: str | None,
                 attributes: dict[str, str] | None) -> None:
        raise SDKUsageError("this runtime has no request context")


class Metrics:
    """What one call records through `RequestContext.metrics`: counters add up, timers keep
    count, sum, min and max. Sent with the call's outcome. Thread-safe."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.timers: dict[str, list[float]] = {}  # name -> [count, sum, min, max]
        self._lock = threading.Lock()

    def counter(self, name: str, value: int) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + value

    def timer(self, name: str, value: float) -> None:
        with self._lock:
            t = self.timers.get(name)
            if t is None:
                self.timers[name] = [1, value, value, value]
            else:
                t[0] += 1
                t[1] += value
                t[2] = min(t[2], value)
                t[3] = max(t[3], value)


class CallContext:
    """The call being executed on this thread: its id, its runtime and its child counter."""

    def __init__(self, runtime: Runtime, run_id: str, call_id: str, function: str) -> None:
        self.runtime = runtime
        self.run_id = run_id
        self.call_id = call_id
        self.function = function
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self.metrics = Metrics()
        # The process the call runs in: a process forked inside the call inherits this context
        # but may not use it (`engine.sdk.context`, `engine.executor.runtime`).
        self.pid = os.getpid()

    def new_child_id(self, kind: str, function: str) -> str:
        with self._lock:
            seq = next(self._seq)
        return child_id(self.call_id, seq, kind, function)


_current: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "engine_call_context", default=None
)
# A fallback for threads the user starts inside a call (contextvars do not follow plain
# threads): set only while exactly one call runs in this process.
_process_default: CallContext | None = None


def current_context() -> CallContext | None:
    return _current.get() or _process_default


def require_context(what: str) -> CallContext:
    ctx = current_context()
    if ctx is None:
        raise SDKUsageError(
            f"{what} needs a running request: call functions from inside another function, "
            "or start the application with run_local_application(app, ...) or `engine run`."
        )
    return ctx


def enter(ctx: CallContext) -> contextvars.Token[CallContext | None]:
    return _current.set(ctx)


def leave(token: contextvars.Token[CallContext | None]) -> None:
    _current.reset(token)


def set_process_default(ctx: CallContext | None) -> None:
    global _process_default
    _process_default = ctx


def detached_id() -> str:
    """ID for a future created outside any call (never checkpointed under a parent)."""
    # Random hex as uuid4 gave, without importing uuid (and platform) in every executor.
    return "f" + os.urandom(12).hex()[:23]
