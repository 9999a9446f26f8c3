"""When an executor ends by itself: it never outlives the engine that owns it.

A backend stops its executors (`stop_executor`, `close`), but an engine killed with `kill -9`,
or whose machine is lost, stops nothing. An executor then ends on its own, whether a call is
running or not — a call that never returns must not keep it alive:

- **Parent gone** (the process backend passes `--parent-pid`): within about a second of the
  engine process dying. An executor forked from the process backend's template
  (`engine.executor.forkserver`, `--template-pid`) is the engine's grandchild: it checks that
  its parent is still the template and the template's parent still the engine.
- **Orphaned**: once initialised, no open `Calls` stream for longer than the grace period,
  `ENGINE_EXECUTOR_ORPHAN_TIMEOUT` seconds (default 10; each backend puts the engine's value into
  the executor's environment). The scheduler opens one `Calls` stream right after `Initialize`
  and keeps it open for the executor's whole life, busy or idle; it never opens a second one (a
  broken stream makes it retire the executor). So a stream that stays closed means the scheduler
  is gone: killed (the kernel closes its sockets), or silent (gRPC keepalive, `wire.GRPC_OPTIONS`,
  breaks the connection within about 10 s). The grace matches the scheduler's run lease.
- **Never initialised** within `INIT_TIMEOUT_S` (300 s): nobody is coming. A blank executor of
  a warm pool (`engine.scheduler.warm`) is held from its start by a `Calls` stream opened before
  `Initialize`, so the orphan grace, not this, ends it when its engine dies.

A call runs on a thread, and Python cannot interrupt a thread, so the executor ends with
`os._exit` (`engine.executor.server.serve`), never waiting for its calls.

A process that a call forks has no watch of its own (the watching thread is not copied into it):
it ends with the executor — with its process group on the process backend, with its container
on docker. It never ends the executor either: it never returns into the executor's code.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

from engine.errors import SDKUsageError
from engine.executor import memory
from engine.procstat import parent_of

ORPHAN_TIMEOUT_ENV = "ENGINE_EXECUTOR_ORPHAN_TIMEOUT"
DEFAULT_ORPHAN_TIMEOUT_S = 10.0
INIT_TIMEOUT_S = 300.0
#: How often the watch looks: the parent check must notice a death within about a second.
POLL_S = 0.25


def parse_orphan_timeout(text: str | None) -> float:
    """Seconds from the variable's text (unset or blank: the default). Raises ValueError."""
    return _seconds(ORPHAN_TIMEOUT_ENV, text, DEFAULT_ORPHAN_TIMEOUT_S, zero_ok=False)


def parse_idle_trim(text: str | None) -> float:
    """`ENGINE_EXECUTOR_IDLE_TRIM`'s seconds (`engine.executor.memory.IDLE_TRIM_S` when unset or
    blank; 0 allowed). Raises ValueError."""
    return _seconds(memory.IDLE_TRIM_ENV, text, memory.IDLE_TRIM_S, zero_ok=True)


def _seconds(name: str, text: str | None, default: float, *, zero_ok: bool) -> float:
    """A number of seconds from environment variable `name`'s text; ValueError, saying what to
    set instead, for anything else."""
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value >= 0 if zero_ok else value > 0)):
        what = "0 or more" if zero_ok else "greater than 0"
        raise ValueError(f"{name} must be a number of seconds {what}, not {text!r}")
    return value


# An executor's allocator defaults, beneath the function's own environment: freed memory kept
# for the next call (`engine.executor.memory`).
EXECUTOR_ENV_DEFAULTS = {"GLIBC_TUNABLES": memory.GLIBC_TUNABLES}

#: Set to 1 in a blank executor's environment (a warm pool's, `engine.backends.base.BLANK`) by
#: every backend: it will wait for a function, and uses the wait (`engine.executor.server.
#: _warm_imports`). The executor takes it out of its environment at start.
BLANK_ENV = "ENGINE_EXECUTOR_BLANK"


