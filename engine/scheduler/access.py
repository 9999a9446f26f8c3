"""Who may ask the scheduler what: one credential per executor, and only its own calls.

The `SchedulerCallback` and `Blobs` services are reachable by every executor of every run the
scheduler drives, and the ids in their messages are guessable (call ids are deterministic). So
the ids a request names are never trusted on their own:

- **One credential per executor.** `issue` makes a random `ID.SECRET` when the executor is
  started; it travels once, in `InitializeRequest.credential`, and the executor sends it back as
  the `engine-credential` metadata of every request. A request is served only when the ID is a
  live executor's and the SECRET matches (a dict lookup and a constant-time compare: no
  per-request crypto). `revoke` forgets it when the executor is retired.
- **Only the calls it runs now.** The scheduler tells the grant when it sends a call to the
  executor (`call_started`) and when the call's outcome is handled (`call_ended`). A request
  must name one of those calls (its run and its call id). `Submit` may only add futures that are
  new or already that call's children; `Await` may only wait for that call's children.
- **Only the values it was given.** A blob may be read by an executor when one of its running
  calls references it — in its arguments, in the outcomes it awaited, in the state it read — or
  when that executor put it. A race between a call finishing and its dependant fetching its
  result cannot refuse a fetch: the dependant's arguments reference the blob, and the grant is
  given before its `RunRequest` is sent. Futures an executor submits (or returns as a tail call),
  its results, failures and state writes may reference only blobs it may read: otherwise a
  digest learnt elsewhere would be laundered into a value that the next call is given.

- **Nothing of a value not yet stored.** A call's result adopted as *deferred*
  (`engine.scheduler.exchange.Deferred`) is named by a token until its call is checkpointed. Its
  executor may return the token as that call's value and nothing else (`Grant.deferred`); a call
  given the token is served no request (`caller`), and its outcome is not acted on
  (`Dispatcher._answered`, `_conclude_slow`), before that checkpoint is committed (`settled`).

Anything else is PERMISSION_DENIED, and one log line says which executor asked for what (its
function, the run and call named, and what was refused). The SDK raises `AccessDenied`.

What this does not separate: calls running on the same executor at the same time (a function's
`concurrency` above 1) share one grant, so each may read what the others were given; they are
calls of the same function of the same code.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NoReturn

import grpc

from engine import wire
from engine.wire.v1 import engine_pb2 as pb

if TYPE_CHECKING:
    from engine.scheduler.exchange import Deferred, Exchange
    from engine.scheduler.state import CallState, RunState

log = logging.getLogger("engine.scheduler.access")

class Denied(Exception):
    """A request asked for something its executor may not have; the message says what."""


class Grant:
    """What one executor may do: the calls it runs now and the blobs it may read."""

    __slots__ = ("id", "secret", "function", "calls", "blobs", "put", "exchange", "deferred")

    def __init__(self, grant_id: str, secret: str, function: str, exchange: Exchange | None = None) -> None:
        self.id = grant_id
        self.secret = secret
        self.function = function
        # (run id, call id) of each call running there -> the blobs it was given.
        self.calls: dict[tuple[str, str], list[str]] = {}
        # How many of those calls reference each blob.
        self.blobs: Counter[str] = Counter()
        # Blobs this executor put through the Blobs service (it holds their bytes anyway).
        self.put: set[str] = set()
        # Its exchange directory (engine.scheduler.exchange), when it has one: the blobs it may
        # read are linked there while it may read them.
        self.exchange = exchange
        # Tokens of its deferred adoptions that no call has returned yet.
        self.deferred: set[str] = set()

    def runs(self, run_id: str, call_id: str) -> bool:
        return (run_id, call_id) in self.calls

    def may_read(self, digest: str) -> bool:
        return digest in self.put or self.blobs.get(digest, 0) > 0

    def give(self, run_id: str, call_id: str, digests: Iterable[str]) -> None:
        """Let the running call (run_id, call_id) read `digests` until it ends."""
        given = self.calls.get((run_id, call_id))
        if given is None:
            return
        for digest in digests:
            given.append(digest)
            self.blobs[digest] += 1
            if self.exchange is not None and self.blobs[digest] == 1:
                self.exchange.link(digest)

    def describe(self) -> str:
        running = ", ".join(f"run {r} call {c}" for r, c in list(self.calls)[:3]) or "no call"
        return f"executor {self.id} ({self.function}; running {running})"


class Access:
    """The credentials the scheduler issued and what each allows (see the module doc)."""

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}
        # The scheduler's handle on each executor (its ExecutorState) -> its grant.
        self._of: dict[object, Grant] = {}
        self.refused = 0
        # Calls' results adopted but not yet checkpointed, by token (the scheduler's
        # `Exchanges.deferred` when it has exchange directories).
        self.deferred: dict[str, Deferred] = {}

    # --- the scheduler's side --------------------------------------------------------------

    def issue(self, executor: object, function: str, exchange: Exchange | None = None) -> str:
        """A new credential for `executor`, to send in its InitializeRequest."""
        grant = Grant(secrets.token_hex(8), secrets.token_urlsafe(32), function, exchange)
        self._grants[grant.id] = grant
        self._of[executor] = grant
        return f"{grant.id}.{grant.secret}"

    def revoke(self, executor: object) -> None:
        grant = self._of.pop(executor, None)
        if grant is not None:
            self._grants.pop(grant.id, None)
            for token in grant.deferred:  # adopted, never returned: a blob nobody references
                self.deferred.pop(token, None)
            if grant.exchange is not None:
                grant.exchange.remove()

    def call_started(self, executor: object, call: CallState, arguments: pb.Arguments) -> None:
        """`call` is about to be sent to `executor`, with `arguments` (values only)."""
        grant = self._of.get(executor)
        if grant is None:
            return
        grant.calls[(call.run.run_id, call.id)] = []
        grant.give(call.run.run_id, call.id, _blobs_of(arguments))

    def call_ended(self, executor: object, call: CallState) -> None:
        grant = self._of.get(executor)
        if grant is None:
            return
        given = grant.calls.pop((call.run.run_id, call.id), None)
        for digest in given or ():
            left = grant.blobs[digest] - 1
            if left > 0:
                grant.blobs[digest] = left
            else:
                del grant.blobs[digest]
                if grant.exchange is not None:
                    grant.exchange.unlink(digest)

    def screen_response(self, executor: object, call: CallState, response: pb.RunResponse) -> None:
        """Turn a response that references blobs its executor may not read into a failure of
        the call (in place): a result must not hand on a value its function was never given.
        A tail call's futures are checked by the scheduler as it adds them (`frozen`,
        `screen_futures`): a hundred thousand of them take longer than one loop turn should."""
        grant = self._of.get(executor)
        if grant is None:
            return
        outcome = response.WhichOneof("outcome")
        try:
            if outcome == "value":
                if response.value.blob not in grant.deferred:  # its own deferred value: a token
                    self.check_payload(grant, response.value, "returning")
            elif outcome == "failure" and response.failure.HasField("exception"):
                self.check_payload(grant, response.failure.exception, "failing with")
        except Denied as exc:
            what = str(exc)
            self._log(grant, call.run.run_id, call.id, what)
            response.failure.CopyFrom(wire.make_failure(
                pb.FAILURE_KIND_INTERNAL, f"the engine refused {call.function}'s outcome: {what}",
                function=call.function, call_id=call.id, type_name="AccessDenied"))

    def frozen(self, executor: object) -> Grant | None:
        """A copy of `executor`'s grant as it is now (None when it has none): what a tail call's
        futures may reference is what their caller could read when it returned them, also
        once the caller's call has ended and the grant moved on (`Scheduler._add_tail`)."""
        grant = self._of.get(executor)
        if grant is None:
            return None
        copy = Grant(grant.id, grant.secret, grant.function)
        copy.calls, copy.blobs, copy.put = dict(grant.calls), Counter(grant.blobs), set(grant.put)
        return copy

    def screen_futures(self, grant: Grant | None, call: CallState,
                       specs: Iterable[pb.FutureSpec]) -> pb.Failure | None:
        """Futures of `call`'s tail call, against `grant` (from `frozen`): None when they may be
        added, else the failure of `call` (logged), as `screen_response` makes one."""
        if grant is None:
            return None
        try:
            self.check_specs(grant, call.run, call.id, specs)
        except Denied as exc:
            what = str(exc)
            self._log(grant, call.run.run_id, call.id, what)
            return wire.make_failure(
                pb.FAILURE_KIND_INTERNAL, f"the engine refused {call.function}'s outcome: {what}",
                function=call.function, call_id=call.id, type_name="AccessDenied")
        return None

    # --- the services' side ----------------------------------------------------------------

    def grant_of(self, context: grpc.aio.ServicerContext) -> Grant | None:
        """The grant named by the request's credential, or None when it names none."""
        for key, value in context.invocation_metadata() or ():
            if key == wire.CREDENTIAL_METADATA_KEY:
                grant_id, _, secret = str(value).partition(".")
                grant = self._grants.get(grant_id)
                if grant is not None and hmac.compare_digest(grant.secret, secret):
                    return grant
                return None
        return None

    async def caller(self, context: grpc.aio.ServicerContext, run_id: str, call_id: str,
                     what: str) -> Grant:
        """The grant of the request's executor, which must be running `call_id` of `run_id`;
        otherwise the request is refused (PERMISSION_DENIED) and this raises."""
        grant = self.grant_of(context)
        if grant is None:
            await self.refuse(context, None, run_id, call_id, f"{what}: no valid executor credential")
        if not grant.runs(run_id, call_id):
            await self.refuse(context, grant, run_id, call_id,
                              f"{what}: this executor is not running call {call_id} of run {run_id}")
        await self._settled(grant, run_id, call_id)
        return grant

    def unsettled(self, executor: object, call: CallState) -> bool:
        """Whether `call` (running on `executor`) was given a deferred value not yet committed."""
        if not self.deferred:  # every answer asks: most runs never defer a value
            return False
        grant = self._of.get(executor)
        given = grant.calls.get((call.run.run_id, call.id)) if grant is not None else None
        return bool(given) and any(d in self.deferred for d in given)  # type: ignore[union-attr]

    async def settled(self, executor: object, call: CallState) -> None:
        """Return once every deferred value `call` was given is committed (or never will be)."""
        grant = self._of.get(executor)
        if grant is not None:
            await self._settled(grant, call.run.run_id, call.id)

    async def _settled(self, grant: Grant, run_id: str, call_id: str) -> None:
        for digest in grant.calls.get((run_id, call_id)) or ():
            deferred = self.deferred.get(digest) if digest.startswith(wire.DEFERRED_PREFIX) else None
            if deferred is not None:
                await deferred.committed.wait()

    async def refuse(self, context: grpc.aio.ServicerContext, grant: Grant | None, run_id: str,
                     call_id: str, what: str) -> NoReturn:
        """Log one line and answer PERMISSION_DENIED (raises, as `context.abort` does)."""
        self._log(grant, run_id, call_id, what, context.peer())
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, what)
        raise AssertionError("unreachable: abort raises")

    def check_specs(self, grant: Grant, run: RunState | None, parent_id: str,
                    specs: Iterable[pb.FutureSpec]) -> None:
        """Futures submitted by `parent_id`: each new or already its child, and with values
        that its executor may read. Raises `Denied`."""
        for spec in specs:
            known = run.calls.get(spec.id) if run is not None else None
            if known is not None and known.parent_id != parent_id:
                raise Denied(f"future {spec.id} belongs to another call")
            for arg in wire.leaves(spec.arguments):
                if arg.value.blob:  # (a reference's `value` reads as an empty Payload)
                    self.check_payload(grant, arg.value, f"future {spec.id} passing")

    def check_children(self, run: RunState, parent_id: str, ids: Iterable[str]) -> None:
        """Awaited futures must be the awaiting call's own children. Raises `Denied`."""
        for i in ids:
            known = run.calls.get(i)
            if known is not None and known.parent_id != parent_id:
                raise Denied(f"future {i} is not a child of call {parent_id}")

    @staticmethod
    def check_payload(grant: Grant, payload: pb.Payload, what: str) -> None:
        """`payload` must be inline or a blob `grant` may read. Raises `Denied`."""
        if payload.blob.startswith(wire.DEFERRED_PREFIX):
            # Only a call's own result may be a token (`screen_response`): anywhere else it
            # would be written to the store, where no token may be.
            raise Denied(f"{what} {payload.blob[:20]}, a value that is not stored yet")
        if payload.blob and not grant.may_read(payload.blob):
            raise Denied(f"{what} blob {payload.blob[:12]}, which this executor was never given")

    def _log(self, grant: Grant | None, run_id: str, call_id: str, what: str, peer: str = "") -> None:
        self.refused += 1
        who = grant.describe() if grant is not None else f"a caller without a valid credential ({peer})"
        log.warning("refused %s: run %s call %s: %s", who, run_id or "-", call_id or "-", what)


def outcome_blobs(response: pb.AwaitResponse) -> Iterator[str]:
    """The blobs an Await answer hands its caller (values, and pickled exceptions)."""
    for outcome in response.outcomes:
        if outcome.WhichOneof("result") == "value":
            if outcome.value.blob:
                yield outcome.value.blob
        elif outcome.failure.exception.blob:
            yield outcome.failure.exception.blob


def _blobs_of(arguments: pb.Arguments) -> list[str]:
    # (A reference's `value` reads as an empty Payload, with no blob.)
    return [arg.value.blob for arg in wire.leaves(arguments) if arg.value.blob]
