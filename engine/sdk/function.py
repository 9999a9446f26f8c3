"""`@function()` and `@application()`: what a user decorates.

A decorated function becomes a `Function`. Calling it blocks on a remote call (inside a running
request); `.future(...)` describes a call without starting it; `.map`/`.reduce` fan out over a
list. Each function runs in executors of its own, with the resources and retry policy given here
— or overridden per function in `engine.yaml`.

A function's identity is its `__qualname__`, without the module: names are one namespace per
application, as in Tensorlake. Decorating registers the function so that an executor which
imports the user's module can find it by name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar

from engine.errors import SDKUsageError
from engine.sdk.future import MISSING, Future, coroutine_for, unwrap_future
from engine.sdk.retries import Retries, check_int, check_number

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class FunctionConfig:
    """Resources and policies of one function. Memory and disk in GB, timeout in seconds."""

    description: str = ""
    cpu: float = 1.0
    memory: float = 1.0
    ephemeral_disk: float = 10.0
    gpu: str | list[str] | None = None
    timeout: float = 300
    image: Any = None
    secrets: list[str] = field(default_factory=list)
    retries: Retries | None = None
    concurrency: int = 1
    min_containers: int | None = None
    max_containers: int | None = None
    warm_containers: int | None = None

    def __post_init__(self) -> None:
        where = "@function()"
        if not isinstance(self.description, str):
            raise SDKUsageError(f"{where}: description must be a string")
        check_number(where, "cpu", self.cpu, above=0)
        check_number(where, "memory", self.memory, above=0)
        check_number(where, "ephemeral_disk", self.ephemeral_disk, above=0)
        check_number(where, "timeout", self.timeout, above=0, maximum=7 * 24 * 3600)
        check_int(where, "concurrency", self.concurrency, 1, 1000)
        for name, low in (("min_containers", 0), ("max_containers", 1), ("warm_containers", 0)):
            value = getattr(self, name)
            if value is not None:
                check_int(where, name, value, low)
        if self.retries is not None and not isinstance(self.retries, Retries):
            raise SDKUsageError(f"{where}: retries must be Retries(...), got {self.retries!r}")
        if not isinstance(self.secrets, list) or not all(isinstance(x, str) for x in self.secrets):
            raise SDKUsageError(f"{where}: secrets must be a list of environment variable names")
        if self.gpu is not None and not isinstance(self.gpu, (str, list)):
            raise SDKUsageError(f"{where}: gpu must be a string like 'A100' or a list of them")
        if self.image is not None and not _is_image(self.image):
            raise SDKUsageError(f"{where}: image must be an engine.Image, got {type(self.image).__name__}")

    def replace(self, **changes: Any) -> FunctionConfig:
        return dataclasses.replace(self, **changes)


def _is_image(value: Any) -> bool:
    from engine.sdk.image import Image

    return isinstance(value, Image)


@dataclass(frozen=True)
class ApplicationConfig:
    """Settings of an application entry point."""

    tags: dict[str, str] = field(default_factory=dict)
    retries: Retries = field(default_factory=Retries)
    region: str | None = None
    allow: list[str] | None = None


# name -> every Function defined under that name, in definition order.
_REGISTRY: dict[str, list[Function[..., Any]]] = {}


def registered(name: str, module: str | None = None) -> Function[..., Any] | None:
    """The function named `name`, preferring one defined in `module`; the latest otherwise."""
    found = _REGISTRY.get(name)
    if not found:
        return None
    if module is not None:
        for fn in reversed(found):
            if fn.module == module:
                return fn
    return found[-1]


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


class FutureFactory(Generic[P, R]):
    """`fn.future`: `fn.future(*args)`, `fn.future.map(items)`, `fn.future.reduce(items, init)`."""

    def __init__(self, fn: Function[P, R]) -> None:
        self._fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Future[R]:
        return Future(
            "call",
            self._fn,
            tuple(_unwrap_arg(a) for a in args),
            {k: _unwrap_arg(v) for k, v in kwargs.items()},
        )

    def map(self, items: Iterable[Any] | Future[Any]) -> Future[list[R]]:
        """A future of `[fn(x) for x in items]`, every call in parallel, results in order.
        `items` is a list (of values and/or futures) or a future of a list."""
        return Future("map", self._fn, (_items_arg(items),), {})

    def reduce(self, items: Iterable[Any] | Future[Any], initial: Any = MISSING, /) -> Future[R]:
        """A future of `fn(...fn(fn(initial, x0), x1)..., xn)`: a left fold, one call per item.
        Without `initial` the first item starts the fold; one element is returned as is."""
        args: tuple[Any, ...] = (_items_arg(items),)
        if initial is not MISSING:
            args += (unwrap_future(initial),)
        return Future("reduce", self._fn, args, {})

    def __reduce__(self) -> Any:
        raise SDKUsageError(f"{self._fn.name}.future cannot be pickled")


def _unwrap_arg(value: Any) -> Any:
    if isinstance(value, list):
        return [unwrap_future(v) for v in value]
    if isinstance(value, tuple):
        return tuple(unwrap_future(v) for v in value)
    return unwrap_future(value)


def _items_arg(items: Any) -> Any:
    items = unwrap_future(items)
    if isinstance(items, Future):
        return items
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise SDKUsageError(f"map/reduce items must be a list or a Future of a list, got {type(items).__name__}")
    return [unwrap_future(v) for v in items]


class Function(Generic[P, R]):
    """A decorated function. Call it, or use `.future`, `.map`, `.reduce`."""

    def __init__(self, fn: Callable[P, R], config: FunctionConfig) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name: str = fn.__qualname__
        self.module: str = fn.__module__
        self.config = config
        self.application: ApplicationConfig | None = None
        self.is_async = inspect.iscoroutinefunction(fn)
        self.future: FutureFactory[P, R] = FutureFactory(self)

    def __repr__(self) -> str:
        return f"<engine.Function {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function as a call and wait for it (inside a running request).

        For an `async def` function this returns a coroutine: `await` it (or gather several).
        """
        fut = self.future(*args, **kwargs)
        if self.is_async:
            return coroutine_for(fut)  # type: ignore[return-value]
        return fut.result()

    def map(self, items: Iterable[Any] | Future[Any]) -> list[R]:
        """`[fn(x) for x in items]`, all in parallel; blocks (a coroutine for async functions)."""
        fut = self.future.map(items)
        return coroutine_for(fut) if self.is_async else fut.result()  # type: ignore[return-value]

    def reduce(self, items: Iterable[Any] | Future[Any], initial: Any = MISSING, /) -> R:
        """A left fold of `fn` over `items`; blocks (a coroutine for async functions)."""
        fut = self.future.reduce(items, initial)
        return coroutine_for(fut) if self.is_async else fut.result()  # type: ignore[return-value]

    def __reduce__(self) -> Any:
        # Pickled by name: an executor finds the same function in its own registry.
        return (_lookup, (self.name, self.module))

    @property
    def is_application(self) -> bool:
        return self.application is not None


