"""`@cls()` classes: a constructor that counts itself, one that raises, one that hangs.

Each constructor records `init|<Class>|<pid>` in the side-effects file named by ENGINE_TEST_LOG
(a constructor takes no arguments), and each call records `call|<Class>|<pid>|<instance id>`,
so that tests count constructor runs per executor across many calls. In containers, which have
no such file, the calls' results and logs say the same: the executor (host and pid), the
instance, and how many constructors ran in that process.
"""

from __future__ import annotations

import os
import socket
import time

from sidefx import record

from engine import Retries, application, cls, function

# Constructors run in this process, by class.
INITS: dict[str, int] = {}


def note(tag: str, *fields: object) -> None:
    if "ENGINE_TEST_LOG" in os.environ:
        record(None, tag, *fields)


def executor() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def built(name: str) -> None:
    INITS[name] = INITS.get(name, 0) + 1
    note("init", name, os.getpid())
    print(f"{name} built on {executor()}")


@cls()
class Counter:
    def __init__(self) -> None:
        built("Counter")
        self.calls = 0
        self.offset = 100

    @function()
    def add(self, x: int) -> tuple[int, str, int, int, int]:
        self.calls += 1
        note("call", "Counter", os.getpid(), id(self))
        return x + self.offset, executor(), id(self), self.calls, INITS["Counter"]

    @function(concurrency=4)
    def shared(self, x: int) -> tuple[str, int, int]:
        time.sleep(0.2)
        return executor(), id(self), INITS["Counter"]


@application()
@function()
def many(n: int) -> list[tuple[int, str, int, int, int]]:
    return Counter().add.map(range(n))


@application()
@function()
def forms(x: int) -> list[int]:
    counter = Counter()
    blocking = counter.add(x)[0]
    future = counter.add.future(x + 1).result()[0]
    mapped = [r[0] for r in Counter().add.map([x + 2, x + 3])]
    return [blocking, future, *mapped]


@application()
@function()
def concurrent(n: int) -> list[tuple[str, int, int]]:
    return Counter().shared.map(range(n))


@cls()
class Broken:
    def __init__(self) -> None:
        built("Broken")
        raise ValueError(f"no weights on {executor()}")

    @function(retries=Retries(max_retries=2, initial_delay=0))
    def score(self, x: int) -> int:
        return x


@application()
@function()
def broken(x: int) -> int:
    return Broken().score(x)


@cls(init_timeout=1)
class Slow:
    def __init__(self) -> None:
        built("Slow")
        time.sleep(30)

    @function(timeout=5)
    def score(self, x: int) -> int:
        return x


@application()
@function()
def slow(x: int) -> int:
    return Slow().score(x)
