"""`@function()` and `@application()`: what a user decorates.

A decorated function becomes a `Function`. Calling it blocks on a remote call (inside a running
request); `.future(...)` describes a call without starting it; `.map`/`.reduce` fan out over a
list. Each function runs in executors of its own, with the resources and retry policy given here
— or overridden per function in `engine.yaml`.

A function's identity is its `__qualname__`, without the module: names are one namespace per
application, as in Tensorlake. Decorating registers the function so that an executor which
imports the user's module can find it by name.

`@application()` and `@function()` stack in either order, as in Tensorlake. `@application()`
below `@function()` leaves a `PendingApplication` that `@function()` turns into the `Function`;
one that never gets `@function()` is refused when it is loaded or run.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, get_args, overload

from engine.errors import SDKUsageError
from engine.sdk.future import MISSING, Future, coroutine_for, unwrap_future
from engine.sdk.retries import Retries, check_int, check_number

P = ParamSpec("P")
Q = ParamSpec("Q")
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
    # Where its executors run: the swarm backend places them on nodes labelled
    # `region=<region>`; None takes the application's.
    region: str | None = None
    # Seconds the constructor of a `@cls()` class may take on an executor, before its first
    # call; set by `@cls()` on each of its methods (None: not a method).
    init_timeout: float | None = None

    def __post_init__(self) -> None:
        where = "@function()"
        check_region(where, self.region)
        if self.init_timeout is not None:
            check_number("@cls()", "init_timeout", self.init_timeout, above=0, maximum=7 * 24 * 3600)
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


# Labels are the only placement the engine has: a region is a node label's value.
_REGION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# What `@application(allow=...)` may grant, with Tensorlake's names. "unauthenticated_requests":
# with a server token, anyone may start the application's runs and fetch their output.
ApplicationCapability = Literal["unauthenticated_requests"]
CAPABILITIES: tuple[str, ...] = get_args(ApplicationCapability)


def check_region(where: str, region: object) -> None:
    if region is not None and (not isinstance(region, str) or not _REGION.fullmatch(region)):
        raise SDKUsageError(
            f"{where}: region must be a name like 'us-east-1' (letters, digits, '.', '_', '-'), "
            f"got {region!r}"
        )


def region_constraint(region: str) -> str:
    """The swarm placement constraint a region stands for."""
    return f"node.labels.region=={region}"


#: What a run does once it is going to fail (a call failed after its retries, and the failure
#: reached the root): "finish" lets every call that does not depend on the failed one run to
#: completion, checkpointed, and fails the run when nothing else can progress, so that a resume
#: re-runs only the failed branch; "cancel" stops every call at once, to stop spending.
ON_FAILURE = ("finish", "cancel")


@dataclass(frozen=True)
class ApplicationConfig:
    """Settings of an application entry point.

    `tags` are recorded with the application; `retries` is the default policy of every function
    that sets none; `region` the default region of its functions; `allow` lists Tensorlake
    capabilities (`"unauthenticated_requests"`: the server lets anyone start its runs and read
    their output, token or not); `on_failure` says what happens to the rest of a run once a
    call failed for good and took the run down with it (`ON_FAILURE`); `max_calls`, `max_depth`
    and `max_duration` are the default budget of each of its runs (docs/configuration.md#budgets;
    None is no limit); `max_concurrent_calls` caps the calls of all its runs together that
    execute at once (None: no cap; docs/server.md, "Fair share between runs").
    """

    tags: dict[str, str] = field(default_factory=dict)
    retries: Retries = field(default_factory=Retries)
    region: str | None = None
    allow: list[ApplicationCapability] = field(default_factory=list)
    on_failure: str = "finish"
    max_calls: int | None = None
    max_depth: int | None = None
    max_duration: float | None = None
    max_concurrent_calls: int | None = None

    def __post_init__(self) -> None:
        where = "@application()"
        if not isinstance(self.tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.tags.items()
        ):
            raise SDKUsageError(f"{where}: tags must be a dict of strings to strings, got {self.tags!r}")
        if not isinstance(self.retries, Retries):
            raise SDKUsageError(f"{where}: retries must be Retries(...), got {self.retries!r}")
        check_region(where, self.region)
        if not isinstance(self.allow, (list, tuple)) or any(a not in CAPABILITIES for a in self.allow):
            raise SDKUsageError(
                f"{where}: allow must be a list of {', '.join(map(repr, CAPABILITIES))}, got {self.allow!r}"
            )
        if self.on_failure not in ON_FAILURE:
            raise SDKUsageError(
                f"{where}: on_failure must be one of {', '.join(map(repr, ON_FAILURE))}, got {self.on_failure!r}")
        for name, least in (("max_calls", 1), ("max_depth", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise SDKUsageError(f"{where}: {name} must be a whole number of at least {least}, got {value!r}")
        duration = self.max_duration
        if duration is not None and (not isinstance(duration, (int, float)) or isinstance(duration, bool)
                                     or duration <= 0):
            raise SDKUsageError(f"{where}: max_duration must be a number of seconds above 0, got {duration!r}")
        cap = self.max_concurrent_calls
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise SDKUsageError(f"{where}: max_concurrent_calls must be an int >= 1 or None, got {cap!r}")
        # Copies: the decorator's arguments stay the caller's to change.
        object.__setattr__(self, "tags", dict(self.tags))
        object.__setattr__(self, "allow", list(self.allow))


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
        `items` is any iterable (of values and/or futures: a list, tuple, range, generator, …),
        read at once, or a future of a list (or tuple). Raises `SDKUsageError` otherwise."""
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
    # As in Tensorlake: a future (of a list), or any iterable — read once, here, into a list.
    items = unwrap_future(items)
    if isinstance(items, Future):
        return items
    if not isinstance(items, Iterable):
        raise SDKUsageError(
            f"map/reduce items must be an iterable or a Future of a list, got {type(items).__name__}"
        )
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
        # The `@cls()` class this is a method of (`engine.sdk.stateful`); None for a function.
        self.cls: type | None = None

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

    @overload
    def __get__(self, instance: None, owner: type) -> Function[P, R]: ...

    @overload
    def __get__(self: Function[Concatenate[Any, Q], R], instance: object, owner: type) -> Function[Q, R]: ...

    def __get__(self, instance: object, owner: type) -> Any:
        # A method of a `@cls()` class, reached through an instance (`Model().embed`): the same
        # Function, not bound. As in Tensorlake, instances made at call sites are empty
        # stand-ins; the executor calls the method on its own instance (`engine.sdk.stateful`).
        return self

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
    region: str | None = None,
) -> Callable[[Callable[P, R]], Function[P, R]]:
    """Make a function run in its own executor (a container on the docker backend).

    `cpu` cores, `memory` and `ephemeral_disk` in GB, `timeout` seconds per call, `retries` per
    call, `concurrency` calls served at once by one executor, `min_containers`/`max_containers`/
    `warm_containers` bound its executor pool. `region` places its executors on swarm nodes
    labelled `region=<region>` (other backends run everything on one machine and ignore it).
    Raises `SDKUsageError` for invalid values.
    """
    config = FunctionConfig(
        description=description, cpu=cpu, memory=memory, ephemeral_disk=ephemeral_disk,
        gpu=gpu, timeout=timeout, image=image, secrets=list(secrets or []),
        retries=retries, concurrency=concurrency, min_containers=min_containers,
        max_containers=max_containers, warm_containers=warm_containers, region=region,
    )

    def decorate(fn: Callable[P, R]) -> Function[P, R]:
        if isinstance(fn, Function):
            raise SDKUsageError(f"@function() applied twice to {fn.name}")
        pending: ApplicationConfig | None = None
        if isinstance(fn, PendingApplication):  # @application() was below: it comes along
            pending = fn.config
            fn = fn.fn
        if not callable(fn) or not hasattr(fn, "__qualname__"):
            raise SDKUsageError("@function() decorates a function defined with def or async def")
        if "<locals>" in fn.__qualname__:
            raise SDKUsageError(
                f"@function() on {fn.__qualname__}: functions must be defined at module level so "
                "that executors can import them"
            )
        wrapped = Function(fn, config)
        wrapped.application = pending
        _REGISTRY.setdefault(wrapped.name, []).append(wrapped)
        return wrapped

    return decorate


