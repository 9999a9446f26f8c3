"""`Future`: a call that has been described, and maybe started, but whose value may not exist yet.

`fn.future(*args)` only records the call. It starts when something needs it: `.run()`,
`.result()`, `await`, `Future.wait`, being passed to a started future, or being *returned* from a
function — a tail call, which hands the caller's result over to the future and frees the caller
at once.

Futures passed as arguments are dependencies: the callee starts when they have finished and
receives their values. Futures may be passed directly, inside a top-level list or tuple argument,
as `map`/`reduce` items, or as `reduce`'s initial value. A future cannot be pickled into any other
value (that would hide a dependency from the scheduler).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from engine.errors import SDKUsageError
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
                 "_exception", "__weakref__")

    def __init__(
        self, kind: str, function: Function[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.kind = kind  # "call" | "map" | "reduce"
        self.function = function
        self.args = args
        self.kwargs = kwargs
        ctx = _rt.current_context()
        self._id = ctx.new_child_id(kind, function.name) if ctx else _rt.detached_id()
        self._started = False
        self._done = False
        self._value: Any = None
        self._exception: BaseException | None = None

    # --- identity ------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Deterministic call ID (stable across re-runs of the call that created it)."""
        return self._id

    def __repr__(self) -> str:
        state = "done" if self._done else "started" if self._started else "not started"
        return f"<Future {self.kind} {self.function.name} {self._id} {state}>"

    def __reduce__(self) -> Any:
        raise SDKUsageError(
            f"A Future ({self.function.name}) cannot be stored inside another value: pass it "
            "directly as an argument, return it as a tail call, or pass its .result()."
        )

    # --- starting and waiting ------------------------------------------------------------

    def run(self) -> Future[T]:
        """Start the call now (with any unstarted futures it depends on). Returns self."""
        if not self._started:
            _rt.require_context("Future.run()").runtime.start([self])
        return self

    def result(self, timeout: float | None = None) -> T:
        """Start the call if needed and block until it finishes.

        Returns its value, or raises its failure (`FunctionError`, `FunctionTimeout`,
        `OutOfMemory`, `RequestError`, …). Raises the builtin `TimeoutError` when `timeout`
        seconds pass first; the call keeps running.
        """
        if not self._done:
            rt = _rt.require_context("Future.result()").runtime
            if not self._started:
                rt.start([self])
            rt.wait([self], timeout, RETURN_WHEN.ALL_COMPLETED)
        if not self._done:
            raise TimeoutError(f"{self.function.name} did not finish within {timeout} s")
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
            if not self._started:
                rt.start([self])
            wait = asyncio.get_running_loop().run_in_executor(
                None, rt.wait, [self], None, RETURN_WHEN.ALL_COMPLETED
            )
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
        done future's `.exception` (or call `.result()`).
        """
        futures = [_as_future(f) for f in futures]
        if not all(f._done for f in futures):
            rt = _rt.require_context("Future.wait()").runtime
            unstarted = [f for f in futures if not f._started]
            if unstarted:
                rt.start(unstarted)
            rt.wait(futures, timeout, return_when)
        done = [f for f in futures if f._done]
        return done, [f for f in futures if not f._done]

    # --- used by runtimes ----------------------------------------------------------------

    def _mark_started(self) -> None:
        self._started = True

    @property
    def started(self) -> bool:
        return self._started

    def _resolve(self, value: Any = None, exception: BaseException | None = None) -> None:
        self._started = True
        self._done = True
        self._value = value
        self._exception = exception


def _as_future(obj: Any) -> Future[Any]:
    """Accept a Future or the coroutine returned by calling an async function."""
    if isinstance(obj, Future):
        return obj
    fut = future_of_coroutine(obj)
    if fut is None:
        raise SDKUsageError(f"expected a Future, got {type(obj).__name__}")
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
