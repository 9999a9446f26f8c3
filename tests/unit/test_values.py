"""`File`, `HttpBody`, `Headers`, `Logger` and `ApplicationCapability` with Tensorlake's
constructors and meaning; how a raw body, a multipart body or `--input-file` becomes an
application's File argument; and what JSON says of a File result. No server, no executors."""

from __future__ import annotations

import io
import json
import pickle
import sys
from typing import Any, get_args

import pytest

from engine import (
    ApplicationCapability,
    File,
    Headers,
    HttpBody,
    Logger,
    application,
    function,
)
from engine.app import file_json, parse_input, raw_body_parameter, to_json, validate_input
from engine.errors import InputError, SDKUsageError
from engine.sdk import runtime
from engine.server.inputs import body_input, multipart_values
from engine.server.web import HTTPError


@application()
@function()
def thumb(image: File) -> File:
    return image


@application()
@function()
def tagged(image: File, lang: str, words: int = 3) -> dict[str, Any]:
    return {}


@application()
@function()
def optional_others(image: File, words: int = 3) -> int:
    return words


@application()
@function()
def raw_body(body: HttpBody) -> str:
    return body.text()


@application()
@function()
def plain(x: int) -> int:
    return x


@application()
@function()
def nested(images: list[File]) -> int:
    return len(images)


# --- the values ----------------------------------------------------------------------------


def test_file_is_tensorlakes() -> None:
    f = File(b"\x89PNG", "image/png")
    assert (f.content, f.content_type) == (b"\x89PNG", "image/png")
    assert File(content=b"a", content_type="text/plain") == File(b"a", "text/plain")
    assert f != File(b"\x89PNG", "image/gif") and f != HttpBody(b"\x89PNG", "image/png")
    assert str(f).startswith("File(content_type=image/png, content=")
    back = pickle.loads(pickle.dumps(f))
    assert back == f and type(back) is File


def test_http_body_is_tensorlakes() -> None:
    body = HttpBody(b'{"a": [1]}', "application/json")
    assert body.content_type == "application/json" and body.text() == '{"a": [1]}'
    assert body.json() == {"a": [1]}
    assert HttpBody(b"x").content_type is None
    assert pickle.loads(pickle.dumps(body)) == body


def test_headers_are_case_insensitive_and_keep_repeats() -> None:
    h = Headers([("Content-Type", "image/png"), ("X-Tag", "a"), ("x-tag", "b")])
    assert h["content-type"] == "image/png" and h["X-TAG"] == "b"  # the last value wins
    assert h.getlist("x-tag") == ["a", "b"] and h.getlist("nope") == []
    assert list(h) == ["Content-Type", "X-Tag"] and len(h) == 2
    assert "CONTENT-TYPE" in h and 1 not in h and h.get("nope", "d") == "d"
    assert h.multi_items() == [("Content-Type", "image/png"), ("X-Tag", "a"), ("x-tag", "b")]
    assert dict(Headers({"A": "1"})) == {"A": "1"} and len(Headers()) == 0


@application(allow=["unauthenticated_requests"])
@function()
def public() -> int:
    return 1


def test_application_capability() -> None:
    assert get_args(ApplicationCapability) == ("unauthenticated_requests",)
    assert public.application is not None and public.application.allow == ["unauthenticated_requests"]
    with pytest.raises(SDKUsageError, match="allow must be a list of 'unauthenticated_requests'"):
        application(allow=["everything"])  # type: ignore[list-item]


# --- Logger --------------------------------------------------------------------------------


def _capture(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)  # looked up at each line, as the executor swaps it
    return out


def test_logger_writes_one_json_line_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    log = Logger.get_logger(app="a", n=1)  # made before stdout is swapped
    out = _capture(monkeypatch)
    bound = log.bind(request="r1")
    bound.info("hello", step=2)
    log.warning("careful")
    log.debug("detail", obj=object(), items=[1, 2])
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(x["level"], x["event"]) for x in lines] == [
        ("info", "hello"), ("warning", "careful"), ("debug", "detail")]
    assert lines[0]["app"] == "a" and lines[0]["request"] == "r1" and lines[0]["step"] == 2
    assert "request" not in lines[1]  # bind returns a new logger
    assert lines[2]["obj"].startswith("<object object") and lines[2]["items"] == [1, 2]
    assert all(x["timestamp"].endswith("Z") for x in lines)
    assert "run_id" not in lines[0]  # outside a call


def test_logger_exc_info_and_call_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _capture(monkeypatch)
    ctx = runtime.CallContext(runtime=None, run_id="r1", call_id="c1", function="f")  # type: ignore[arg-type]
    token = runtime.enter(ctx)
    try:
        try:
            raise KeyError("gone")
        except KeyError:
            Logger.get_logger().error("failed", exc_info=True)
        Logger.get_logger(call_id="mine").info("x", exc_info=ValueError("v"))
    finally:
        runtime.leave(token)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["run_id"], first["call_id"], first["function"]) == ("r1", "c1", "f")
    assert "KeyError: 'gone'" in first["exception"] and "exc_info" not in first
    assert second["call_id"] == "mine" and "ValueError: v" in second["exception"]


def test_logger_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError("closed")

    monkeypatch.setattr(sys, "stdout", Broken())
    Logger.get_logger().info("dropped")  # no exception
    assert pickle.loads(pickle.dumps(Logger.get_logger(a=1).bind(b=2)))._context == {"a": 1, "b": 2}


# --- input ---------------------------------------------------------------------------------


