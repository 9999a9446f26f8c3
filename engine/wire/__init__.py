"""The wire protocol: generated messages (`engine.wire.v1`) and the codec around them.

Only this package and the layers beneath the SDK (executor, scheduler, backends) touch protobuf.
The codec turns Python values into `Payload`s (cloudpickle), exceptions into `Failure`s and
back, and validates inbound messages before they create state.

Large values never ride inside a message: a `PayloadEncoder` (one per message) keeps a value
inline only while it is small and the message has room, and otherwise puts it in a `BlobStore`
and sends its digest. On the scheduler's side the store is the engine's own (`engine.store.Store`); on an
executor's side it is `engine.executor.blobs.BlobClient`, which streams to and from the
scheduler's `Blobs` service (or, on the scheduler's own machine, through a directory shared with it:
`engine.scheduler.exchange`). So one big value never stalls the other calls sharing a stream, no
message nears gRPC's size limits, and no node needs a filesystem shared with the scheduler.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import traceback as tb
from collections.abc import Iterable
from typing import Any, Protocol

import cloudpickle

from engine import errors
from engine.sdk.signal import valid_signal_name
from engine.wire.v1 import engine_pb2 as pb

PROTOCOL_VERSION = pb.PROTOCOL_VERSION_CURRENT

# The gRPC metadata key under which an executor sends its credential (InitializeRequest.credential)
# with every SchedulerCallback and Blobs request (engine.scheduler.access).
CREDENTIAL_METADATA_KEY = "engine-credential"

# A value larger than this travels as a blob reference, never inline.
INLINE_MAX_BYTES = 1024 * 1024
# Values larger than SMALL_VALUE_BYTES that are inline in one message add up to at most this
# much; the rest go as blob references.
MESSAGE_INLINE_BUDGET = 8 * 1024 * 1024
# Values this small always travel inline: spilling one would cost a file and an fsync to save a
# few bytes (the store keeps them in their rows, engine.store.sqlite.INLINE_LIMIT).
SMALL_VALUE_BYTES = 64 * 1024
# A call's result adopted from an exchange directory before it was hashed is named by a token
# with this prefix until its call is checkpointed (`engine.scheduler.exchange`, deferred adoption):
# never a digest, never in the store.
DEFERRED_PREFIX = "adopting-"
# Blobs stream in chunks of this size.
BLOB_CHUNK_BYTES = 1024 * 1024
# No large value rides in a message (above), but a very wide one — Future.wait on 100,000
# futures, each with a small value — still may be big: room for it, below gRPC's 2 GiB ceiling.
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # A peer that vanishes (a node lost, a cable cut) sends nothing: keepalive pings break the
    # connection within ~10 s instead of waiting for each call's timeout (docs/swarm.md).
    ("grpc.keepalive_time_ms", 5_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # How long a ping may go unanswered (default 60 s); the keepalive timeout does not bound it
    # when the peer's host still acknowledges the bytes. Measured with grpcio 1.85: a stopped
    # (SIGSTOP) peer was noticed after 64 s without this, after 9 s with it.
    ("grpc.http2.ping_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Server side: accept those pings on long, quiet calls rather than closing the connection.
    ("grpc.http2.min_ping_interval_without_data_ms", 4_000),
    ("grpc.http2.max_ping_strikes", 0),
    # Each stream's initial HTTP/2 flow-control window (a gRPC maintainer on grpc-io, 2017:
    # GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES "tunes the initial window size"; the default is
    # 64 KiB, which the transport's BDP estimate only grows after some round trips). A thousand
    # calls dispatched to one executor at once (the research tree's leaves, ~300 bytes each)
    # waited for window updates: dispatch to the executor's read took a median 421 ms, 4-7 ms
    # with 4 MiB (benchmarks/README.md, "Research tree, round three").
    ("grpc.http2.lookahead_bytes", 4 * 1024 * 1024),
]

KIND_NAMES = {
    pb.NODE_KIND_CALL: "call",
    pb.NODE_KIND_MAP: "map",
    pb.NODE_KIND_REDUCE: "reduce",
    pb.NODE_KIND_APPLICATION: "application",
    pb.NODE_KIND_SIGNAL: "signal",
}
KIND_VALUES = {v: k for k, v in KIND_NAMES.items()}

FAILURE_NAMES = {
    pb.FAILURE_KIND_FUNCTION_ERROR: "function_error",
    pb.FAILURE_KIND_REQUEST_ERROR: "request_error",
    pb.FAILURE_KIND_TIMEOUT: "timeout",
    pb.FAILURE_KIND_OUT_OF_MEMORY: "out_of_memory",
    pb.FAILURE_KIND_EXECUTOR_LOST: "executor_lost",
    pb.FAILURE_KIND_DEPENDENCY_FAILED: "dependency_failed",
    pb.FAILURE_KIND_CANCELLED: "cancelled",
    pb.FAILURE_KIND_INTERNAL: "internal",
    pb.FAILURE_KIND_BUDGET_EXCEEDED: "budget_exceeded",
    pb.FAILURE_KIND_SIGNAL_TIMEOUT: "signal_timeout",
}

_ERROR_TYPES: dict[int, type[errors.RequestFailed]] = {
    pb.FAILURE_KIND_FUNCTION_ERROR: errors.FunctionError,
    pb.FAILURE_KIND_REQUEST_ERROR: errors.RequestError,
    pb.FAILURE_KIND_TIMEOUT: errors.FunctionTimeout,
    pb.FAILURE_KIND_OUT_OF_MEMORY: errors.OutOfMemory,
    pb.FAILURE_KIND_EXECUTOR_LOST: errors.ExecutorLost,
    pb.FAILURE_KIND_DEPENDENCY_FAILED: errors.DependencyFailed,
    pb.FAILURE_KIND_CANCELLED: errors.RequestCancelled,
    pb.FAILURE_KIND_INTERNAL: errors.FunctionError,
    pb.FAILURE_KIND_BUDGET_EXCEEDED: errors.BudgetExceeded,
    pb.FAILURE_KIND_SIGNAL_TIMEOUT: errors.SignalTimeout,
}

# Failures that a retry may cure.
RETRYABLE = {
    pb.FAILURE_KIND_FUNCTION_ERROR,
    pb.FAILURE_KIND_TIMEOUT,
    pb.FAILURE_KIND_OUT_OF_MEMORY,
    pb.FAILURE_KIND_EXECUTOR_LOST,
}


# The type name of a call failure that also condemns its executor: the constructor of the
# method's `@cls()` class raised or overran `init_timeout` there (`engine.executor.server`), so
# the executor has no instance to serve with. The scheduler retires that executor at once, and a
# retry starts a fresh one; reusing it would fail every later call the same way.
CLASS_INIT_FAILED = "ClassInitError"


def retires_executor(response: pb.RunResponse) -> bool:
    """Whether the executor that sent `response` must serve no further call."""
    return response.WhichOneof("outcome") == "failure" and response.failure.type_name == CLASS_INIT_FAILED

def python_version() -> str:
    return ".".join(str(p) for p in sys.version_info[:3])


# Builtin scalars pickle to the same bytes with the standard pickler, which skips building a
# cloudpickle Pickler: five to ten times cheaper, on every argument and result of a fan-out.
_PLAIN_TYPES = frozenset((int, float, str, bytes, bool, type(None)))


def dumps(value: Any) -> bytes:
    if type(value) in _PLAIN_TYPES:
        return pickle.dumps(value, protocol=5)
    return cloudpickle.dumps(value, protocol=5)


def loads(data: bytes | memoryview) -> Any:
    return cloudpickle.loads(data)


def args_digest(arguments: pb.Arguments) -> str:
    """A call's arguments, fingerprinted: SHA-256, as in every checkpoint a resume compares."""
    return hashlib.sha256(arguments.SerializeToString(deterministic=True)).hexdigest()[:32]