class PendingApplication(Generic[P, R]):
    """What `@application()` returns for a plain function: `@function()` above it makes the
    `Function`. Alone it is not runnable; loading or running it says what is missing."""

    def __init__(self, fn: Callable[P, R], config: ApplicationConfig) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.config = config

    def __repr__(self) -> str:
        return f"<@application() {getattr(self.fn, '__qualname__', self.fn)!r} without @function()>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        raise SDKUsageError(f"{self!r}: add @function() to it (above or below @application())")


class _ApplicationDecorator:
    def __init__(self, config: ApplicationConfig) -> None:
        self.config = config

    @overload
    def __call__(self, fn: Function[P, R]) -> Function[P, R]: ...  # type: ignore[overload-overlap]

    @overload
    def __call__(self, fn: Callable[P, R]) -> PendingApplication[P, R]: ...

    def __call__(self, fn: Any) -> Any:
        target = fn.fn if isinstance(fn, Function) else fn
        if isinstance(fn, PendingApplication) or (isinstance(fn, Function) and fn.is_application):
            raise SDKUsageError(f"@application() applied twice to {target.__qualname__}")
        if not callable(target) or not hasattr(target, "__qualname__"):
            raise SDKUsageError("@application() decorates a function defined with def or async def")
        name = target.__qualname__
        for param in inspect.signature(target).parameters.values():
            if param.kind not in (param.POSITIONAL_OR_KEYWORD,):
                raise SDKUsageError(
                    f"application {name}: parameter {param.name!r} must be a plain "
                    "positional-or-keyword parameter (no *args, **kwargs or keyword-only)"
                )
        if isinstance(fn, Function):
            fn.application = self.config
            return fn
        return PendingApplication(fn, self.config)


