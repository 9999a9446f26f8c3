"""Completion webhooks: each run's end POSTed to the URL its submission (or its application's
engine.yaml) named, from a durable outbox in the store.

    run ends ──(same transaction as its final status)──▶ webhook_deliveries: pending
        ──claimed by one server (a lease)──▶ POST ──2xx──▶ delivered
                                               └─ other ──▶ pending again, due after a back-off
                                                            ... ──past the retry period──▶ failed

Invariants, and where they are enforced:

- **No run end is lost.** The outbox row is written by `Store.update_run` in the transaction that
  commits the run's final status, and fenced by the same lease: it exists if and only if the
  final status does. A `kill -9` at any point after that leaves a `pending` row, which any
  server on the store sends (`Sender`, one task per server).
- **At least once, deduplicable.** A delivery keeps its id (`Engine-Delivery`) across every
  attempt and every server; a receiver that saw an id before has seen this run end. A server that
  dies mid-attempt leaves the row claimed until its lease runs out (`timeout` + 5 s), after which
  another server (or this one, restarted) sends it again: the receiver may see the same id twice,
  never two ids for one run end. A resumed run that ends again is a new end, with a new id.
- **One sender at a time.** A server sends a delivery only after claiming it
  (`Store.claim_deliveries`: one conditional UPDATE; `FOR UPDATE SKIP LOCKED` on PostgreSQL), and
  records the attempt's outcome only while its claim still holds the row.
- **Bounded.** Attempts back off exponentially (`initial_delay` × 2ⁿ, at most `max_delay`) and stop
  after `max_age` from the run's end (the delivery is then `failed`). Every attempt is recorded
  (`webhook_attempts`: start, duration, HTTP status or error) and shown at
  `GET /v1/runs/{id}/webhooks`.
- **Secrets stay secret.** A webhook's `secret` and its header values are read only to send; the
  API shows the URL without credentials and the header names, and logs show the host only.

The POST goes through aiohttp's client, on the server's loop: an attempt never blocks the
scheduler. The settings come from the environment (`Settings.from_env`).

What the receiver gets (`Content-Type: application/json`):

    {"type": "run.ended", "delivery_id", "run_id", "application", "status",
     "result": <the return value as JSON, when succeeded and small>,
     "result_url": "/v1/runs/ID/output" (when the result is large, or a File),
     "error": {"kind", "message", ...} | null, "created_at", "ended_at"}

with the headers `Engine-Delivery: <id>`, `Engine-Event: run.ended` and, with a secret,
`Engine-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from engine.server.views import failure_json
from engine.statuses import RunStatus
from engine.store import Delivery, DeliveryAttempt, RunRow, RunWebhook, Store, StoreUnavailable
from engine.timeouts import within

log = logging.getLogger("engine.server.webhooks")

#: A result whose JSON is at most this size rides in the body; a larger one is fetched.
INLINE_RESULT_BYTES = 64 * 1024
EVENT = "run.ended"


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass(frozen=True)
class Settings:
    initial_delay: float = 1.0      # seconds before the second attempt
    max_delay: float = 300.0        # the back-off's cap
    max_age: float = 24 * 3600.0    # give up this long after the run ended
    timeout: float = 10.0           # one attempt, connecting included
    poll: float = 1.0               # look for due deliveries (written by any server) this often
    concurrency: int = 16           # attempts in flight per server

    @classmethod
    def from_env(cls) -> Settings:
        """`ENGINE_WEBHOOK_INITIAL_DELAY`, `_MAX_DELAY`, `_MAX_AGE`, `_TIMEOUT`, `_POLL` (seconds)."""
        d = cls()
        return cls(initial_delay=_env_float("ENGINE_WEBHOOK_INITIAL_DELAY", d.initial_delay),
                   max_delay=_env_float("ENGINE_WEBHOOK_MAX_DELAY", d.max_delay),
                   max_age=_env_float("ENGINE_WEBHOOK_MAX_AGE", d.max_age),
                   timeout=_env_float("ENGINE_WEBHOOK_TIMEOUT", d.timeout),
                   poll=_env_float("ENGINE_WEBHOOK_POLL", d.poll))

    @property
    def lease(self) -> float:
        """How long a claim holds a delivery: one attempt, and room to record it."""
        return self.timeout + 5.0

    def delay(self, attempts: int) -> float:
        """The back-off after the `attempts`-th failed attempt."""
        return float(min(self.max_delay, self.initial_delay * 2 ** min(attempts - 1, 60)))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Engine-Signature` header's value (as Stripe's: `t=...,v1=...`)."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, tolerance: float = 300.0) -> bool:
    """What a receiver does: the signature matches, and its timestamp is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return abs(time.time() - timestamp) <= tolerance and hmac.compare_digest(expected, fields.get("v1", ""))


