"""Values that do not pickle, or do not unpickle where they arrive: each is a typed error
(`SerializationError`, `DeserializationError`) that user code can catch and the run reports."""

from __future__ import annotations

import threading
from typing import Any

from engine import DeserializationError, SerializationError, application, function


class Fragile:
    """Pickles fine; unpickling it raises (as a class missing on the other side would)."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> None:
    raise ImportError("no module named 'elsewhere'")


@function()
def echo(value: Any) -> Any:
    return value


@function()
def fragile(x: int) -> Any:
    return Fragile()


@application()
@function()
def returns_lock(x: int) -> Any:
    return threading.Lock()


@application()
@function()
def values_app(x: int) -> list[str]:
    seen = []
    try:
        echo(threading.Lock())
    except SerializationError as exc:
        seen.append(f"SerializationError: {'cannot be serialised' in str(exc)}")
    try:
        fragile(x)
    except DeserializationError as exc:
        seen.append(f"DeserializationError: {'elsewhere' in str(exc)}")
    return seen
