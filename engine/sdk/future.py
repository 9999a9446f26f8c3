"""`Future`: a call that has been described, and maybe started, but whose value may not exist yet.

`fn.future(*args)` only records the call. It starts when something needs it: `.run()`,
`.result()`, `await`, `Future.wait`, being passed to a started future, or being *returned* from a
function — a tail call, which hands the caller's result over to the future and frees the caller
at once. `.run_later(delay)` starts it no earlier than `delay` seconds from now (kept by a timer
in this process: see its docstring).

Futures passed as arguments are dependencies: the callee starts when they have finished and
receives their values. Futures may be passed directly, inside a top-level list or tuple argument,
as `map`/`reduce` items, or as `reduce`'s initial value. A future cannot be pickled into any other
value (that would hide a dependency from the scheduler).
"""

from __future__ import annotations

import asyncio
import enum
import math
import threading
import time
import weakref
from collections.abc import Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engine.errors import SDKUsageError, SerializationError
from engine.errors import TimeoutError as EngineTimeoutError
from engine.sdk import runtime as _rt

if TYPE_CHECKING:
    from engine.sdk.function import Function

T = TypeVar("T")


class RETURN_WHEN(enum.Enum):  # noqa: N801 - the name users know from Tensorlake
    """When `Future.wait` returns."""

    FIRST_COMPLETED = 0
    FIRST_FAILURE = 1
    ALL_COMPLETED = 2


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


