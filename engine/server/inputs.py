"""A run's request body → the application's input, by its `Content-Type`.

- JSON (or no `Content-Type`, `text/*`, form-urlencoded as `curl -d` sends it) to an
  application without a `File` parameter: the value of its one parameter, or an object of its
  parameters, as before raw bodies.
- `multipart/form-data`: one part per parameter, named after it. A part for a parameter
  annotated `File` (or `HttpBody`) is taken as it is, with its own content type; any other part
  is that parameter's JSON value. One file part whose name matches no parameter fills the one
  `File` parameter (`curl -F file=@photo.png`).
- Any other body to an application with a parameter annotated `File` (or `HttpBody`) and no
  other required one: the raw body, with its content type, becomes that argument — a JSON body
  too, as in Tensorlake (a `File` sent without a content type is `application/octet-stream`).
- Anything else that is not JSON (`image/png`, `application/pdf`, ...) is refused.

Refusals, each one line: 415 a raw body for an application without a `File`/`HttpBody`
parameter (or with other required ones: send multipart), 400 a multipart body that does not
parse, 422 (`InputError`) a part that names no parameter or is not JSON.

JSON is read by `json_value`, which refuses (as not JSON) a value nested deeper than
`MAX_JSON_DEPTH`: deeper ones overflow Python's recursion limit somewhere on their way — the
parser, the type-hint validation, pickling — and such an input is a client's mistake, not a
server error.
"""

from __future__ import annotations

import inspect
import json
import mimetypes
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from engine.app import raw_body_parameter, raw_value
from engine.errors import InputError
from engine.sdk.function import Function
from engine.sdk.http import is_raw_body_hint
from engine.server.web import HTTPError

# Bodies read as JSON, as every body was before raw ones: `curl -d` sends form-urlencoded.
JSON_LIKE = ("application/json", "application/x-www-form-urlencoded")
MAX_JSON_DEPTH = 200


def json_value(data: bytes) -> Any:
    """The JSON value `data` holds. Raises ValueError (saying why) when it is not JSON, not
    UTF-8, or nests deeper than `MAX_JSON_DEPTH` arrays and objects."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels") from None
    stack = [(value, 1)]
    while stack:  # no recursion: the depth is what is being checked
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_JSON_DEPTH:
                    raise ValueError(f"it nests deeper than {MAX_JSON_DEPTH} levels")
                stack.append((child, depth + 1))
    return value


def mime_type(content_type: str | None) -> str:
    return (content_type or "").partition(";")[0].strip().lower()


def is_json_like(mime: str) -> bool:
    return not mime or mime in JSON_LIKE or mime.endswith("+json") or mime.startswith("text/")


def body_input(fn: Function[..., Any], body: bytes, content_type: str | None) -> tuple[Any, bool] | None:
    """(data, present) for `ControlPlane.submit`, or None to read the body as JSON as before.
    Raises `HTTPError` (400, 415) or `InputError` (422)."""
    mime = mime_type(content_type)
    params = list(inspect.signature(fn.fn).parameters.values())
    if mime == "multipart/form-data":
        values = multipart_values(fn, body, content_type or "")
        if len(params) == 1:  # the control plane takes one parameter's value as it is
            return values.get(params[0].name), params[0].name in values
        return values, bool(values)
    raw = raw_body_parameter(fn)
    if raw is None:
        if is_json_like(mime):
            return None
        raise HTTPError(415, f"{fn.name} takes JSON, not {mime}: send Content-Type: application/json "
                             "(only an application with a parameter annotated File or HttpBody takes a "
                             "raw body)")
    name, hint = raw
    others = [p.name for p in params if p.name != name and p.default is inspect.Parameter.empty]
    if others:
        raise HTTPError(415, f"{fn.name} takes a file ({name}) and other input ({', '.join(others)}): "
                             "send multipart/form-data, one part named after each parameter")
    if not body and content_type is None:
        if any(p.name == name and p.default is inspect.Parameter.empty for p in params):
            raise InputError(f"{fn.name} needs input ({name}): send the file as the request body, "
                             "with its Content-Type")
        return None  # nothing sent, nothing needed
    value = raw_value(hint, body, content_type)
    return (value, True) if len(params) == 1 else ({name: value}, True)


def multipart_values(fn: Function[..., Any], body: bytes, content_type: str) -> dict[str, Any]:
    """The parameters a `multipart/form-data` body gives, by name."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + body)
    if not isinstance(message, EmailMessage) or not message.is_multipart() or not message.get_boundary():
        raise HTTPError(400, "the multipart/form-data body does not parse: send a boundary in its "
                             "Content-Type and one part per parameter")
    hints = _hints(fn)
    names = [p.name for p in inspect.signature(fn.fn).parameters.values()]
    raw_names = [n for n in names if is_raw_body_hint(hints.get(n))]
    values: dict[str, Any] = {}
    strays: list[tuple[str, EmailMessage]] = []
    for part in message.iter_parts():
        assert isinstance(part, EmailMessage)
        name = str(part.get_param("name", "", header="content-disposition") or "")
        if name in values:
            raise InputError(f"the multipart body has two parts named {name!r}: send one per parameter")
        if name in names:
            values[name] = _part_value(name, hints.get(name), part)
        else:
            strays.append((name, part))
    for name, part in strays:
        free = [n for n in raw_names if n not in values]
        if part.get_filename() is not None and len(strays) == 1 and len(free) == 1:
            values[free[0]] = _part_value(free[0], hints[free[0]], part)
            continue
        raise InputError(f"the multipart part {name!r} names no parameter of {fn.name} "
                         f"(parameters: {', '.join(names) or 'none'}): name each part after one")
    return values


def _part_value(name: str, hint: Any, part: EmailMessage) -> Any:
    content = part.get_payload(decode=True)
    data = content if isinstance(content, bytes) else b""
    if is_raw_body_hint(hint):
        ctype = part.get_content_type() if "content-type" in part else None
        if ctype is None and part.get_filename():
            ctype = mimetypes.guess_type(part.get_filename() or "")[0]
        return raw_value(hint, data, ctype)
    try:
        return json_value(data)
    except ValueError:
        raise InputError(f"the multipart part {name!r} is not JSON: send its value as JSON "
                         "(only a parameter annotated File takes a file)") from None


def _hints(fn: Function[..., Any]) -> dict[str, Any]:
    from typing import get_type_hints

    try:
        return get_type_hints(fn.fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: no File parameters
        return {}


__all__ = ["MAX_JSON_DEPTH", "body_input", "is_json_like", "json_value", "mime_type", "multipart_values"]