def _lookup(name: str, module: str) -> Function[..., Any]:
    fn = registered(name, module)
    if fn is None:
        raise SDKUsageError(f"function {name!r} is not defined in this process")
    return fn


def function(
    description: str = "",
    cpu: float = 1.0,
    memory: float = 1.0,
    ephemeral_disk: float = 10.0,
    gpu: str | list[str] | None = None,
    timeout: float = 300,
    image: Any = None,
    secrets: list[str] | None = None,
    retries: Retries | None = None,
    concurrency: int = 1,
    min_containers: int | None = None,
    max_containers: int | None = None,
    warm_containers: int | None = None,
) -> Callable[[Callable[P, R]], Function[P, R]]:
    """Make a function run in its own executor (a container on the docker backend).

    `cpu` cores, `memory` and `ephemeral_disk` in GB, `timeout` seconds per call, `retries` per
    call, `concurrency` calls served at once by one executor, `min_containers`/`max_containers`/
    `warm_containers` bound its executor pool. Raises `SDKUsageError` for invalid values.
    """
    config = FunctionConfig(
        description=description, cpu=cpu, memory=memory, ephemeral_disk=ephemeral_disk,
        gpu=gpu, timeout=timeout, image=image, secrets=list(secrets or []),
        retries=retries, concurrency=concurrency, min_containers=min_containers,
        max_containers=max_containers, warm_containers=warm_containers,
    )

    def decorate(fn: Callable[P, R]) -> Function[P, R]:
        if isinstance(fn, Function):
            raise SDKUsageError(f"@function() applied twice to {fn.name}")
        if not callable(fn) or not hasattr(fn, "__qualname__"):
            raise SDKUsageError("@function() decorates a function defined with def or async def")
        if "<locals>" in fn.__qualname__:
            raise SDKUsageError(
                f"@function() on {fn.__qualname__}: functions must be defined at module level so "
                "that executors can import them"
            )
        wrapped = Function(fn, config)
        _REGISTRY.setdefault(wrapped.name, []).append(wrapped)
        return wrapped

    return decorate


def application(
    tags: dict[str, str] | None = None,
    retries: Retries | None = None,
    region: str | None = None,
    allow: list[str] | None = None,
) -> Callable[[Function[P, R]], Function[P, R]]:
    """Mark a `@function()` as an application entry point (put it above `@function()`).

    Its input is JSON validated against its type hints; its output must be JSON-serialisable.
    `retries` is the default policy of every function that sets none.
    """

    def decorate(fn: Function[P, R]) -> Function[P, R]:
        if not isinstance(fn, Function):
            raise SDKUsageError(
                "@application() must be placed above @function(): "
                "@application()\\n@function()\\ndef main(...): ..."
            )
        for param in inspect.signature(fn.fn).parameters.values():
            if param.kind not in (param.POSITIONAL_OR_KEYWORD,):
                raise SDKUsageError(
                    f"application {fn.name}: parameter {param.name!r} must be a plain "
                    "positional-or-keyword parameter (no *args, **kwargs or keyword-only)"
                )
        if retries is not None and not isinstance(retries, Retries):
            raise SDKUsageError(f"@application(): retries must be Retries(...), got {retries!r}")
        fn.application = ApplicationConfig(
            tags=dict(tags or {}), retries=retries or Retries(), region=region, allow=allow
        )
        return fn

    return decorate
