"""`@cls()` without any runtime: what decorating a class does, the call-site forms (Tensorlake's:
an instance made with no arguments, its methods used like functions) and the usage errors."""

from __future__ import annotations

import pickle

import pytest

from engine import Function, Future, SDKUsageError, cls, function
from engine.sdk.function import registered
from engine.sdk.stateful import ORIGINAL_INIT, construct

BUILT: list[str] = []


@cls(init_timeout=7)
class Model:
    def __init__(self) -> None:
        BUILT.append("Model")
        self.weights = 3

    @function(timeout=20)
    def score(self, x: int) -> int:
        return x * self.weights

    @function()
    async def ascore(self, x: int) -> int:
        return x * self.weights

    def helper(self) -> int:  # not a function: stays a plain method
        return self.weights


@cls()
class Defaults:
    @function(timeout=42)
    def run(self, x: int) -> int:
        return x


def test_methods_become_functions_named_after_their_class() -> None:
    assert isinstance(Model.score, Function)
    assert Model.score.name == "Model.score"
    assert registered("Model.score", __name__) is Model.score
    assert Model.score.cls is Model and Defaults.run.cls is Defaults
    assert Model.score.config.init_timeout == 7 and Model.score.config.timeout == 20
    # Without init_timeout the constructor gets the method's timeout, as in Tensorlake.
    assert Defaults.run.config.init_timeout == 42


def test_call_sites_never_run_the_constructor() -> None:
    BUILT.clear()
    model = Model()
    assert BUILT == [] and not hasattr(model, "weights")
    assert model.score is Model.score  # the method is the Function itself, not bound


def test_call_site_forms_make_the_same_futures_as_functions() -> None:
    fut = Model().score.future(2)
    assert isinstance(fut, Future) and fut.function is Model.score
    assert fut.kind == "call" and fut.args == (2,) and fut.kwargs == {}  # no self
    mapped = Model().score.future.map([1, 2, 3])
    assert mapped.kind == "map" and mapped.args == ([1, 2, 3],)
    reduced = Model().score.future.reduce([1, 2], 0)
    assert reduced.kind == "reduce" and reduced.args == ([1, 2], 0)


def test_blocking_calls_need_a_running_request() -> None:
    with pytest.raises(SDKUsageError, match="needs a running request"):
        Model().score(1)
    with pytest.raises(SDKUsageError, match="needs a running request"):
        Model().score.map([1, 2])
    coroutine = Model().ascore(1)  # an async method gives a coroutine, as a function does
    with pytest.raises(SDKUsageError, match="needs a running request"):
        coroutine.send(None)


def test_construct_runs_the_users_constructor_once() -> None:
    BUILT.clear()
    instance = construct(Model)
    assert BUILT == ["Model"] and instance.weights == 3
    assert Model.score.fn(instance, 2) == 6 and instance.helper() == 3
    assert getattr(Model, ORIGINAL_INIT) is not Model.__init__


def test_methods_pickle_by_name() -> None:
    assert pickle.loads(pickle.dumps(Model.score)) is Model.score


def test_usage_errors() -> None:
    with pytest.raises(SDKUsageError, match=r"@cls\(\) with parentheses"):
        cls(Model)  # type: ignore[arg-type]  # @cls without ()
    with pytest.raises(SDKUsageError, match="decorates a class"):
        cls()(len)  # type: ignore[type-var]
    with pytest.raises(SDKUsageError, match="init_timeout"):
        cls(init_timeout=0)
    with pytest.raises(SDKUsageError, match="module level"):
        @cls()
        class Local:
            pass
    with pytest.raises(SDKUsageError, match="applied twice"):
        cls()(Model)


class WithArgs:
    def __init__(self, path: str) -> None:
        self.path = path

    @function()
    def run(self) -> str:
        return self.path


class NoMethods:
    pass


def test_a_constructor_takes_only_self_and_a_class_needs_a_function() -> None:
    with pytest.raises(SDKUsageError, match=r"WithArgs.__init__ must take only self"):
        cls()(WithArgs)
    with pytest.raises(SDKUsageError, match="at least one method"):
        cls()(NoMethods)