def test_validate_input_takes_files() -> None:
    f = File(b"img", "image/png")
    assert validate_input(thumb, (f,), {}) == {"image": f}
    # HttpBody for a File (with a content type) and File for an HttpBody convert.
    assert validate_input(thumb, (HttpBody(b"x", "image/gif"),), {})["image"] == File(b"x", "image/gif")
    assert validate_input(raw_body, (f,), {})["body"] == HttpBody(b"img", "image/png")
    with pytest.raises(InputError, match="input field image: thumb takes a File here, not JSON"):
        validate_input(thumb, ("img",), {})
    with pytest.raises(SDKUsageError, match="File and HttpBody must be a parameter's whole hint"):
        validate_input(nested, ([f],), {})


def test_parse_input_file() -> None:
    f = File(b"img", "image/png")
    assert parse_input(thumb, None, (b"img", "image/png")) == {"image": f}
    assert parse_input(optional_others, "2", (b"img", "image/png")) == {"image": f, "words": 2}
    with pytest.raises(InputError, match="--input must be a JSON object of tagged's other parameters"):
        parse_input(tagged, '"fr"', (b"img", "image/png"))
    assert parse_input(tagged, '{"lang": "fr", "words": 2}', (b"img", "image/png")) == {
        "image": f, "lang": "fr", "words": 2}
    with pytest.raises(InputError, match="plain has no parameter annotated File"):
        parse_input(plain, None, (b"1", "text/plain"))
    with pytest.raises(InputError, match="'image' given twice"):
        parse_input(tagged, '{"image": 1, "lang": "x"}', (b"img", "image/png"))
    with pytest.raises(InputError, match="input field lang: Field required|missing input field 'lang'"):
        parse_input(tagged, None, (b"img", "image/png"))
    with pytest.raises(InputError, match=r"needs input \(image\): pass --input-file PATH"):
        parse_input(thumb, None)
    assert raw_body_parameter(plain) is None and raw_body_parameter(tagged) == ("image", File)


# --- request bodies (engine/server/inputs.py) ----------------------------------------------


def test_raw_bodies() -> None:
    assert body_input(thumb, b"\x89PNG", "image/png") == (File(b"\x89PNG", "image/png"), True)
    # Any content type, JSON too, is a File's content; none at all is octet-stream.
    assert body_input(thumb, b"{}", "application/json") == (File(b"{}", "application/json"), True)
    assert body_input(thumb, b"x", None) == (File(b"x", "application/octet-stream"), True)
    assert body_input(raw_body, b"x", None) == (HttpBody(b"x", None), True)
    assert body_input(optional_others, b"x", "image/png") == ({"image": File(b"x", "image/png")}, True)
    # JSON applications: read as before (None), whatever text-ish type the client says.
    for ctype in (None, "application/json", "application/json; charset=utf-8", "text/plain",
                  "application/x-www-form-urlencoded", "application/vnd.api+json"):
        assert body_input(plain, b"1", ctype) is None, ctype
    with pytest.raises(HTTPError) as info:
        body_input(plain, b"\x89PNG", "image/png")
    assert info.value.status == 415 and "takes JSON, not image/png" in info.value.message
    with pytest.raises(HTTPError) as info:
        body_input(tagged, b"\x89PNG", "image/png")
    assert info.value.status == 415 and "send multipart/form-data" in info.value.message
    with pytest.raises(InputError, match=r"needs input \(image\): send the file as the request body"):
        body_input(thumb, b"", None)


def _multipart(*parts: tuple[str, str | None, str | None, bytes]) -> tuple[bytes, str]:
    out = b""
    for name, filename, ctype, data in parts:
        out += b'--B\r\nContent-Disposition: form-data; name="' + name.encode() + b'"'
        if filename:
            out += b'; filename="' + filename.encode() + b'"'
        out += b"\r\n" + (f"Content-Type: {ctype}\r\n".encode() if ctype else b"") + b"\r\n" + data + b"\r\n"
    return out + b"--B--\r\n", "multipart/form-data; boundary=B"


def test_multipart_bodies() -> None:
    data = bytes(range(256)) + b"\r\n--Bx\r\n"  # binary, and a near-boundary inside the content
    body, ctype = _multipart(("image", "a.png", "image/png", data), ("lang", None, None, b'"fr"'))
    assert multipart_values(tagged, body, ctype) == {"image": File(data, "image/png"), "lang": "fr"}
    assert body_input(tagged, body, ctype) == ({"image": File(data, "image/png"), "lang": "fr"}, True)
    # The content type of a file part without one is guessed from its file name.
    body, ctype = _multipart(("image", "scan.jpg", None, b"jpg"))
    assert body_input(thumb, body, ctype) == (File(b"jpg", "image/jpeg"), True)
    # One stray file part fills the one File parameter; a one-parameter app takes its value.
    body, ctype = _multipart(("upload", "a.png", "image/png", b"p"))
    assert body_input(thumb, body, ctype) == (File(b"p", "image/png"), True)
    body, ctype = _multipart(("x", None, None, b"41"))
    assert body_input(plain, body, ctype) == (41, True)
    body, ctype = _multipart(("y", None, None, b"41"))
    with pytest.raises(InputError, match="part 'y' names no parameter of plain"):
        body_input(plain, body, ctype)
    body, ctype = _multipart(("x", None, None, b"1"), ("x", None, None, b"2"))
    with pytest.raises(InputError, match="two parts named 'x'"):
        body_input(plain, body, ctype)
    with pytest.raises(HTTPError) as info:
        body_input(plain, b"garbage", "multipart/form-data")
    assert info.value.status == 400


# --- output --------------------------------------------------------------------------------


def test_a_file_result_as_json() -> None:
    f = File(b"12345", "image/png")
    assert file_json(f) == {"content_type": "image/png", "size": 5}
    assert to_json({"thumb": f, "n": 1}) == {"thumb": {"content_type": "image/png", "size": 5}, "n": 1}
    assert to_json(object()).startswith("<object object")  # other values: unchanged fallback