def application(
    tags: dict[str, str] | None = None,
    retries: Retries | None = None,
    region: str | None = None,
    allow: list[ApplicationCapability] | None = None,
    *,
    on_failure: str = "finish",
    max_calls: int | None = None,
    max_depth: int | None = None,
    max_duration: float | None = None,
    max_concurrent_calls: int | None = None,
) -> _ApplicationDecorator:
    """Mark a function as an application entry point; stack it with `@function()`, in either
    order.

    Its input is JSON validated against its type hints, except a parameter annotated `File` (or
    `HttpBody`), which takes a raw body; its output must be JSON-serialisable, or a `File`.
    `tags` (strings to strings) are recorded with the application. `retries` is the default
    policy of every function that sets none; `region` the default region of its functions (see
    `function(region=)`). `allow` takes Tensorlake's capabilities: `["unauthenticated_requests"]`
    lets a server that has a token start this application's runs, and answer their output, for
    callers without it. `on_failure` is "finish" (calls that do not depend on a call that failed
    for good run to completion, so a resume re-runs only the failed branch) or "cancel" (stop every
    call at once). `max_calls`, `max_depth` and `max_duration` (seconds) are the default budget of
    each run, which the engine enforces: a run that reaches one fails with `BudgetExceeded`
    (docs/configuration.md#budgets); each submission may change them. `max_concurrent_calls`
    caps how many calls of this application's runs, all together, execute at once. engine.yaml's
    `on_failure`, `budget:` and `max_concurrent_calls` override these. Raises `SDKUsageError`
    for invalid values.
    """
    config = ApplicationConfig(
        tags={} if tags is None else tags,
        retries=Retries() if retries is None else retries,
        region=region,
        allow=[] if allow is None else allow,
        on_failure=on_failure,
        max_calls=max_calls,
        max_depth=max_depth,
        max_duration=max_duration,
        max_concurrent_calls=max_concurrent_calls,
    )
    return _ApplicationDecorator(config)
