"""`File`: bytes with a content type, as an application's input or output (Tensorlake's name
and constructor).

An application parameter annotated `File` receives the bytes a client sent and their content
type: the raw body of `POST /v1/applications/{name}/runs`, one part of a `multipart/form-data`
body, or `engine run --input-file PATH`. An application that returns a `File` answers `GET
/v1/runs/{id}/output` with its bytes and its content type (`engine run --output PATH` writes
them). Between functions it is an ordinary Python value, pickled like any other.

Only a parameter's whole type hint may be `File` (`doc: File`), not a part of one
(`list[File]`, `File | None`), as in Tensorlake: a request carries one raw body per parameter,
and there is no JSON form to validate a nested one against.
"""

from __future__ import annotations


class TypedBytes:
    """Bytes and a content type, pickled by value and compared by value: what `File` and
    `HttpBody` share (`engine.sdk.http`)."""

    __slots__ = ("_content", "_content_type")
    _content_type: str | None

    def __init__(self, content: bytes, content_type: str | None) -> None:
        self._content = bytes(content)
        self._content_type = content_type

    @property
    def content(self) -> bytes:
        return self._content

    # Pickled by value (the executor ships it between calls); __slots__ needs these.
    def __getstate__(self) -> tuple[bytes, str | None]:
        return self._content, self._content_type

    def __setstate__(self, state: tuple[bytes, str | None]) -> None:
        self._content, self._content_type = state

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, TypedBytes)
        return (self._content, self._content_type) == (other._content, other._content_type)

    def __hash__(self) -> int:
        return hash((type(self), self._content, self._content_type))

    def __str__(self) -> str:
        return f"{type(self).__name__}(content_type={self._content_type}, content={self._content[:20]!r}...)"

    __repr__ = __str__


class File(TypedBytes):
    """Bytes with a content type (`"image/png"`), as an application's input or output."""

    __slots__ = ()
    _content_type: str

    def __init__(self, content: bytes, content_type: str) -> None:
        super().__init__(content, content_type)

    @property
    def content_type(self) -> str:
        return self._content_type


__all__ = ["File"]