# --- payloads and blobs ------------------------------------------------------------------


class BlobStore(Protocol):
    """Where values too large for a message go, each under its content address
    (`engine.wire.content`)."""

    def put_blob(self, data: bytes) -> str: ...

    def get_blob(self, digest: str) -> bytes | memoryview: ...


class PayloadEncoder:
    """Payloads for one message: inline while the value is small and the message has room,
    otherwise put in `blobs` and sent by digest. Values of at most SMALL_VALUE_BYTES are always
    inline and do not use the room."""

    def __init__(self, blobs: BlobStore, budget: int = MESSAGE_INLINE_BUDGET) -> None:
        self.blobs = blobs
        self.room = budget

    def data(self, data: bytes) -> pb.Payload:
        if len(data) <= SMALL_VALUE_BYTES:
            return pb.Payload(data=data)
        if len(data) <= INLINE_MAX_BYTES and len(data) <= self.room:
            self.room -= len(data)
            return pb.Payload(data=data)
        return pb.Payload(blob=self.blobs.put_blob(data), size=len(data))

    def value(self, value: Any) -> pb.Payload:
        return self.data(dumps(value))

    def reference(self, blob: str, size: int, read: Any) -> pb.Payload:
        """A value already held as blob `blob`: inline when it fits (`read()` gives its bytes),
        else the reference itself, with no copy."""
        if size <= SMALL_VALUE_BYTES or (size <= INLINE_MAX_BYTES and size <= self.room):
            return self.data(read())
        return pb.Payload(blob=blob, size=size)


def payload_bytes(payload: pb.Payload, blobs: BlobStore) -> bytes | memoryview:
    """The pickled bytes of a payload, fetched from `blobs` when it is a reference (an
    executor's blob may come mapped from its exchange directory: a read-only view, no copy)."""
    if payload.blob:
        return blobs.get_blob(payload.blob)
    return payload.data


def load_payload(payload: pb.Payload, blobs: BlobStore) -> Any:
    return loads(payload_bytes(payload, blobs))


# --- failures ----------------------------------------------------------------------------