def shown_url(url: str) -> str:
    """The URL without a `user:password@` part (what the API shows)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _redacted(text: str, hook: RunWebhook | None) -> str:
    """An error message (the client's may quote the URL) without the webhook's credentials."""
    if hook is None:
        return text
    text = text.replace(hook.url, shown_url(hook.url))
    for secret in (hook.secret, urlsplit(hook.url).password, *hook.headers.values()):
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _host(url: str) -> str:
    """What the log names of a webhook: its host, nothing that could carry a credential."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class Sender:
    """This server's delivery task: claims due deliveries and POSTs them, `concurrency` at a
    time. `result_json(row)` returns a succeeded run's result as JSON (raises if it cannot be
    decoded here, or is a File: the receiver then gets `result_url`)."""

    def __init__(self, store: Store, reader: Store, result_json: Callable[[RunRow], Any],
                 settings: Settings | None = None, *, usable: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.reader = reader
        self.result_json = result_json
        self.settings = settings or Settings.from_env()
        self.usable = usable
        self.claim = f"{uuid.uuid4().hex[:12]}"  # this process start's claims
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """A run ended here: look for its delivery at once, not at the next poll."""
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*([self._task] if self._task else []), *self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        s = self.settings
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.timeout))
        while True:
            wait = s.poll
            if self.usable():
                try:
                    room = s.concurrency - len(self._inflight)
                    if room > 0:
                        for delivery in self.store.claim_deliveries(self.claim, s.lease, room):
                            task = asyncio.ensure_future(self._attempt(delivery))
                            self._inflight.add(task)
                            task.add_done_callback(self._inflight.discard)
                    due = self.store.next_delivery_in()
                    if due is not None:
                        wait = max(0.05, min(wait, due))
                except StoreUnavailable as exc:
                    log.warning("webhooks: the store does not answer", extra={"fields": {"error": str(exc)}})
                except Exception:  # noqa: BLE001 - a bug here must not stop every later delivery
                    log.exception("webhooks: claiming deliveries failed")
            self._wake.clear()
            try:
                await within(wait, self._wake.wait())
            except TimeoutError:
                pass

    def body(self, delivery: Delivery) -> bytes:
        row = self.reader.get_run(delivery.run_id)
        out: dict[str, Any] = {"type": EVENT, "delivery_id": delivery.delivery_id, "run_id": row.run_id,
                               "application": row.application, "status": delivery.status,
                               "created_at": row.created_at, "ended_at": row.ended_at,
                               "result": None, "error": None}
        if row.status != delivery.status:
            # Resumed since it ended: this delivery reports the end it was queued for.
            out["ended_at"] = None
        elif row.status == RunStatus.SUCCEEDED:
            try:
                inline = json.dumps(self.result_json(row), separators=(",", ":"))
            except Exception:  # noqa: BLE001 - a File, or classes that do not load here: fetch it
                inline = None
            if inline is not None and len(inline) <= INLINE_RESULT_BYTES:
                out["result"] = json.loads(inline)
            else:
                out["result_url"] = f"/v1/runs/{row.run_id}/output"
        else:
            out["error"] = failure_json(row.failure)
        return json.dumps(out, separators=(",", ":")).encode()

    async def _attempt(self, delivery: Delivery) -> None:
        s = self.settings
        number = delivery.attempts + 1
        started = time.time()
        began = time.monotonic()
        status: int | None = None
        error: str | None = None
        hook: RunWebhook | None = None
        try:
            hook = self.reader.run_webhook(delivery.run_id)
            if hook is None:
                raise LookupError("the run has no webhook any more")
            body = self.body(delivery)
            headers = {**hook.headers, "Content-Type": "application/json", "User-Agent": "engine-webhooks/1",
                       "Engine-Delivery": delivery.delivery_id, "Engine-Event": EVENT}
            if hook.secret:
                headers["Engine-Signature"] = sign(hook.secret, int(time.time()), body)
            assert self._session is not None
            async with self._session.post(hook.url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                await resp.content.read(64 * 1024)  # what it says does not matter; do not hold it
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except asyncio.CancelledError:
            raise  # the server stops: the claim runs out, and the next server sends it
        except asyncio.TimeoutError:
            error = f"no answer within {s.timeout:g} s"
        except StoreUnavailable as exc:
            log.warning("webhooks: the store does not answer", extra={"fields": {"error": str(exc)}})
            return  # the claim runs out; tried again then
        except Exception as exc:  # noqa: BLE001 - any failure to deliver is retried
            error = _redacted(f"{type(exc).__name__}: {exc}".splitlines()[0][:500], hook)
        duration = time.monotonic() - began
        if error is None:
            state, retry_in = "delivered", 0.0
        else:
            retry_in = s.delay(number)
            state = "failed" if delivery.age + retry_in > s.max_age or hook is None else "pending"
        attempt = DeliveryAttempt(delivery.delivery_id, number, started, round(duration, 6), status, error)
        fields = {"run_id": delivery.run_id, "delivery_id": delivery.delivery_id, "attempt": number,
                  "host": _host(hook.url) if hook else None, "http_status": status,
                  "seconds": round(duration, 3), "state": state}
        if error is not None:
            fields["error"] = error
        log.info("webhook attempt", extra={"fields": fields})
        try:
            self.store.finish_delivery_attempt(delivery, self.claim, attempt, state=state, retry_in=retry_in)
        except Exception as exc:  # noqa: BLE001 - the claim runs out and the delivery is tried again
            log.warning("webhooks: could not record an attempt", extra={"fields": {"error": str(exc)}})
        if state == "pending":
            self.wake()  # recompute when the next one is due
