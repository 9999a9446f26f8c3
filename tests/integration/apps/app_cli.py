"""Small applications for the command-line tests."""

from __future__ import annotations

import os

from pydantic import BaseModel

from engine import application, function


class Person(BaseModel):
    name: str
    age: int


class Tally(BaseModel):
    """A result that notes each repr taken of it in a file named by $APP_CLI_REPRS."""
    items: list[int]

    def __repr__(self) -> str:
        if path := os.environ.get("APP_CLI_REPRS"):
            with open(path, "a") as f:
                f.write(f"{os.getpid()}\n")
        return super().__repr__()


@application()
@function()
def tally(n: int) -> Tally:
    return Tally(items=list(range(n)))


@function()
def shout(text: str) -> str:
    print(f"shouting {text!r}")
    return text.upper() + "!"


@application()
@function()
def hello(name: str) -> str:
    print(f"hello was asked to greet {name}")
    return shout.future(f"hello {name}")


@application()
@function()
def greet(name: str, times: int = 1) -> dict:
    return {"greeting": " ".join([f"hi {name}"] * times)}


@application()
@function()
def describe(person: Person) -> str:
    return f"{person.name} is {person.age}"


@function()
def explode(reason: str) -> str:
    raise ValueError(f"exploded: {reason}")


@application()
@function()
def boom(reason: str) -> str:
    return explode.future(reason)


@function()
def not_an_app(x: int) -> int:
    return x


def undecorated(x: int) -> int:
    return x
