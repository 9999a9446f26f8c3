"""Run and call statuses: one vocabulary, named once.

The members are `str`s equal to the strings the store keeps in its `status` columns
(`runs.status`, `calls.status`), so a member and the stored string compare equal, hash alike
and serialise to the same JSON: code can move to the enums one layer at a time while the
store, and what it already holds, stays as it is.

`docs/state-machine.md` draws the transitions between them.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10 (executors in older runtime images)
    class StrEnum(str, Enum):
        """`enum.StrEnum` of Python 3.11: members are their values, `str()` included."""

        def __str__(self) -> str:
            return str(self.value)


class RunStatus(StrEnum):
    """A run's status (`runs.status`)."""

    QUEUED = "queued"        # accepted (or resumed) and waiting for a server with room
    RUNNING = "running"      # driven by the holder of its lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CallStatus(StrEnum):
    """A call's status (`calls.status`). `queued` is the scheduler's, in memory only: the store
    says `pending` for a call waiting for an executor slot."""

    PENDING = "pending"      # waiting for its dependencies, or (in the store) for a slot
    QUEUED = "queued"        # ready, waiting for an executor slot (or a retry's back-off)
    RUNNING = "running"
    TAIL = "tail"            # returned a future: its value is its tail call's
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses a run does not leave by itself (`POST …/resume` queues a failed or cancelled one).
RUN_FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})
#: Statuses of a run that some process drives or will drive.
RUN_LIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
#: Statuses a call does not leave (within one run attempt).
CALL_FINAL = frozenset({CallStatus.SUCCEEDED, CallStatus.FAILED, CallStatus.CANCELLED})

__all__ = ["CALL_FINAL", "RUN_FINAL", "RUN_LIVE", "CallStatus", "RunStatus", "StrEnum"]
