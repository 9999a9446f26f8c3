"""What Linux's `/proc/PID/stat` says of a process: its state, its parent, its start time.

Standard library only: the executor (`engine.executor.lifetime`), its template
(`engine.executor.forkserver`) and the early start (`engine.backends.dockerapi`) use it before
anything heavy is imported. Where /proc is not available, every process reads as unknown.
"""

from __future__ import annotations


def stat_fields(pid: int) -> list[str] | None:
    """The fields of `/proc/PID/stat` from the third on (state, parent pid, ...; the start time
    in clock ticks since boot is index 19), or None when there is no such entry."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields if len(fields) > 19 else None


def alive(pid: int) -> bool:
    """A live process on this machine that is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def parent_of(pid: int) -> int | None:
    """The parent pid of process `pid`, or None when there is no such process."""
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def start_ticks(pid: int) -> str:
    """Start time of a process (clock ticks since boot), to tell a live process from one that
    reused its pid. Empty when unknown."""
    fields = stat_fields(pid)
    return fields[19] if fields else ""
