"""Server benchmark: the smallest application, one call that returns at once.

`server_bench.py` times POST → result for it (the server's own overhead: admission, the durable
queue, the run's start, one dispatch to a warm executor, the checkpoint, the poll) and how many
submissions per second the server accepts while such runs execute.
"""

from engine import application, function


@application()
@function()
def one(x: int) -> int:
    return x + 1
