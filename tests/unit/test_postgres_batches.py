"""How the PostgreSQL store groups one transaction's writes into statements
(`engine.store.postgres.batched`): interleaved writes of different calls become one statement per
kind, each call's own writes keep their order, and any other write keeps its place."""

from __future__ import annotations

from typing import Any

from engine.store.base import _INSERT_CALL
from engine.store.postgres import as_one_statement, batched

RUNNING = "UPDATE calls SET status = 'running', attempts = ?, executions = executions + 1, started_at = ? WHERE call_id = ?"
DONE = "UPDATE calls SET status = ?, result = ?, ended_at = ? WHERE call_id = ?"
RUN = "UPDATE runs SET status = ? WHERE run_id = ?"


def insert(call_id: str) -> tuple[str, str, list[Any]]:
    return ("r", _INSERT_CALL, [call_id] + [None] * (_INSERT_CALL.count("?") - 1))


def running(call_id: str) -> tuple[str, str, tuple[Any, ...]]:
    return ("r", RUNNING, (1, 0.0, call_id))


def done(call_id: str) -> tuple[str, str, tuple[Any, ...]]:
    return ("r", DONE, ("succeeded", b"x", 1.0, call_id))


def order_of(groups: list[tuple[str, list[Any]]], call_id: str) -> list[str]:
    """The statements that touch `call_id`, in the order they run."""
    names = {_INSERT_CALL: "insert", RUNNING: "running", DONE: "done", RUN: "run"}
    return [names[sql] for sql, rows in groups for row in rows
            if (row[0] if sql == _INSERT_CALL else row[-1]) == call_id]


def test_interleaved_writes_of_many_calls_become_one_statement_per_kind() -> None:
    # A fan-out's turn: each call dispatched, then the one before it finished, alternately.
    writes = []
    for i in range(100):
        writes.append(running(f"c{i}"))
        if i:
            writes.append(done(f"c{i - 1}"))
    groups = batched(writes)
    assert [(sql, len(rows)) for sql, rows in groups] == [(RUNNING, 100), (DONE, 99)]
    for sql, rows in groups:
        assert as_one_statement(sql, rows) is not None  # each group is one statement


def test_each_calls_writes_keep_their_order() -> None:
    writes = [insert("a"), running("a"), insert("b"), done("a"), running("b"), insert("c"), done("b")]
    groups = batched(writes)
    assert order_of(groups, "a") == ["insert", "running", "done"]
    assert order_of(groups, "b") == ["insert", "running", "done"]
    assert order_of(groups, "c") == ["insert"]
    # Three layers, one statement of each kind in each: inserts, then dispatches, then results.
    assert [sql for sql, _ in groups] == [_INSERT_CALL, RUNNING, DONE]
    for sql, rows in groups:
        ids = [row[0] if sql == _INSERT_CALL else row[-1] for row in rows]
        assert len(ids) == len(set(ids))  # no call twice in one statement


def test_other_writes_keep_their_place() -> None:
    writes = [running("a"), done("b"), ("r", RUN, ("failed", "r")), done("a"), running("c")]
    groups = batched(writes)
    assert [sql for sql, _ in groups] == [RUNNING, DONE, RUN, DONE, RUNNING]
    assert order_of(groups, "a") == ["running", "done"]
