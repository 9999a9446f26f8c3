"""Large-value benchmark: `pass_on(mb)` hands one value of `mb` MiB from one function to another.

`pass_on` returns one tail call, `measure(make(mb, seed))`, so a run is 3 calls: the root, `make`,
which returns `mb` MiB of zeros (cheap to create, so the time is the transfer; distinct values
for distinct seeds), and `measure`, which receives it and returns its length. A value above 1 MiB never travels
inside a gRPC message: on one machine `make`'s executor pickles it into its exchange directory and
the scheduler adopts the file (`Blobs.Adopt`), `measure`'s executor maps it from its own exchange
directory at once, and meanwhile the scheduler hashes and fsyncs it, renames it to its digest in the
state directory and checkpoints `make` before it acts on `measure`'s outcome — every result is
checkpointed (engine/scheduler/exchange.py); across machines both stream. `run.py` runs sizes
1, 16 and 128 and also 0, the fixed cost of the same three calls (executor start-ups included),
so that mb / (duration(mb) - duration(0)) is the transfer's throughput.
"""

from engine import application, function


@function()
def make(mb: int, seed: int = 0) -> bytes:
    """`mb` MiB: the same zeros every time (seed 0), or, as the values of a real workload
    are, distinct ones: the seed's 8 bytes, then zeros (built by one concatenation, so its
    pages have been written, as a value a function computed has)."""
    if not seed:
        return bytes(mb * 1024 * 1024)
    return seed.to_bytes(8, "little") + bytes(mb * 1024 * 1024 - 8)


@function()
def measure(data: bytes) -> int:
    return len(data)


@application()
@function()
def pass_on(mb: int, seed: int = 0) -> int:
    return measure.future(make.future(mb, seed))  # type: ignore[return-value]
