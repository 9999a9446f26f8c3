"""`@cls()`: stateful functions, Tensorlake's class-based functions.

A class decorated with `@cls()` groups methods decorated with `@function()`. Each method is a
function of its own (named `Class.method`, with its own executors), and each executor of it
builds one instance of the class — runs the constructor once, before its first call, within
`init_timeout` seconds — and calls the method on that instance for every call it serves. So the
constructor is where expensive state goes (a model loaded into memory, a connection pool), paid
once per executor instead of once per call.

At call sites, as in Tensorlake, the class is instantiated with no arguments and the methods are
used like any function: `Model().embed("text")`, `Model().embed.future(...)`,
`Model().embed.map(texts)`. `@cls()` replaces the class's `__init__` with an empty one, so such
an instance costs nothing and holds nothing: it only names the methods. The user's constructor
(kept as `__engine_original_init__`) runs in executors only (`construct`).

The instance is not shared between calls that run at once unless the method's `concurrency`
lets one executor serve several calls; then they share it, as they share the process.
"""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from engine.errors import SDKUsageError
from engine.sdk.function import Function

T = TypeVar("T", bound=type)

ORIGINAL_INIT = "__engine_original_init__"


def _empty_init(self: Any) -> None:
    # Instances made at call sites (`Model().embed(...)`) are stand-ins: no user code runs.
    pass


class _ClassDecorator:
    def __init__(self, init_timeout: float | None) -> None:
        self.init_timeout = init_timeout

    def __call__(self, klass: T) -> T:
        if not inspect.isclass(klass):
            raise SDKUsageError(f"@cls() decorates a class, not {klass!r}")
        name = klass.__qualname__
        if "<locals>" in name:
            raise SDKUsageError(
                f"@cls() on {name}: classes must be defined at module level so that executors "
                "can import them")
        if ORIGINAL_INIT in vars(klass):
            raise SDKUsageError(f"@cls() applied twice to {name}")
        original = klass.__init__
        _check_constructor(name, original)
        methods = [v for v in vars(klass).values() if isinstance(v, Function)]
        if not methods:
            raise SDKUsageError(f"@cls() on {name}: decorate at least one method with @function()")
        for fn in methods:
            if fn.is_application:
                raise SDKUsageError(
                    f"{fn.name}: an application entry point must be a module-level function; "
                    "call the method from one")
            params = list(inspect.signature(fn.fn).parameters.values())
            if not params or params[0].kind not in (params[0].POSITIONAL_ONLY,
                                                     params[0].POSITIONAL_OR_KEYWORD):
                raise SDKUsageError(f"{fn.name}: a method of a @cls() class takes self first")
            # The constructor's timeout defaults to the method's timeout, as in Tensorlake.
            timeout = fn.config.timeout if self.init_timeout is None else self.init_timeout
            fn.config = fn.config.replace(init_timeout=timeout)
            fn.cls = klass
        setattr(klass, ORIGINAL_INIT, original)
        klass.__init__ = _empty_init  # type: ignore[method-assign,misc]
        return klass


def _check_constructor(name: str, init: Any) -> None:
    if init is object.__init__:
        return
    try:
        params = list(inspect.signature(init).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise SDKUsageError(
            f"{name}.__init__ must take only self: executors build the instance with no "
            "arguments (read settings from the environment or engine.yaml secrets instead)")


def cls(init_timeout: float | None = None) -> _ClassDecorator:
    """Make a class stateful: each executor of each of its `@function()` methods builds one
    instance — runs `__init__` once, before its first call — and serves every call with it.

    `init_timeout` is the constructor's limit in seconds (default: the method's `timeout`); the
    first call's own `timeout` starts after it. A constructor that raises or overruns fails the
    call that was waiting for it (`FunctionError` or `FunctionTimeout` naming the class, with
    the constructor's traceback) and the executor is replaced: a retry starts a fresh one.
    Raises `SDKUsageError` for invalid values, for `@cls` without parentheses, and for a
    constructor that takes arguments.
    """
    if inspect.isclass(init_timeout):
        raise SDKUsageError(f"write @cls() with parentheses above class {init_timeout.__qualname__}")
    if init_timeout is not None:
        from engine.sdk.retries import check_number

        check_number("@cls()", "init_timeout", init_timeout, above=0, maximum=7 * 24 * 3600)
    return _ClassDecorator(init_timeout)


def construct(klass: type) -> Any:
    """An instance of a `@cls()` class with its user constructor run (in an executor)."""
    instance = klass()  # the empty __init__
    getattr(klass, ORIGINAL_INIT)(instance)
    return instance


__all__ = ["cls", "construct"]
