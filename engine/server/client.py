"""A small HTTP client of the server, for `engine deploy` and `run_remote_application`.

Standard library only (`http.client`), and importing nothing of the engine but its errors, so
that the SDK can use it without loading the scheduler. The server's URL comes from the caller,
else `ENGINE_SERVER`, else `http://127.0.0.1:8900`; the token from the caller, else
`ENGINE_TOKEN`.

A 4xx answer is the caller's mistake: `SDKUsageError` with the server's one-line message. A
connection that fails, or a 5xx, is `InfrastructureError`.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

from engine.errors import InfrastructureError, SDKUsageError

DEFAULT_URL = "http://127.0.0.1:8900"


class ServerClient:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("ENGINE_SERVER") or DEFAULT_URL).rstrip("/")
        split = urlsplit(self.url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise SDKUsageError(f"not a server URL: {self.url!r} (expected http://HOST:PORT)")
        self._split = split
        self.token = token if token is not None else (os.environ.get("ENGINE_TOKEN") or None)
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._split.scheme == "https" else http.client.HTTPConnection
            self._conn = cls(self._split.hostname or "", self._split.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON or text). Retries once on a
        keep-alive connection the server had closed."""
        send_headers = {"Accept": "application/json", **(headers or {})}
        if body is not None:
            send_headers["Content-Type"] = content_type
        if self.token:
            send_headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, self._split.path.rstrip("/") + path, body=body, headers=send_headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise InfrastructureError(f"the engine server at {self.url} closed the connection: {exc}") from None
            except OSError as exc:
                self.close()
                raise InfrastructureError(
                    f"cannot reach the engine server at {self.url}: {exc.strerror or exc} "
                    "(start one with `engine server`, or set ENGINE_SERVER)") from None
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        ctype = response.getheader("Content-Type", "")
        data: Any = raw.decode(errors="replace")
        if "json" in ctype and raw:
            data = json.loads(raw)
        return response.status, data

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> Any:
        """`request`, raising on an error status (see the module docstring)."""
        status, data = self.request(method, path, body, content_type, headers)
        if status >= 400:
            message = data.get("error") if isinstance(data, dict) else str(data)[:200]
            if status >= 500:
                raise InfrastructureError(f"the engine server failed ({status}): {message}")
            raise SDKUsageError(f"the engine server refused ({status}): {message}")
        return data

    def wait(self, run_id: str, poll: float = 0.02, max_poll: float = 0.5,
             timeout: float | None = None) -> dict[str, Any]:
        """Poll a run until it is finished; returns `GET /v1/runs/{id}`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            data = self.call("GET", f"/v1/runs/{run_id}")
            if data["status"] in ("succeeded", "failed", "cancelled"):
                return data  # type: ignore[no-any-return]
            if deadline is not None and time.monotonic() > deadline:
                raise InfrastructureError(f"run {run_id} did not finish within {timeout} s")
            time.sleep(poll)
            poll = min(max_poll, poll * 1.5)


def exception_for(error: dict[str, Any] | None, run_id: str) -> Exception | None:
    """The typed failure a run's `error` (as the API shows it) stands for."""
    if not error:
        return None
    from engine import errors

    classes: dict[str, type[errors.RequestFailed]] = {
        "function_error": errors.FunctionError, "request_error": errors.RequestError,
        "timeout": errors.FunctionTimeout, "out_of_memory": errors.OutOfMemory,
        "executor_lost": errors.ExecutorLost, "dependency_failed": errors.DependencyFailed,
        "cancelled": errors.RequestCancelled,
    }
    cls = classes.get(error.get("kind") or "", errors.FunctionError)
    return cls(error.get("message") or "the run failed", run_id=run_id, function=error.get("function"),
               call_id=error.get("call_id"), traceback=error.get("traceback"))
