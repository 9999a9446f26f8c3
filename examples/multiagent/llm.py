"""What the examples share: one chat call, lenient JSON parsing, and the image with `openai`.

- `ask(prompt, model=...)` returns the model's reply through the `openai` client, which reads
  `OPENAI_BASE_URL` and `OPENAI_API_KEY` from the environment. Functions that call the model
  list both in `secrets=SECRETS`: the engine passes them to the function's container as
  environment variables at run time (they are never baked into an image).
- `ask_json(prompt, Schema, model=...)` asks for JSON that fits a pydantic model and returns a
  validated instance. A small model often answers with prose around the JSON, code fences, a
  bare list, or JSON cut off by `max_tokens`; `parse` digs the JSON out leniently, and anything
  it cannot turn into a valid `Schema` raises `MalformedAnswer`. That is an ordinary exception,
  so the function's `Retries` run the call again (sampling makes the next answer different):
  a malformed answer is a transient failure, not a crash of the workflow.
- `LLM_IMAGE` is the runtime image plus `openai` at the host's version. The build has no index
  to install from: `engine run` downloads the wheels on the host and installs them offline.
- `model` is threaded through every call, so one request can point a whole tree of agents at
  another model; `None` means `DEFAULT_MODEL` (the name `scripts/llm_server.py` serves it as).

Keep prompts short and `max_tokens` small: the local Gemma 3 270M generates about 24 tokens/s on
two cores, and the server answers one request at a time. It is a small pretrained model, so its
answers are weak; what the examples show is the workflow around them (fan-out, validation,
retries, checkpoints), which is the same with any model behind `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engine import Image, Retries

DEFAULT_MODEL = "gemma-3-270m"

# Environment variables every LLM-calling function receives (from the environment of `engine
# run`, or `--env-file`).
SECRETS = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]

# A malformed answer or a dropped connection is retried, a few times, quickly.
LLM_RETRIES = Retries(max_retries=3, initial_delay=0.5, max_delay=4)


def openai_requirement() -> str:
    """`openai==VERSION` for an `Image`'s `pip install`, VERSION being the host's."""
    # The host's version, so that the host (process backend) and the containers agree. Inside a
    # container without openai this module is imported too; the pin is only used on the host.
    try:
        return f"openai=={importlib.metadata.version('openai')}"
    except importlib.metadata.PackageNotFoundError:
        return "openai"


LLM_IMAGE = Image(name="llm").run(f"pip install {openai_requirement()}")

T = TypeVar("T", bound=BaseModel)


class MalformedAnswer(ValueError):
    """The model's answer could not be read as the expected JSON (retried by `Retries`)."""


def ask(prompt: str, *, model: str | None = None, max_tokens: int = 48, temperature: float = 0.7,
        response_format: dict[str, Any] | None = None) -> str:
    """One user message in, the reply's text out. Raises `MalformedAnswer` for an empty reply and
    `openai.APIError` subclasses when the server cannot be reached or refuses the request."""
    from openai import OpenAI  # only functions that call the model need the package

    extra: dict[str, Any] = {"response_format": response_format} if response_format else {}
    with OpenAI(timeout=90, max_retries=1) as client:
        reply = client.chat.completions.create(
            model=model or DEFAULT_MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=temperature,
            **extra,
        )
    return _text(reply)


async def ask_async(prompt: str, *, model: str | None = None, max_tokens: int = 48,
                    temperature: float = 0.7) -> str:
    """`ask` for `async def` functions, through `openai.AsyncOpenAI`."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(timeout=90, max_retries=1) as client:
        reply = await client.chat.completions.create(
            model=model or DEFAULT_MODEL,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=temperature,
        )
    return _text(reply)


def _text(reply: Any) -> str:
    text = (reply.choices[0].message.content or "").strip()
    if not text:
        raise MalformedAnswer("the model returned an empty answer")
    return text


def ask_json(prompt: str, schema: type[T], *, model: str | None = None, max_tokens: int = 80) -> T:
    """Ask for JSON fitting `schema`; return the validated instance or raise `MalformedAnswer`.

    The JSON schema goes to the server as `response_format={"type": "json_object", "schema":
    ...}`: llama.cpp's server turns it into a grammar, so the answer is JSON of the
    right shape unless `max_tokens` cuts it off. Keep the schema's strings and lists short
    (`max_length`): the grammar lets the model write up to the limit, and a small model often
    does. OpenAI's own API takes `{"type": "json_schema", "json_schema": {...}}` instead.
    """
    keys = ", ".join(f'"{name}"' for name in schema.model_fields)
    text = ask(
        f"{prompt}\nAnswer with JSON only, an object with the keys {keys}.",
        model=model,
        max_tokens=max_tokens,
        response_format={"type": "json_object", "schema": schema.model_json_schema()},
    )
    return parse(text, schema)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)


def parse(text: str, schema: type[T]) -> T:
    """Read `schema` out of a model's reply: JSON in code fences or surrounded by prose, a bare
    list for a model with one list field, or JSON cut off after its last complete item."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        data = _first_json(candidate)
        if data is None:
            continue
        if not isinstance(data, dict):
            data = _wrap(data, schema)
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "answer"
            raise MalformedAnswer(f"{schema.__name__}.{where}: {problem['msg']} in {text[:200]!r}") from None
    raise MalformedAnswer(f"no JSON for {schema.__name__} in the answer {text[:200]!r}")


def _first_json(text: str) -> Any:
    # strict=False: a small model sometimes writes a raw line break inside a string.
    decoder = json.JSONDecoder(strict=False)
    for start, char in enumerate(text):
        if char not in "{[":
            continue
        try:
            return decoder.raw_decode(text[start:])[0]
        except json.JSONDecodeError:
            repaired = _close_truncated(text[start:])
            if repaired is not None:
                return repaired
    return None


def _close_truncated(text: str) -> Any:
    """JSON cut off by `max_tokens`: keep everything up to the last complete value and close
    the open brackets. None if that does not parse either."""
    for end in range(len(text), 0, -1):
        if text[end - 1] not in ",]}\"0123456789el":  # ends of values (true/false/null, numbers)
            continue
        head = text[:end].rstrip(",")
        stack: list[str] = []
        in_string = escaped = False
        for char in head:
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char in "{[":
                stack.append("}" if char == "{" else "]")
            elif char in "}]" and stack:
                stack.pop()
        if in_string:
            continue
        try:
            return json.loads(head + "".join(reversed(stack)), strict=False)
        except json.JSONDecodeError:
            continue
    return None


def _wrap(data: Any, schema: type[BaseModel]) -> Any:
    """A bare value for a schema with exactly one field: `["a", "b"]` → `{"topics": [...]}`."""
    if len(schema.model_fields) == 1:
        return {next(iter(schema.model_fields)): data}
    return data


def clip(text: str, limit: int = 300) -> str:
    """Text to put into the next prompt: short, on one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
