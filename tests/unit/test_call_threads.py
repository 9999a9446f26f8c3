"""The threads an executor runs side-by-side calls on (`engine.executor.server._CallThreads`):
one per call running, started without holding up the caller, kept for the next calls. The calls of a real
executor are in tests/integration/test_engine_graph.py."""

from __future__ import annotations

import multiprocessing
import queue
import threading

from engine.executor.server import _CallThreads


def test_a_thread_per_running_call_then_the_same_threads_for_the_next_ones() -> None:
    ran: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()
    together = threading.Barrier(5, timeout=10)  # broken unless five calls run at once

    def run(request: int) -> None:
        together.wait()
        ran.put((request, threading.get_ident()))

    threads = _CallThreads(8, run)  # type: ignore[arg-type]
    for i in range(5):
        threads.submit(i)  # type: ignore[arg-type]
    first = [ran.get(timeout=10) for _ in range(5)]
    assert sorted(i for i, _ in first) == [0, 1, 2, 3, 4]
    assert threads.threads == 5
    assert len({ident for _, ident in first}) == 5

    # Each thread hands in its token once its call is done: the next wave waits for the five.
    for _ in range(200):
        if threads.idle.qsize() == 5:
            break
        threading.Event().wait(0.05)
    together.reset()
    for i in range(5, 10):
        threads.submit(i)  # type: ignore[arg-type]
    second = [ran.get(timeout=10) for _ in range(5)]
    assert sorted(i for i, _ in second) == [5, 6, 7, 8, 9]
    assert threads.threads == 5  # no new thread: the idle ones took the calls
    assert {ident for _, ident in second} == {ident for _, ident in first}
    threads.close()


def test_never_more_threads_than_the_limit_and_a_queued_call_waits_for_one() -> None:
    release = threading.Event()
    done: queue.SimpleQueue[int] = queue.SimpleQueue()

    def run(request: int) -> None:
        release.wait(10)
        done.put(request)

    threads = _CallThreads(2, run)  # type: ignore[arg-type]
    for i in range(3):
        threads.submit(i)  # type: ignore[arg-type]
    assert threads.threads == 2
    release.set()
    assert sorted(done.get(timeout=10) for _ in range(3)) == [0, 1, 2]
    threads.close()


def test_threads_started_ahead_wait_for_the_calls_and_take_them() -> None:
    together = threading.Barrier(6, timeout=10)  # broken unless six calls run at once
    ran: queue.SimpleQueue[int] = queue.SimpleQueue()

    def run(request: int) -> None:
        together.wait()
        ran.put(threading.get_ident())

    before = set(threading.enumerate())

    def new_call_threads() -> set[threading.Thread]:
        return {t for t in set(threading.enumerate()) - before if t.name.startswith("call-")}

    threads = _CallThreads(8, run, ahead=6)  # type: ignore[arg-type]
    for _ in range(200):  # started with no call asking: each hands in its idle token
        if threads.idle.qsize() == 6:
            break
        threading.Event().wait(0.05)
    assert threads.idle.qsize() == 6
    ahead = new_call_threads()
    assert len(ahead) == 6
    for i in range(6):
        threads.submit(i)  # type: ignore[arg-type]
    idents = {ran.get(timeout=10) for _ in range(6)}
    assert idents == {t.ident for t in ahead}  # the six started ahead took them
    assert threads.threads == 0 and new_call_threads() == ahead  # and none was asked for
    threads.close()
    for t in ahead:
        t.join(10)
        assert not t.is_alive()


def test_close_ends_the_threads() -> None:
    started = threading.Event()
    threads = _CallThreads(4, lambda request: started.set())  # type: ignore[arg-type,misc]
    before = threading.active_count()
    threads.submit(1)  # type: ignore[arg-type]
    assert started.wait(10)
    threads.close()
    for _ in range(100):  # the thread takes its `None` and returns
        if threads.jobs.qsize() == 0:
            break
        threading.Event().wait(0.05)
    assert threads.jobs.qsize() == 0
    assert threading.active_count() <= before + 1  # (a dummy thread is listed until collected)


def _child() -> None:
    pass


def test_a_process_forked_by_a_call_ends_as_it_would_from_any_thread() -> None:
    # From a thread that `threading` did not start, a `multiprocessing` child that ends well
    # exits with 1 (Python 3.11): the calls' threads are `threading.Thread`s.
    codes: queue.SimpleQueue[int | None] = queue.SimpleQueue()

    def run(request: int) -> None:
        assert threading.current_thread().name.startswith("call-")
        child = multiprocessing.get_context("fork").Process(target=_child)
        child.start()
        child.join(10)
        codes.put(child.exitcode)

    threads = _CallThreads(2, run)  # type: ignore[arg-type]
    threads.submit(1)  # type: ignore[arg-type]
    assert codes.get(timeout=20) == 0
    threads.close()
