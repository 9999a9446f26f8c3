"""`ai`: one model call on any OpenAI-compatible server, with what a durable workflow needs.

    from engine import ai

    text = ai("Summarise in one sentence: ...", max_tokens=60)
    plan = ai("List three sub-topics of ...", schema=Plan)      # a validated `Plan`

- **Endpoint.** The `openai` client (`pip install 'engine[ai]'`; in a function's image,
  `Image(...).run("pip install openai")`), which reads `OPENAI_BASE_URL` and `OPENAI_API_KEY` from
  the environment: list both in the function's `secrets` so that its executor gets them.
- **Model.** `model=`, else the run's model: the request state key `engine.model` (`MODEL_KEY`),
  which the root function sets once (`RequestContext.get().state.set("engine.model", name)`) and
  every call of the tree reads, else the submission's `X-Engine-Model` header (`engine server`
  keeps the headers of the HTTP request that started the run; `engine run --model NAME` stores
  the same header with its run, so `engine resume` keeps it), else `OPENAI_MODEL`, else
  `DEFAULT_MODEL`. One submission points a whole tree of agents at another model without a
  parameter threaded through every function. `ai_model()` says which model that is.
- **Structured output.** With a pydantic `schema`, the JSON schema goes to the server as
  `response_format={"type": "json_object", "schema": ...}`, which llama.cpp's server turns into a
  grammar; for a server that wants OpenAI's `{"type": "json_schema", "json_schema": {...}}`, pass
  `response_format=` yourself and it is sent instead. The reply is read
  leniently — JSON in code fences or among prose, a bare list for a one-field schema, JSON cut off
  by `max_tokens` up to its last complete value — and validated. A reply that does not become a
  valid instance (or an empty reply) raises `ModelOutputError`, a `FunctionError`: the call fails
  and the function's `Retries` run it again, where sampling gives another answer.
- **Transient failures.** A 429, a 5xx answer or a refused connection is retried here, up to
  `ATTEMPTS` requests in all, after `Retry-After` when the server sends it (capped at
  `MAX_RETRY_AFTER` seconds) and otherwise after an exponential backoff; the client's own retries
  are off, so these are the only ones. What is left after the last attempt (an `openai.APIError`)
  fails the call like any exception, so `Retries` apply to it too.
- **Token use.** Each answered request adds its `usage` to the call's metrics: counters
  `ai.requests`, `ai.prompt_tokens`, `ai.completion_tokens` (`RequestContext.metrics`), shown per
  call and summed per run by `engine show`, the dashboard and the server's `/metrics`.

Outside a call `ai` works too (a script, a test), with no run model and no metrics. This module
is part of the SDK layer: it imports `openai` only when called, and pydantic only when given a
`schema` (every executor and `engine` command imports this module; neither is needed to start).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar, overload

from engine.errors import ModelOutputError, SDKUsageError
from engine.sdk.context import RequestContext

if TYPE_CHECKING:  # pydantic is imported when a schema is used: every executor imports this module
    from pydantic import BaseModel

T = TypeVar("T", bound="BaseModel")

MODEL_KEY = "engine.model"
MODEL_HEADER = "x-engine-model"
DEFAULT_MODEL = "gpt-4o-mini"

ATTEMPTS = 5  # requests in all, for one `ai` call, before a transient failure is raised
BASE_DELAY = 0.5  # seconds before the second attempt; doubled each time, with jitter
MAX_DELAY = 8.0
MAX_RETRY_AFTER = 60.0
TIMEOUT = 90.0  # seconds for one request, unless `timeout=` is given


@overload
def ai(user: str, *, system: str | None = None, schema: None = None, model: str | None = None,
       **options: Any) -> str: ...


@overload
def ai(user: str, *, system: str | None = None, schema: type[T], model: str | None = None,
       **options: Any) -> T: ...


def ai(user: str, *, system: str | None = None, schema: type[T] | None = None,
       model: str | None = None, **options: Any) -> str | T:
    """Ask the model: `user` (and an optional `system` message) in, the reply's text out, or a
    validated `schema` instance when `schema` is given. `options` go to
    `chat.completions.create` as they are (`max_tokens`, `temperature`, `timeout`, ...).

    Raises `ModelOutputError` for an empty reply or one that does not fit `schema` (retried by
    the function's `Retries`), `openai.APIError` subclasses when the server refuses the request
    or stays unavailable after `ATTEMPTS` tries, and `SDKUsageError` when `openai` is not
    installed or an argument is wrong.
    """
    if not isinstance(user, str):
        raise SDKUsageError(f"ai(): the user message must be a string, got {type(user).__name__}")
    if system is not None and not isinstance(system, str):
        raise SDKUsageError(f"ai(): system must be a string or None, got {type(system).__name__}")
    if schema is not None and not _is_model(schema):
        raise SDKUsageError(f"ai(): schema must be a pydantic model class, got {schema!r}")
    try:
        import openai
    except ImportError:
        raise SDKUsageError(
            "engine.ai needs the openai package: pip install 'engine[ai]' (in a function's image: "
            "Image(...).run('pip install openai'))") from None

    ctx = _context()
    messages: list[dict[str, str]] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    if schema is not None:
        keys = ", ".join(f'"{name}"' for name in schema.model_fields)
        user = f"{user}\nAnswer with JSON only, an object with the keys {keys}."
        options.setdefault("response_format", {"type": "json_object", "schema": schema.model_json_schema()})
    messages.append({"role": "user", "content": user})
    options.setdefault("timeout", TIMEOUT)
    name = model or _run_model(ctx)

    with openai.OpenAI(max_retries=0) as client:
        reply = _create(openai, client, model=name, messages=messages, **options)
    _record(ctx, reply)
    text = (reply.choices[0].message.content or "").strip() if reply.choices else ""
    if not text:
        raise ModelOutputError(f"the model {name} returned an empty answer")
    return text if schema is None else parse(text, schema)


def ai_model() -> str:
    """The model `ai()` asks when it is given no `model=`, in this call: the run's (the request
    state's `engine.model`, else the submission's `X-Engine-Model` header, which `engine run
    --model` sets too), else `OPENAI_MODEL`, else `DEFAULT_MODEL`. Raises nothing."""
    return _run_model(_context())


def _context() -> RequestContext | None:
    try:
        return RequestContext.get()
    except SDKUsageError:
        return None  # outside a call: no run model, no metrics


def _run_model(ctx: RequestContext | None) -> str:
    if ctx is not None:
        chosen = ctx.state.get(MODEL_KEY)
        if chosen:
            return str(chosen)
        header = ctx.headers.get(MODEL_HEADER)
        if header:
            return header
    return os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL


def _create(openai: Any, client: Any, **request: Any) -> Any:
    """`chat.completions.create`, with the retries of transient failures described above."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return client.chat.completions.create(**request)
        except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
            # A timeout is an APIConnectionError too, but repeating a request that took the whole
            # timeout would hold the call past its own: that is for `Retries` to decide.
            if attempt == ATTEMPTS or isinstance(exc, openai.APITimeoutError):
                raise
            time.sleep(_delay(exc, attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def _delay(exc: Exception, attempt: int) -> float:
    response = getattr(exc, "response", None)
    if response is not None:
        after = retry_after(response.headers)
        if after is not None:
            return min(after, MAX_RETRY_AFTER)
    backoff = min(BASE_DELAY * 2 ** (attempt - 1), MAX_DELAY)
    return backoff * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


def retry_after(headers: Any) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date) or `retry-after-ms`."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    import email.utils  # here: 10-30 ms of imports that `import engine` (every executor) need not pay

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _record(ctx: RequestContext | None, reply: Any) -> None:
    if ctx is None:
        return
    metrics = ctx.metrics
    metrics.counter("ai.requests")
    usage = getattr(reply, "usage", None)
    if usage is not None:
        metrics.counter("ai.prompt_tokens", int(usage.prompt_tokens or 0))
        metrics.counter("ai.completion_tokens", int(usage.completion_tokens or 0))


# --- reading JSON out of a reply ---------------------------------------------------------------

_FENCE = re.compile(r"```(?:json)?\s*(.*?)(?:```|$)", re.DOTALL)


def _is_model(schema: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(schema, type) and issubclass(schema, BaseModel)


def parse(text: str, schema: type[T]) -> T:
    """Read `schema` out of a model's reply: JSON in code fences or among prose, a bare value for
    a schema with one field, or JSON cut off after its last complete value. Raises
    `ModelOutputError` when none of it validates."""
    from pydantic import ValidationError

    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        data = _first_json(candidate)
        if data is None:
            continue
        if not isinstance(data, dict) and len(schema.model_fields) == 1:
            data = {next(iter(schema.model_fields)): data}  # ["a", "b"] -> {"topics": [...]}
        try:
            return schema.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "answer"
            raise ModelOutputError(
                f"{schema.__name__}.{where}: {problem['msg']} in {text[:200]!r}") from None
    raise ModelOutputError(f"no JSON for {schema.__name__} in the answer {text[:200]!r}")


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
    """JSON cut off by `max_tokens`: everything up to the last complete value, with the open
    brackets closed. None if that does not parse either."""
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


__all__ = ["ai", "ai_model"]
