"""`HttpBody` and `Headers`: the raw HTTP request as Tensorlake's SDK names it.

A parameter annotated `HttpBody` receives the body of the request that started the run,
whatever its content type (JSON included), and the content type the client sent (None when it
sent none). `Headers` is Tensorlake's immutable, case-insensitive header mapping.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from engine.sdk.file import File, TypedBytes


class HttpBody(TypedBytes):
    """The raw body of the HTTP request that started a run, with its content type (None when
    the client sent none). Only an application's parameter may be annotated `HttpBody`; it
    receives the body whatever its content type, JSON included."""

    __slots__ = ()

    def __init__(self, content: bytes, content_type: str | None = None) -> None:
        super().__init__(content, content_type)

    @property
    def content_type(self) -> str | None:
        return self._content_type

    def text(self, encoding: str = "utf-8") -> str:
        return self._content.decode(encoding)

    def json(self) -> Any:
        return json.loads(self.text())


class Headers(Mapping[str, str]):
    """Immutable HTTP headers: names compare case-insensitively, a name may repeat (`getlist`),
    and `headers[name]` is its last value, as in Tensorlake."""

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None) -> None:
        pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
        self._items: tuple[tuple[str, str], ...] = tuple((str(k), str(v)) for k, v in pairs)
        lookup: dict[str, list[str]] = {}
        for name, value in self._items:
            lookup.setdefault(name.lower(), []).append(value)
        self._lookup = {name: tuple(values) for name, values in lookup.items()}

    def __getitem__(self, key: str) -> str:
        return self._lookup[key.lower()][-1]

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name, _ in self._items:
            if name.lower() not in seen:
                seen.add(name.lower())
                yield name

    def __len__(self) -> int:
        return len(self._lookup)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._lookup

    def get(self, key: str, default: Any = None) -> Any:
        values = self._lookup.get(key.lower())
        return default if values is None else values[-1]

    def getlist(self, key: str) -> list[str]:
        return list(self._lookup.get(key.lower(), ()))

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self._items)!r})"


def is_raw_body_hint(hint: Any) -> bool:
    """True for a parameter annotated `File` or `HttpBody` (or a subclass of either)."""
    return isinstance(hint, type) and issubclass(hint, (File, HttpBody))


__all__ = ["Headers", "HttpBody", "is_raw_body_hint"]