def blank_env(function: str) -> dict[str, str]:
    """What a backend adds to the environment of an executor started for `function`."""
    from engine.backends.base import BLANK  # (the executor itself loads no backend)

    return {BLANK_ENV: "1"} if function == BLANK else {}


def executor_env() -> dict[str, str]:
    """What every backend adds to an executor's environment: this engine's orphan grace period
    (`ENGINE_EXECUTOR_ORPHAN_TIMEOUT` here, else the default) and, when set here, how long an
    idle executor keeps its freed memory (`ENGINE_EXECUTOR_IDLE_TRIM`, `engine.executor.memory`).
    Raises `SDKUsageError` when either is set to something that is not a number of seconds."""
    try:
        value = parse_orphan_timeout(os.environ.get(ORPHAN_TIMEOUT_ENV))
        trim = os.environ.get(memory.IDLE_TRIM_ENV)
        env = {ORPHAN_TIMEOUT_ENV: f"{value:g}"}
        if trim is not None and trim.strip():
            env[memory.IDLE_TRIM_ENV] = f"{parse_idle_trim(trim):g}"
    except ValueError as exc:
        raise SDKUsageError(str(exc)) from None
    return env


class Lifetime:
    """Tracks what keeps an executor alive; `watch` ends it (sets `stop`, with a `reason`) when
    nothing does. Thread-safe: gRPC handler threads report streams, one thread watches."""

    def __init__(self, *, orphan_timeout: float, init_timeout: float = INIT_TIMEOUT_S,
                 parent_pid: int | None = None, template_pid: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.orphan_timeout = orphan_timeout
        self.init_timeout = init_timeout
        self.parent_pid = parent_pid
        self.template_pid = template_pid
        self._clock = clock
        self._lock = threading.Lock()
        self._initialized = False
        self._streams = 0
        # Since when nothing has held the executor: its start, then the end of Initialize, then
        # the close of the last Calls stream.
        self._since = clock()
        self.reason: str | None = None

    def initialized(self) -> None:
        """An `Initialize` ended (even in failure: a scheduler took this executor, and from now
        on only its `Calls` stream keeps it)."""
        with self._lock:
            self._initialized = True
            if self._streams == 0:
                self._since = self._clock()

    def stream_opened(self) -> None:
        """A scheduler opened a `Calls` stream: it holds this executor from now on, even before
        `Initialize` (a blank executor of its warm pool), so that its end ends the executor."""
        with self._lock:
            self._streams += 1
            self._initialized = True

    def stream_closed(self) -> None:
        with self._lock:
            self._streams -= 1
            if self._streams == 0:
                self._since = self._clock()

    def check(self) -> str | None:
        """Why the executor should end now, or None."""
        if self.parent_pid:
            engine: int | None = os.getppid()
            if self.template_pid is not None:
                if engine != self.template_pid:
                    return f"its template process {self.template_pid} is gone"
                engine = parent_of(self.template_pid)
            if engine != self.parent_pid:
                return f"its engine process {self.parent_pid} is gone"
        with self._lock:
            idle = self._clock() - self._since
            if not self._initialized and idle > self.init_timeout:
                return f"nobody initialised it within {self.init_timeout:g} s"
            if self._initialized and self._streams == 0 and idle > self.orphan_timeout:
                return f"no scheduler connection for {self.orphan_timeout:g} s"
        return None

    def watch(self, stop: threading.Event, tick: Callable[[], None] | None = None) -> None:
        """Thread body: poll `check` until it gives a reason (then set `stop`) or `stop` is set;
        `tick`, when given, is called at every poll (`engine.executor.memory.Trim.tick`)."""
        while not stop.wait(POLL_S):
            if tick is not None:
                tick()
            reason = self.check()
            if reason is not None:
                self.reason = reason
                stop.set()
