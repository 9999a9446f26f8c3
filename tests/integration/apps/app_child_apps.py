"""One application calling another inside its run (`run_remote_application` in a function): the
call is a child of the caller in the run's graph, with a deterministic id, so a retried caller
gets the same child and reuses its checkpoint."""

from __future__ import annotations

import os

from sidefx import record

from engine import Retries, application, function, run_remote_application


@function()
def shout(text: str, log: str) -> str:
    record(log, "shout", text)
    return text.upper()


@application()
@function()
def shouter(text: str, log: str) -> str:
    record(log, "shouter", text)
    return shout(text, log) + "!"


@application()
@function(retries=Retries(max_retries=1, initial_delay=0.05))
def caller(n: int, log: str, flag: str) -> list[str]:
    record(log, "caller")
    out = [run_remote_application(shouter, f"hi {i}", log).output() for i in range(n)]
    out.append(run_remote_application("shouter", "by name", log).output())
    if os.path.exists(flag):  # fails once, after its children finished: the retry reuses them
        os.remove(flag)
        raise RuntimeError("the caller fails once")
    return out


@application()
@function()
def calls_unknown(x: int) -> str:
    try:
        run_remote_application("no_such_app", x)
    except Exception as exc:  # noqa: BLE001 - what the function sees is the point
        return f"{type(exc).__name__}: {exc}"
    return "no error"