class Future(Generic[T]):
    """The eventual value of a function call (or of a map or reduce over calls)."""

    __slots__ = ("_id", "kind", "function", "args", "kwargs", "_started", "_done", "_value",
                 "_exception", "_run_called", "_schedule", "_coroutine", "__weakref__")

    def __init__(
        self, kind: str, function: Function[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.kind = kind  # "call" | "map" | "reduce" | "application" | "signal" (engine.sdk.signal)
        self.function = function
        self.args = args
        self.kwargs = kwargs
        ctx = _rt.current_context()
        self._id = ctx.new_child_id(kind, function.name) if ctx else _rt.detached_id()
        self._started = False
        self._done = False
        self._value: Any = None
        self._exception: BaseException | None = None
        # Set by run(), run_later() and by whatever runs the future for the user (result(),
        # await, wait): a second run() is a usage error, as in Tensorlake. A future started
        # only as another future's dependency can still be run() once (a no-op).
        self._run_called = False
        # A start that run_later() (or a delayed dependency) put off; None once submitted.
        self._schedule: _Schedule | None = None
        self._coroutine: Any = None  # weakref to the coroutine coroutine() returned

    # --- identity ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Deterministic call ID (stable across re-runs of the call that created it)."""
        return self._id

    def __repr__(self) -> str:
        state = ("done" if self._done else "started" if self._started
                 else "scheduled" if self._schedule is not None else "not started")
        return f"<Future {self.kind} {self.function.name} {self._id} {state}>"

    def __reduce__(self) -> Any:
        # SerializationError (an SDKUsageError), the type Tensorlake raises for it.
        raise SerializationError(
            f"A Future ({self.function.name}) cannot be stored inside another value: pass it "
            "directly as an argument, return it as a tail call, or pass its .result()."
        )

    # --- starting and waiting ------------------------------------------------------------

    def run(self) -> Future[T]:
        """Start the call now (with any unstarted futures it depends on). Returns self.

        Raises `SDKUsageError` when this future was already run (by `run()`, `run_later()`,
        `result()`, `await` or `Future.wait`), or outside a running request. A future that
        depends on a future started with `run_later()` starts once that one has.
        """
        self._claim_run("run")
        runtime = _rt.require_context("Future.run()").runtime
        self._run_called = True
        if not self._started and self._schedule is None:
            self._start_now(runtime)
        return self

    def run_later(self, delay: float) -> Future[T]:
        """Start the call no earlier than `delay` seconds from now. Returns self at once.

        Raises `SDKUsageError` when `delay` is not a non-negative finite number, when the
        future was already run, or outside a running request.

        The scheduler has no delayed start yet, so the delay is kept by this process: a timer
        submits the future when it is due. Whatever needs it sooner — `result()`, `await`,
        `Future.wait`, a future that depends on it being started, returning it as a tail call —
        waits for its start time first (a tail call holds its caller until then). A delayed
        start still pending when its caller returns a plain value is dropped. After a crash the
        caller runs again, so the delay counts again from its new `run_later()`.
        """
        if not _is_duration(delay):
            raise SDKUsageError("Future delay must be a non-negative finite number.")
        self._claim_run("run_later")
        runtime = _rt.require_context("Future.run_later()").runtime
        self._run_called = True
        if not self._started and self._schedule is None:
            self._defer(runtime, time.monotonic() + delay)
        return self

    def coroutine(self) -> Any:
        """The coroutine that runs this future when awaited, as calling an async function gives.

        The same coroutine is returned while it is alive. Raises `SDKUsageError` outside an
        async function (no running event loop), or when the future was already run.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise SDKUsageError(
                "Future.coroutine() can only be called from an async function. "
                "Use Future.result() to get the result in a sync function."
            ) from None
        if self._run_called or self._started:
            raise SDKUsageError(
                f"Future.coroutine() cannot be called on a Future that is already running: {self!r}"
            )
        existing = self._coroutine() if self._coroutine is not None else None
        if existing is not None:
            return existing
        # Weakly held: the coroutine holds this future; a strong link back would keep both
        # alive through the coroutine-to-future map.
        coro = coroutine_for(self)
        self._coroutine = weakref.ref(coro)
        return coro

    def result(self, timeout: float | None = None) -> T:
        """Start the call if needed and block until it finishes.

        Returns its value, or raises its failure (`FunctionError`, `FunctionTimeout`,
        `OutOfMemory`, `RequestError`, …). Raises `engine.TimeoutError` (a builtin
        `TimeoutError` too) when `timeout` seconds pass first; the call keeps running.
        """
        if not self._done:
            rt = _rt.require_context("Future.result()").runtime
            deadline = None if timeout is None else time.monotonic() + timeout
            if not self._started and self._schedule is None:
                self._run_called = True
                self._start_now(rt)
            if self._schedule is not None:
                if not self._await_start(deadline):
                    raise EngineTimeoutError(f"{self.function.name} did not start within {timeout} s")
                timeout = _remaining(deadline)
            if not self._done:
                rt.wait([self], timeout, RETURN_WHEN.ALL_COMPLETED)
        if not self._done:
            raise EngineTimeoutError(f"{self.function.name} did not finish within {timeout} s")
        if self._exception is not None:
            raise self._exception
        return self._value  # type: ignore[no-any-return]

    def done(self) -> bool:
        """True once the call has a value or a failure."""
        return self._done

    @property
    def exception(self) -> BaseException | None:
        """The call's failure, once it has failed; None while running or after success."""
        return self._exception

    def __await__(self) -> Generator[Any, None, T]:
        # Start synchronously (cheap), then block in a worker thread so that other awaits —
        # `asyncio.gather(a(x), a(y))` — start and wait concurrently.
        if not self._done:
            rt = _rt.require_context("await future").runtime
            if not self._started and self._schedule is None:
                self._run_called = True
                self._start_now(rt)
            loop = asyncio.get_running_loop()
            if self._schedule is not None:
                yield from loop.run_in_executor(None, self._await_start, None).__await__()
            if not self._done:
                wait = loop.run_in_executor(None, rt.wait, [self], None, RETURN_WHEN.ALL_COMPLETED)
                yield from wait.__await__()
        return self.result()

    @classmethod
    def wait(
        cls,
        futures: Iterable[Future[Any]],
        timeout: float | None = None,
        return_when: RETURN_WHEN = RETURN_WHEN.ALL_COMPLETED,
    ) -> tuple[list[Future[Any]], list[Future[Any]]]:
        """Start any unstarted futures and block until `return_when` holds or `timeout` passes.

        Returns `(done, not_done)` in the order given. Failures do not raise here: read each
        done future's `.exception` (or call `.result()`). Raises `SDKUsageError`, before
        starting anything, when `timeout` is not None or a non-negative finite number, when
        `return_when` is not a `RETURN_WHEN`, or when an item is not a Future (or the coroutine
        of an async function's call).
        """
        items = list(futures)
        if timeout is not None and not _is_duration(timeout):
            raise SDKUsageError("Future.wait timeout must be a non-negative finite number.")
        if not isinstance(return_when, RETURN_WHEN):
            raise SDKUsageError(f"Not supported return_when value: '{return_when}'")
        for obj in items:
            if not isinstance(obj, Future) and future_of_coroutine(obj) is None:
                raise SDKUsageError(f"Cannot run a non-Future object {obj!r}.")
        waited = [_as_future(f) for f in items]
        if not all(f._done for f in waited):
            rt = _rt.require_context("Future.wait()").runtime
            # Every future is started, as in Tensorlake, even when one is already done.
            unstarted = [f for f in waited if not f._started and f._schedule is None]
            for f in unstarted:
                f._run_called = True
            _start_all(rt, unstarted)
            _wait_scheduled(rt, waited, timeout, return_when)
        done = [f for f in waited if f._done]
        return done, [f for f in waited if not f._done]

    # --- delayed starts --------------------------------------------------------------------

    def _claim_run(self, what: str) -> None:
        if self._run_called:
            raise SDKUsageError(f"Future.{what}() on a future that was already started: {self!r}")

    def _start_now(self, runtime: _rt.Runtime) -> None:
        """Submit this future, unless a future it depends on has a start still to come: then
        this one is deferred to that time (its own start would otherwise submit the other)."""
        due = _latest_pending_start(self)
        if due is not None and due > time.monotonic():
            self._defer(runtime, due)
        else:
            runtime.start([self])

    def _defer(self, runtime: _rt.Runtime, start_at: float) -> None:
        due = _latest_pending_start(self)
        if due is not None:
            start_at = max(start_at, due)
        schedule = _Schedule(runtime, start_at)
        self._schedule = schedule
        timer = threading.Timer(max(0.0, start_at - time.monotonic()), self._fire, kwargs={"raising": False})
        timer.daemon = True  # a pending start never keeps an executor process alive
        schedule.timer = timer
        timer.start()

    def _fire(self, raising: bool = True) -> None:
        """Submit a deferred future now (exactly once: the timer and a waiter may race)."""
        schedule = self._schedule
        if schedule is None:
            return
        with schedule.lock:
            if self._schedule is not schedule:
                return  # the other thread submitted it
            if schedule.timer is not None:
                schedule.timer.cancel()
            schedule.firing = threading.get_ident()
            try:
                schedule.runtime.start([self])
            except BaseException as exc:
                if not raising:  # the timer's thread: the failure is the future's outcome
                    self._resolve(exception=exc)
                    return
                raise
            finally:
                self._schedule = None

    def _await_start(self, deadline: float | None) -> bool:
        """Block until a deferred future is submitted; False if `deadline` comes first."""
        schedule = self._schedule
        if schedule is None:
            return True
        now = time.monotonic()
        if deadline is not None and schedule.start_at > deadline:
            time.sleep(max(0.0, deadline - now))
            return False
        time.sleep(max(0.0, schedule.start_at - now))
        self._fire()
        return True

    # --- used by runtimes ----------------------------------------------------------------

    def _mark_started(self) -> None:
        self._started = True

    @property
    def started(self) -> bool:
        """True once submitted. A runtime asks this before submitting a future with a graph
        that includes it (a dependant, a tail call): a deferred future is submitted first, when
        due, so that nothing starts it early."""
        schedule = self._schedule
        if schedule is not None and not self._started and schedule.firing != threading.get_ident():
            self._await_start(None)
        return self._started

    def _resolve(self, value: Any = None, exception: BaseException | None = None) -> None:
        self._started = True
        self._done = True
        self._value = value
        self._exception = exception


class _Schedule:
    """A deferred start: when it is due, which runtime submits it, and who is submitting it."""

    __slots__ = ("runtime", "start_at", "timer", "lock", "firing")

    def __init__(self, runtime: _rt.Runtime, start_at: float) -> None:
        self.runtime = runtime
        self.start_at = start_at  # time.monotonic()
        self.timer: threading.Timer | None = None
        self.lock = threading.Lock()
        self.firing: int | None = None  # the thread submitting it (its runtime asks .started)


def _is_duration(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _latest_pending_start(fut: Future[Any]) -> float | None:
    """The latest start time among deferred futures that `fut`'s unstarted graph includes."""
    latest: float | None = None
    stack, seen = list(dependencies(fut)), set()
    while stack:
        dep = stack.pop()
        if id(dep) in seen or dep._started:
            continue
        seen.add(id(dep))
        schedule = dep._schedule
        if schedule is not None:
            latest = schedule.start_at if latest is None else max(latest, schedule.start_at)
        else:
            stack.extend(dependencies(dep))
    return latest


def _start_all(runtime: _rt.Runtime, futures: list[Future[Any]]) -> None:
    now, immediate = time.monotonic(), []
    for fut in futures:
        due = _latest_pending_start(fut)
        if due is not None and due > now:
            fut._defer(runtime, due)
        else:
            immediate.append(fut)
    if immediate:
        runtime.start(immediate)


def _satisfied(futures: list[Future[Any]], return_when: RETURN_WHEN) -> bool:
    """Whether `Future.wait` may return on what is already known."""
    if all(f._done for f in futures):
        return True
    if return_when is RETURN_WHEN.FIRST_COMPLETED:
        return any(f._done for f in futures)
    if return_when is RETURN_WHEN.FIRST_FAILURE:
        return any(f._done and f._exception is not None for f in futures)
    return False


def _wait_scheduled(runtime: _rt.Runtime, futures: list[Future[Any]], timeout: float | None,
                    return_when: RETURN_WHEN) -> None:
    """`Future.wait` over futures some of which have deferred starts: submit each when due,
    meanwhile waiting on the others (which may satisfy `return_when` first)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    spent = False
    while True:
        deferred = [f for f in futures if f._schedule is not None]
        if not deferred or _satisfied(futures, return_when):
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return
        next_start = min(f._schedule.start_at for f in deferred if f._schedule is not None)
        until = next_start if deadline is None else min(next_start, deadline)
        spent = True
        if until > now:
            live = [f for f in futures if f._schedule is None and not f._done]
            if live and return_when is not RETURN_WHEN.ALL_COMPLETED:
                runtime.wait(live, until - now, return_when)
            else:
                time.sleep(until - now)
            continue
        for f in deferred:
            schedule = f._schedule
            if schedule is not None and schedule.start_at <= now:
                f._fire(raising=False)
    if not _satisfied(futures, return_when):
        runtime.wait(futures, _remaining(deadline) if spent else timeout, return_when)


def _as_future(obj: Any) -> Future[Any]:
    """Accept a Future or the coroutine returned by calling an async function."""
    if isinstance(obj, Future):
        return obj
    fut = future_of_coroutine(obj)
    if fut is None:
        raise SDKUsageError(f"expected a Future, got {type(obj).__name__}")
    if asyncio.iscoroutine(obj):
        obj.close()  # the Future runs instead of the coroutine: silence "never awaited"
    return fut


# Coroutines returned by calling async functions, mapped to the Future they run. A weak map:
# an awaited coroutine is garbage as soon as the await ends.
_coroutine_futures: Any = None


def _coro_map() -> Any:
    global _coroutine_futures
    if _coroutine_futures is None:
        import weakref

        _coroutine_futures = weakref.WeakKeyDictionary()
    return _coroutine_futures


def coroutine_for(fut: Future[T]) -> Any:
    """The coroutine an async function's call returns: awaiting it runs `fut`."""

    async def call() -> T:
        return await fut

    coro = call()
    _coro_map()[coro] = fut
    return coro


def future_of_coroutine(obj: Any) -> Future[Any] | None:
    """The Future behind the coroutine of an async function's call (or an asyncio Task running
    one); None for anything else."""
    if isinstance(obj, asyncio.Task):
        obj = obj.get_coro()
    if asyncio.iscoroutine(obj):
        try:
            return _coro_map().get(obj)  # type: ignore[no-any-return]
        except TypeError:
            return None
    return None


def unwrap_future(obj: Any) -> Any:
    """A Future for a Future or an engine coroutine; the object itself otherwise."""
    if isinstance(obj, Future):
        return obj
    fut = future_of_coroutine(obj)
    if fut is not None:
        if asyncio.iscoroutine(obj):
            obj.close()  # never awaited: we run the Future instead, so silence "never awaited"
        return fut
    return obj


def dependencies(fut: Future[Any]) -> Sequence[Future[Any]]:
    """Futures among `fut`'s arguments (direct, in a top-level list/tuple, or map items)."""
    found: list[Future[Any]] = []
    for value in list(fut.args) + [fut.kwargs[k] for k in sorted(fut.kwargs)]:
        if isinstance(value, Future):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, Future))
    return found
