"""A small HTTP/1.1 server that runs on the scheduler's asyncio loop.

Why not `http.server.ThreadingHTTPServer`: the scheduler is single-threaded asyncio, and its
store is one SQLite connection that only the loop's thread may use. A threaded server would
need a store connection per thread for reads and would marshal every write (submit, cancel,
resume) onto the loop with `run_coroutine_threadsafe` anyway, and each of the 500 connections
of a burst would cost a thread. Here every handler runs on the loop itself: it reads and
changes the scheduler's state directly, between two of the scheduler's own steps, so there is
nothing to lock; server-sent events are one coroutine per subscriber; a burst of connections
costs one coroutine each. The price is that a handler must not block — they do only local
SQLite reads and small writes, like the scheduler. The exception is a deploy (unpacking and
importing the project: a fraction of a second, rarely); image builds go to a thread.

What is implemented, and only that: request line and headers, bodies with `Content-Length`
(`Expect: 100-continue` honoured; chunked request bodies are refused with 411), keep-alive,
responses with a known length, and streamed server-sent events (delimited by closing the
connection). Limits: 64 KiB per header line, 100 headers, `max_body` bytes of body; an idle
keep-alive connection is closed after `idle_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

log = logging.getLogger("engine.server.http")

MAX_HEADERS = 100


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    # Filled in by the router: the named groups of the matched route.
    params: dict[str, str] = field(default_factory=dict)
    peer: str = ""


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(data, separators=(",", ":")).encode(), "application/json",
                   headers or {})


class EventStream:
    """A `text/event-stream` response: `chunks` yields already formatted events."""

    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        self.chunks = chunks
        self.headers = headers or {}


def sse_event(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class HTTPError(Exception):
    """Raised by a handler: answered as `{"error": message, "status": status}` plus `extra`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


Handler = Callable[[Request], Awaitable[Response | EventStream]]


def error_response(status: int, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response:
    return Response.json(status, {"error": message, "status": status, **extra}, headers)


class HTTPServer:
    def __init__(self, handler: Handler, *, max_body: int, idle_timeout: float = 75.0,
                 on_response: Callable[[Request, int], None] | None = None) -> None:
        self.handler = handler
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.on_response = on_response
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (useful with port 0). Raises OSError if it cannot bind."""
        self._server = await asyncio.start_server(self._connection, host, port, backlog=2048,
                                                  limit=64 * 1024)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while await self._one_request(reader, writer, f"{peer[0]}:{peer[1]}" if peer else ""):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           peer: str) -> bool:
        """Serve one request; True to keep the connection open for the next."""
        try:
            line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
        except ValueError:  # line over the limit
            await self._send(writer, error_response(431, "request line too long"), False)
            return False
        if not line:
            return False
        try:
            method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        except ValueError:
            await self._send(writer, error_response(400, "malformed request line"), False)
            return False
        headers: dict[str, str] = {}
        while True:
            try:
                raw = await asyncio.wait_for(reader.readline(), 30)
            except ValueError:
                await self._send(writer, error_response(431, "header line too long"), False)
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            name, sep, value = raw.decode("latin-1").partition(":")
            if not sep or len(headers) >= MAX_HEADERS:
                await self._send(writer, error_response(400, "malformed or too many headers"), False)
                return False
            headers[name.strip().lower()] = value.strip()
        keep_alive = (version == "HTTP/1.1" and headers.get("connection", "").lower() != "close") or (
            version == "HTTP/1.0" and headers.get("connection", "").lower() == "keep-alive")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._send(writer, error_response(411, "send a Content-Length, not a chunked body"), False)
            return False
        try:
            length = int(headers.get("content-length") or 0)
        except ValueError:
            await self._send(writer, error_response(400, "bad Content-Length"), False)
            return False
        if length < 0 or length > self.max_body:
            await self._send(writer, error_response(
                413, f"request body over {self.max_body >> 20} MiB"), False)
            return False
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await asyncio.wait_for(reader.readexactly(length), 120) if length else b""
        split = urlsplit(target)
        request = Request(method=method.upper(), path=unquote(split.path) or "/",
                          query=dict(parse_qsl(split.query, keep_blank_values=True)),
                          headers=headers, body=body, peer=peer)
        try:
            response = await self.handler(request)
        except HTTPError as exc:
            response = error_response(exc.status, exc.message, exc.headers, **exc.extra)
        except Exception:  # noqa: BLE001 - a bug in a handler answers 500, the server goes on
            log.exception("handler failed", extra={"fields": {"method": method, "path": request.path}})
            response = error_response(500, "internal error: see the server's log")
        if isinstance(response, EventStream):
            if self.on_response is not None:
                self.on_response(request, 200)
            await self._stream(writer, response)
            return False
        if self.on_response is not None:
            self.on_response(request, response.status)
        await self._send(writer, response, keep_alive)
        return keep_alive

    async def _send(self, writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
        head = [f"HTTP/1.1 {response.status} {_reason(response.status)}",
                f"Content-Type: {response.content_type}",
                f"Content-Length: {len(response.body)}",
                "Connection: " + ("keep-alive" if keep_alive else "close")]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body)
        await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter, stream: EventStream) -> None:
        head = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream; charset=utf-8",
                "Cache-Control: no-cache", "Connection: close", "X-Accel-Buffering: no"]
        head += [f"{k}: {v}" for k, v in stream.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        try:
            async for chunk in stream.chunks:
                writer.write(chunk)
                await writer.drain()
        finally:
            aclose = getattr(stream.chunks, "aclose", None)
            if aclose is not None:
                await aclose()


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