def failure_from_exception(
    exc: BaseException, *, function: str, call_id: str, kind: pb.FailureKind | None = None
) -> pb.Failure:
    propagated = getattr(exc, "_engine_failure", None)
    if propagated is not None and kind is None:
        return propagated  # type: ignore[no-any-return]
    if kind is None:
        kind = (
            pb.FAILURE_KIND_REQUEST_ERROR
            if isinstance(exc, errors.RequestError)
            else pb.FAILURE_KIND_FUNCTION_ERROR
        )
    failure = pb.Failure(
        kind=kind,
        type_name=type(exc).__name__,
        message=str(exc),
        traceback="".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        function=function,
        call_id=call_id,
    )
    try:
        failure.exception.data = dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable exception still has type, message, traceback
        pass
    return failure


def make_failure(kind: pb.FailureKind, message: str, *, function: str, call_id: str, type_name: str = "") -> pb.Failure:
    return pb.Failure(
        kind=kind,
        type_name=type_name or _ERROR_TYPES.get(kind, errors.FunctionError).__name__,
        message=message,
        function=function,
        call_id=call_id,
    )


def describe(failure: pb.Failure) -> str:
    """One line: what failed and why."""
    what = f"{failure.type_name}: {failure.message}" if failure.type_name else failure.message
    if failure.kind == pb.FAILURE_KIND_FUNCTION_ERROR:
        return f"function {failure.function} raised {what}"
    return what


def exception_from_failure(failure: pb.Failure, run_id: str | None = None) -> errors.RequestFailed:
    """The exception a caller (a parent call, or the user of `Request.output()`) receives."""
    cls = _ERROR_TYPES.get(failure.kind, errors.FunctionError)
    if failure.kind == pb.FAILURE_KIND_REQUEST_ERROR:
        message = failure.message
    else:
        message = describe(failure)
    exc = cls(
        message,
        run_id=run_id,
        function=failure.function or None,
        call_id=failure.call_id or None,
        traceback=failure.traceback or None,
    )
    if failure.kind == pb.FAILURE_KIND_BUDGET_EXCEEDED and failure.HasField("exception"):
        try:
            crossed = loads(failure.exception.data)
        except Exception:  # noqa: BLE001 - limit and value stay unknown; the message names them
            crossed = None
        if isinstance(crossed, errors.BudgetExceeded):
            exc.limit, exc.value = crossed.limit, crossed.value  # type: ignore[attr-defined]
    # Kept so that a parent which lets this exception escape reports the child's failure, root
    # cause and all, rather than wrapping it in one of its own.
    exc._engine_failure = failure  # type: ignore[attr-defined]
    if failure.HasField("exception") and failure.kind == pb.FAILURE_KIND_FUNCTION_ERROR:
        try:
            exc.__cause__ = loads(failure.exception.data)
        except Exception:  # noqa: BLE001 - the cause's class may not exist on this side
            pass
    return exc


def failure_kind_name(kind: pb.FailureKind) -> str:
    return FAILURE_NAMES.get(kind, "unknown")


# --- validation --------------------------------------------------------------------------


class InvalidMessage(ValueError):
    """An inbound message that must not create state."""


def validate_spec(spec: pb.FutureSpec) -> None:
    if not spec.id:
        raise InvalidMessage("future without id")
    if spec.kind not in KIND_NAMES:
        raise InvalidMessage(f"future {spec.id}: unknown kind {spec.kind}")
    if not spec.function:
        raise InvalidMessage(f"future {spec.id}: no function")
    if spec.kind in (pb.NODE_KIND_MAP, pb.NODE_KIND_REDUCE) and not 1 <= len(spec.arguments.args) <= 2:
        raise InvalidMessage(f"future {spec.id}: map/reduce takes items and an optional initial")
    if spec.kind == pb.NODE_KIND_SIGNAL:
        if spec.arguments.args or spec.arguments.kwargs:
            raise InvalidMessage(f"future {spec.id}: a signal takes no arguments")
        if not valid_signal_name(spec.function):
            raise InvalidMessage(f"future {spec.id}: bad signal name {spec.function[:80]!r}")
        if spec.signal.HasField("timeout") and not (0 < spec.signal.timeout < float("inf")):
            raise InvalidMessage(f"future {spec.id}: a signal's timeout must be a positive number")
    elif spec.HasField("signal"):
        raise InvalidMessage(f"future {spec.id}: signal options on a {KIND_NAMES[spec.kind]} future")


def leaves(arguments: pb.Arguments) -> list[pb.Arg]:
    """Every value and reference in `arguments` (lists opened), in order."""
    out: list[pb.Arg] = []
    _leaves(arguments.args, out)
    for key in sorted(arguments.kwargs):
        _leaves((arguments.kwargs[key],), out)
    return out


def _leaves(args: Iterable[pb.Arg], out: list[pb.Arg]) -> None:
    # A plain loop, not generators: a fan-in's arguments are a hundred thousand leaves.
    for arg in args:
        if arg.WhichOneof("kind") == "list":
            _leaves(arg.list.items, out)
        else:
            out.append(arg)


def refs(arguments: pb.Arguments) -> list[str]:
    """Every call id referenced by `arguments`, in order."""
    return [arg.ref for arg in leaves(arguments) if arg.WhichOneof("kind") == "ref"]
