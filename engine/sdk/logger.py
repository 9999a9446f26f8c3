"""`Logger`: structured log lines from user code, with Tensorlake's interface.

    log = Logger.get_logger(module="ingest").bind(document=doc_id)
    log.info("parsed", pages=12)

prints one JSON object per line — the bound context, the keyword arguments, `level`, `event`
(the message) and `timestamp` (RFC 3339, UTC), plus `run_id`, `call_id` and `function` when it
is called inside a call — to `sys.stdout`. The executor captures what a call writes there into
that call's log, so the lines show in `engine logs RUN_ID` and `GET /v1/runs/{id}/logs` under
the call that wrote them (the ids matter for lines from threads the user starts: those go to
the executor's own output, not the call's log).

`sys.stdout` is looked up at each line, not when the logger is made: a logger made at import
time must write where the call's output goes when it logs. Logging never raises (as in
Tensorlake): a value that is not JSON is written as its `str()`, and a line that cannot be
written at all is dropped.
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from engine.sdk import runtime

_JSON_TYPES = (str, int, float, bool, type(None), list, dict, tuple, Enum)


class Logger:
    """A logger with a context: every line carries the context's keys (see the module doc)."""

    def __init__(self, context: dict[str, Any]) -> None:
        self._context = dict(context)

    @classmethod
    def get_logger(cls, **kwargs: Any) -> Logger:
        """A logger whose lines carry `kwargs`. Does not raise."""
        return cls(context=kwargs)

    def bind(self, **kwargs: Any) -> Logger:
        """A new logger with `kwargs` added to this one's context. Does not raise."""
        return type(self)({**self._context, **kwargs})

    def info(self, message: str, **kwargs: Any) -> None:
        self._log("info", message, kwargs)

    def error(self, message: str, **kwargs: Any) -> None:
        self._log("error", message, kwargs)

    def debug(self, message: str, **kwargs: Any) -> None:
        self._log("debug", message, kwargs)

    def warning(self, message: str, **kwargs: Any) -> None:
        self._log("warning", message, kwargs)

    def _log(self, level: str, message: str, kwargs: dict[str, Any]) -> None:
        try:
            line = format_line(self._context, level, message, kwargs)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never fail the code that logs
            pass


def format_line(context: dict[str, Any], level: str, message: str, kwargs: dict[str, Any]) -> str:
    """One log line as JSON (what `Logger` writes)."""
    fields: dict[str, Any] = {**context, **kwargs, "level": level, "event": message}
    exc_info = fields.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if isinstance(exc_info, tuple) and exc_info[0] is not None:
        fields["exception"] = "".join(traceback.format_exception(*exc_info))
    ctx = runtime.current_context()
    if ctx is not None:
        # The user's own keys win: they may already say which call this is.
        fields.setdefault("run_id", ctx.run_id)
        fields.setdefault("call_id", ctx.call_id)
        fields.setdefault("function", ctx.function)
    fields["timestamp"] = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({k: v if isinstance(v, _JSON_TYPES) else str(v) for k, v in fields.items()},
                      default=str)


__all__ = ["Logger", "format_line"]
