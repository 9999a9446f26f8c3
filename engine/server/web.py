"""The HTTP layer: aiohttp's web server, on the scheduler's own asyncio loop.

Why on the loop: the scheduler is single-threaded asyncio and its store connection belongs to
the loop's thread. aiohttp's server runs as coroutines on the loop it is started from
(`web.AppRunner`/`web.TCPSite`, no thread of its own), so every handler reads and changes the
scheduler's state directly, between two of the scheduler's own steps, with nothing to lock;
server-sent events are one coroutine per subscriber, and the 500 connections of a burst one
coroutine each. The price is that a handler must not block: handlers do only local store reads
and small writes, like the scheduler; the exception is a deploy (unpacking and importing the
project: a fraction of a second, rarely); image builds go to a thread.

HTTP itself is aiohttp's (llhttp's parser): framing, keep-alive, `Expect: 100-continue`,
chunked bodies both ways, and the refusals RFC 9112 asks for — two different `Content-Length`
headers, say, are a 400 at once, with aiohttp's plain-text body, before any route sees the
request (`ProtocolErrors` logs them in one line). Everything a route answers, errors included,
is JSON: `{"error": "<one line>", "status": N}` (`HTTPError`, and `errors` turns the router's
404 and 405 and any bug into the same shape).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("engine.server.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HTTPError(Exception):
    """Raised by a handler: answered as `{"error": message, "status": status}`, with `headers`."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    # The body as bytes with the Content-Type header as is: aiohttp would add a charset to a
    # text body, and clients compare `application/json` exactly.
    body = json.dumps(data, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, headers={"Content-Type": "application/json", **(headers or {})})


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": message, "status": status}, headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error a route answers, as JSON with one line: the handler's `HTTPError`, the
    router's 404 and 405, and a bug (500, logged with its traceback; the client sees one line)."""
    try:
        return await handler(request)
    except HTTPError as exc:
        return error_response(exc.status, exc.message, exc.headers)
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, f"{request.method} is not allowed on {request.path} (use {allowed})",
                              {"Allow": allowed})
    except web.HTTPNotFound:
        return error_response(404, f"no such path {request.path}: see /openapi.json")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except Exception:
        log.exception("handler failed", extra={"fields": {"method": request.method, "path": request.path}})
        return error_response(500, "internal error: see the server's log")


def counting(count: Callable[[str, int], None]) -> Any:
    """A middleware that reports each answer's method and status (for `/metrics`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        count(request.method, response.status)
        return response

    return middleware


class ProtocolErrors(logging.Filter):
    """aiohttp logs a request it cannot parse (a client's mistake: a 4xx) with a traceback; this
    makes it one warning line naming the problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            record.msg = "refused a malformed request: %s"
            record.args = (str(exc.message).strip().splitlines()[0] if exc.message else exc.code,)
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class Listener:
    """The server on a port: `start` binds it, `close` stops accepting, lets requests in flight
    finish for up to `shutdown_timeout` seconds and closes every connection."""

    def __init__(self, app: web.Application, *, shutdown_timeout: float = 5.0) -> None:
        # Header lines up to 64 KiB, as before aiohttp (its default is 8 KiB).
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=shutdown_timeout, max_line_size=65536,
                                    max_field_size=65536)

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0). Raises OSError if it cannot bind."""
        await self.runner.setup()
        # A burst of hundreds of connections at once waits in the backlog, never refused.
        site = web.TCPSite(self.runner, host, port, backlog=2048)
        await site.start()
        return int(self.runner.addresses[0][1])

    async def close(self) -> None:
        await self.runner.cleanup()
