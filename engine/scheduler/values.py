"""Argument and result values, as the scheduler reads them and passes them on.

A call's value is kept in one of two forms: inline bytes (`CallState.result`, small values) or a
blob of the store named by its digest (`CallState.result_digest`). A value handed on before it
is stored (`engine.scheduler.exchange.Deferred`) carries a token in place of the digest until
its call is checkpointed. This module turns those into what a message carries:

- `resolve_arguments`: the arguments a call is sent with, each reference to another call
  replaced by that call's value (the dispatcher builds every `RunRequest` with it);
- `result_payload`: a finished call's value for an `AwaitResponse` or an argument;
- `result_bytes`, `items`: a value read into the scheduler, for the map/reduce it expands and
  the lists it collects;
- `spill_large_values`: a run's input, its large values put in the blob store.

Invariant:

- **Large values move by reference.** A result stored as a blob is handed on as its digest
  (`wire.PayloadEncoder.reference`), never read into the scheduler to be copied into a message;
  a deferred one as its token, with its size. Only a map/reduce's input and a map's collected
  list are read (`items`, `result_bytes`): the scheduler must see their items.
"""

from __future__ import annotations

from engine import wire
from engine.scheduler.access import Access
from engine.scheduler.state import CallState, RunState
from engine.store import Store
from engine.wire.v1 import engine_pb2 as pb


class Values:
    """Reads and passes on the values of one store's calls. `access.deferred` holds the values
    handed on before they are stored (read when used: the scheduler may replace the mapping)."""

    def __init__(self, store: Store, access: Access) -> None:
        self.store = store
        self.access = access

    def result_bytes(self, call: CallState) -> bytes:
        if call.result is not None:
            return call.result
        if call.result_digest is not None:
            return self.store.get_blob(call.result_digest)
        raise KeyError(f"call {call.id} has no result")

    def result_payload(self, call: CallState, encoder: wire.PayloadEncoder) -> pb.Payload:
        """A finished call's value for a message: inline, or its blob by reference."""
        if call.result is not None:
            return encoder.data(call.result)
        digest = call.result_digest
        if digest is None:
            raise KeyError(f"call {call.id} has no result")
        if digest.startswith(wire.DEFERRED_PREFIX):  # handed on before it is stored
            return pb.Payload(blob=digest, size=self.access.deferred[digest].size)
        return encoder.reference(digest, self.store.blob_size(digest), lambda: self.store.get_blob(digest))

    def items(self, run: RunState, arg: pb.Arg) -> list[pb.Arg]:
        """The items of a map/reduce's input list, each as one call's argument."""
        which = arg.WhichOneof("kind")
        if which == "list":
            return list(arg.list.items)
        data: bytes | memoryview
        if which == "ref":
            data = self.result_bytes(run.calls[arg.ref])
        else:
            data = wire.payload_bytes(arg.value, self.store)
        value = wire.loads(data)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"map/reduce input must be a list, got {type(value).__name__}")
        # Each item becomes one call's argument: a large item is stored once, as a blob.
        return [pb.Arg(value=wire.PayloadEncoder(self.store).value(v)) for v in value]

    def spill_large_values(self, arguments: pb.Arguments) -> None:
        """Put the large inline values of `arguments` (a run's input) in the blob store."""
        encoder = wire.PayloadEncoder(self.store)
        for arg in wire.leaves(arguments):
            if arg.WhichOneof("kind") == "value" and not arg.value.blob:
                arg.value.CopyFrom(encoder.data(arg.value.data))

    def resolve_arguments(self, call: CallState) -> pb.Arguments:
        """`call`'s arguments with every reference replaced by its call's value (every one has a
        value: the call is ready). Without references, the spec's own message."""
        src = call.spec.arguments
        if not call.has_refs:
            return src
        calls = call.run.calls
        encoder = wire.PayloadEncoder(self.store)
        small = wire.SMALL_VALUE_BYTES

        # Written into one new message in place: a fan-in has a hundred thousand arguments, and
        # building each as its own message to be copied in costs several times more.
        def fill(dst: pb.Arg, arg: pb.Arg) -> None:
            which = arg.WhichOneof("kind")
            if which == "ref":
                dep = calls[arg.ref]
                if dep.result and len(dep.result) <= small:
                    dst.value.data = dep.result  # what `encoder.data` gives, without a copy
                else:
                    dst.value.CopyFrom(self.result_payload(dep, encoder))
            elif which == "list":
                dst.list.SetInParent()
                dst.list.is_tuple = arg.list.is_tuple
                add = dst.list.items.add
                for item in arg.list.items:
                    fill(add(), item)
            else:
                dst.CopyFrom(arg)

        out = pb.Arguments()
        add = out.args.add
        for a in src.args:
            fill(add(), a)
        for key, value in src.kwargs.items():
            fill(out.kwargs[key], value)
        return out
