"""The function executor: a gRPC server that runs calls of one function.

One executor serves one function of one application (code bundle). The scheduler starts it (as a
process or a container), sends `Initialize` once with the zipped project, then opens one `Calls`
stream (a blank executor of the warm pool, `engine.scheduler.warm`, has it opened first, and is
given its function by `Initialize` later; meanwhile it imports pydantic, `_warm_imports`) and
writes a `RunRequest` on it for every call routed here, up to the function's `concurrency` at
once (the calls dispatched together travel in one `RunRequests`); each `RunResponse` goes back on
the stream as its call finishes, batched with whatever other answers are ready then. The executor
keeps no state between calls beyond the imported code: every outcome goes back in the
`RunResponse`, and the scheduler checkpoints it. The one exception is the instance of a `@cls()`
class (`engine.sdk.stateful`): an executor of one of its methods builds it before its first call,
once, and serves every later call with it (`_Instance`).

A call's return value is either a value (pickled into the response), or a `Future` — a tail call:
its graph is encoded into the response and the call is over; the executor's slot is free at once.
Values too large to travel inline go to and come from the scheduler's Blobs service
(`engine.executor.blobs`), over the same channel as the callbacks. The call attempt's trace
context (`RunRequest.trace_context`) is current around the user's code, so that the spans it
makes nest under the attempt's span (`engine.tracing`; nothing happens without opentelemetry).

An executor never outlives its engine: it ends by itself, even mid-call, when its parent process
dies (process backend) or its `Calls` stream stays closed past a grace period
(`engine.executor.lifetime`).

Forking inside a call
---------------------
A call is any Python, and Python works around its GIL by forking: a `multiprocessing` pool (fork
or spawn), `os.fork`, a subprocess. gRPC's core is not fork-safe, and this process serves gRPC
from threads that a child of a fork does not have:

- By default gRPC's own fork handlers run, and in the child they restart its thread pools from a
  copy of the parent's state taken mid-flight: about one fork in four from a serving executor
  died with SIGSEGV before its first line of Python (grpcio 1.85; 110 of 400 forks).
- gRPC's fork support (`GRPC_ENABLE_FORK_SUPPORT=true`, with `GRPC_POLL_STRATEGY=poll` or
  `epoll1`; gRPC's doc/fork_support.md) is for clients only, servers are not supported (grpc
  issue 16001): with it, a serving process hung in its first fork.

So `python -m engine.executor` turns gRPC's fork handlers off (`GRPC_ENABLE_FORK_SUPPORT=false`,
set before grpc is imported, whatever the user's environment says; processes the call starts
inherit it): the child of a fork holds an inert copy of gRPC that it never touches, and the
executor goes on serving (0 crashes in 400 forks). The child must not touch it, and must not
run the executor's code either; `_after_fork_in_child` and `_exit_if_forked` see to that:

- the child gets the default SIGTERM and SIGINT handling back: the executor's handlers would
  only set a copy of its stop flag, and `Pool.terminate()` could not end a worker;
- its output goes to the executor's own output, as a subprocess's does (the call's log buffer
  it would write to is a copy that nobody reads);
- the SDK refuses to reach the scheduler from it (`ExecutorRuntime`: it would write into the
  parent's connection);
- a child that returns or raises out of the user's function ends there with `os._exit` (0, its
  `SystemExit` code, or 1 and the traceback), as `multiprocessing` ends its own, instead of
  answering the call a second time over the parent's gRPC connection.

A child has none of the executor's threads, so no lifetime watch of its own: it ends with the
executor, in its process group (process backend, `serve`) or its container (docker).

The other well-known way, running each call in a process that never touched gRPC (a zygote
forked before gRPC starts, or a worker behind a pipe), is as safe but puts a process hop on
every call and every Submit/Await, on the warm path whose latency is the engine's (about 1 ms a
call). Turning the handlers off costs nothing per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import itertools
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import traceback
import zipfile
from collections.abc import Callable, Iterator
from concurrent import futures as cf
from concurrent.futures import thread as cf_thread
from pathlib import Path
from typing import Any, NoReturn

import grpc

from engine import tracing, wire
from engine.errors import DeserializationError, SDKUsageError, SerializationError
from engine.executor import memory
from engine.executor.blobs import BlobClient, Staged
from engine.executor.lifetime import (
    BLANK_ENV,
    INIT_TIMEOUT_S,
    ORPHAN_TIMEOUT_ENV,
    Lifetime,
    parse_idle_trim,
    parse_orphan_timeout,
)
from engine.executor.runtime import ExecutorRuntime, GraphEncoder
from engine.sdk import runtime as sdk_runtime
from engine.sdk.function import Function, registered
from engine.sdk.future import Future, future_of_coroutine
from engine.sdk.stateful import construct
from engine.wire.v1 import engine_pb2 as pb
from engine.wire.v1 import engine_pb2_grpc as pb_grpc


class _CallOutput(threading.local):
    buffer: io.StringIO | None = None


_call_output = _CallOutput()


class _ThreadStream(io.TextIOBase):
    """sys.stdout/sys.stderr: text written by a call goes to that call's log buffer."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def write(self, text: str) -> int:
        buffer = _call_output.buffer
        if buffer is not None:
            return buffer.write(text)
        return self.original.write(text)  # type: ignore[no-any-return]

    def flush(self) -> None:
        if _call_output.buffer is None:
            self.original.flush()

    def isatty(self) -> bool:
        return False


def _unpack_code(code_zip: bytes, digest: str) -> Path:
    """Unpack the project into a fresh directory and make it read-only."""
    root = Path(tempfile.mkdtemp(prefix=f"engine-code-{digest[:12]}-"))
    with zipfile.ZipFile(io.BytesIO(code_zip)) as zf:
        for member in zf.namelist():
            target = (root / member).resolve()
            if not str(target).startswith(str(root.resolve())):
                raise SDKUsageError(f"code bundle entry escapes its directory: {member}")
        zf.extractall(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o555)
    os.chmod(root, 0o555)
    return root


#: A blank executor waits for a function this long before it uses the wait to import what
#: applications commonly import (`_warm_imports`): one taken at once is never kept waiting for
#: an import its function may not need.
WARM_IMPORTS_AFTER_S = 0.05


def _warm_imports() -> None:
    """What a blank executor imports while it waits for a function: pydantic's models, which
    most applications define (and the engine itself depends on). Importing pydantic and making
    the first model class take ~130 ms on this machine (benchmarks/README.md, issue 16), which a
    function's `Initialize` would otherwise spend before its first call; every later model class
    costs about a millisecond. Nothing else is imported: a blank executor pays for it in memory
    (about 8 MB), whatever its function turns out to be."""
    try:
        from pydantic import BaseModel
    except ImportError:  # an image without it: nothing to warm
        return

    class _Warm(BaseModel):  # the first model class imports the rest of pydantic
        x: int


class Executor(pb_grpc.FunctionExecutorServicer):
    def __init__(self, lifetime: Lifetime, idle_trim: float = memory.IDLE_TRIM_S) -> None:
        """`idle_trim`: seconds without a running call before freed memory goes back
        (`engine.executor.memory.Trim`)."""
        self.lifetime = lifetime
        self.pid = os.getpid()
        self.function: Function[..., Any] | None = None
        self.code_digest = ""
        self.code_dir: Path | None = None
        self.callback: pb_grpc.SchedulerCallbackStub | None = None
        self.blobs: BlobClient | None = None
        self.metadata: tuple[tuple[str, str], ...] = ()
        self._channel: grpc.Channel | None = None
        self._running = 0
        # Freed memory kept for the next call, given back when idle (engine.executor.memory).
        self.memory = memory.Trim(idle_trim)
        self.concurrency = 1
        self._lock = threading.Lock()
        self.instance: _Instance | None = None
        # Set as `Initialize` begins: a blank executor's warm imports (`_warm_up`) start only
        # before it, and `Initialize` waits for any under way (no two threads import at once).
        self._given = threading.Event()
        self._warming: threading.Thread | None = None

    # --- Initialize ------------------------------------------------------------------------

    def warm_up(self) -> None:
        """A blank executor's (started with `BLANK_ENV` set): the warm imports, on a thread of
        their own, unless it is given a function within `WARM_IMPORTS_AFTER_S`."""
        def run() -> None:
            if not self._given.wait(WARM_IMPORTS_AFTER_S):
                _warm_imports()

        self._warming = threading.Thread(target=run, name="warm-imports", daemon=True)
        self._warming.start()

    def Initialize(self, request: pb.InitializeRequest, context: grpc.ServicerContext) -> pb.InitializeResponse:  # noqa: N802
        self._given.set()
        warming = self._warming
        if warming is not None:
            warming.join()
        try:
            return self._initialize(request, context)
        finally:
            # Counted from the end, failed or not: a scheduler took this executor, and a slow
            # import must not use up the grace before it can open its stream.
            self.lifetime.initialized()

    def _initialize(self, request: pb.InitializeRequest, context: grpc.ServicerContext) -> pb.InitializeResponse:
        if request.protocol_version != wire.PROTOCOL_VERSION:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"protocol version {request.protocol_version} not supported "
                f"(this executor speaks {wire.PROTOCOL_VERSION}): rebuild the runtime image",
            )
        if not request.function or not request.module or not request.callback_address or not request.credential:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "function, module, callback_address and credential are required")
        with self._lock:
            try:
                if request.code_digest != self.code_digest:
                    self.code_dir = _unpack_code(request.code_zip, request.code_digest)
                    sys.path.insert(0, str(self.code_dir))
                    os.chdir(self.code_dir)
                    self.code_digest = request.code_digest
                __import__(request.module)
            except BaseException:  # noqa: BLE001 - report any import failure, with its traceback
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"importing {request.module} failed:\n{traceback.format_exc()}",
                )
            fn = registered(request.function, request.module)
            if fn is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"no @function() named {request.function!r} after importing {request.module}",
                )
            assert fn is not None  # context.abort raised otherwise
            if fn.cls is None and _looks_like_method(fn):
                context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"{fn.name} is a method: decorate class {fn.name.rpartition('.')[0]} with @cls()",
                )
            self.function = fn
            # After the user's import, so that a tracer provider its code set up is kept.
            tracing.executor_ready(fn.name)
            self.instance = _Instance(fn, self.pid) if fn.cls is not None else None
            self.concurrency = max(1, request.concurrency)
            if self._channel is not None:
                self._channel.close()
            self._channel = grpc.insecure_channel(request.callback_address, options=wire.GRPC_OPTIONS)
            self.callback = pb_grpc.SchedulerCallbackStub(self._channel)
            # This executor's own credential, sent with every callback and Blobs request: the
            # scheduler answers it only about the calls running here (engine.scheduler.access).
            self.metadata = ((wire.CREDENTIAL_METADATA_KEY, request.credential),)
            self.blobs = BlobClient(self._channel, self.metadata)
        return pb.InitializeResponse(python_version=wire.python_version())

    # --- Calls ---------------------------------------------------------------------------

    def Calls(self, request_iterator: Iterator[pb.RunRequests], context: grpc.ServicerContext) -> Iterator[pb.RunResponses]:  # noqa: N802
        """Run every request on a worker thread; answer as they finish, every answer ready at
        that moment in one message.

        A blank executor of the warm pool (`engine.scheduler.warm`) has its stream opened before
        `Initialize`, so that it is held (and ends with its engine) while it waits to be given
        a function: the function is read when the first requests arrive, which the scheduler
        sends only after `Initialize` has answered."""
        # The stream is the scheduler's hold on this executor: its end (the scheduler killed, the
        # connection lost) is seen here even while this thread is busy in a call.
        self.lifetime.stream_opened()
        if not context.add_callback(self.lifetime.stream_closed):
            self.lifetime.stream_closed()
        # Tells the scheduler that this executor holds the stream (a blank one counts as ready
        # for its warm pool only from here: `WarmPool._held`).
        context.send_initial_metadata(())
        requests = iter(request_iterator)
        first = next(requests, None)
        if first is None:
            return
        fn, stub = self.function, self.callback
        if fn is None or stub is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "Calls before Initialize")
        assert fn is not None
        request_iterator = itertools.chain([first], requests)
        if self.concurrency == 1:
            # The scheduler never sends a second call before the first is answered: run each on
            # this stream's own thread, with no hand-offs (the hot path of a chain of calls).
            for batch in request_iterator:
                yield pb.RunResponses(responses=[self._answer(fn, r) for r in batch.requests])
            return
        # Calls side by side, each on a thread of its own (`_CallThreads`): see
        # CALLS_SWITCH_INTERVAL_S for why the GIL changes hands less often here.
        sys.setswitchinterval(CALLS_SWITCH_INTERVAL_S)
        done: queue.SimpleQueue[pb.RunResponse | None] = queue.SimpleQueue()
        workers = _CallThreads(self.concurrency, lambda request: done.put(self._answer(fn, request)),
                               ahead=min(self.concurrency, CALL_THREADS_AHEAD))

        def read() -> None:
            try:
                for batch in request_iterator:
                    for request in batch.requests:
                        workers.submit(request)
            except Exception:  # noqa: BLE001 - the scheduler went away: stop answering
                pass
            finally:
                done.put(None)

        threading.Thread(target=read, name="calls-reader", daemon=True).start()
        try:
            ended = False
            while not ended:
                response = done.get()
                if response is None:
                    return
                answers = [response]
                while True:  # whatever else is ready goes in the same message
                    try:
                        more = done.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        ended = True
                        break
                    answers.append(more)
                yield pb.RunResponses(responses=answers)
        finally:
            workers.close()

    def _answer(self, fn: Function[..., Any], request: pb.RunRequest) -> pb.RunResponse:
        try:
            response = self.run_call(request)
        except BaseException as exc:  # noqa: BLE001 - never leave the scheduler waiting
            response = pb.RunResponse(failure=wire.failure_from_exception(
                exc, function=fn.name, call_id=request.call_id, kind=pb.FAILURE_KIND_INTERNAL))
        response.call_id = request.call_id
        return response

    def run_call(self, request: pb.RunRequest) -> pb.RunResponse:
        fn, stub, blobs = self.function, self.callback, self.blobs
        assert fn is not None and stub is not None and blobs is not None
        buffer = io.StringIO()
        _call_output.buffer = buffer
        runtime = ExecutorRuntime(stub, blobs, request.run_id, request.call_id, self.metadata)
        ctx = sdk_runtime.CallContext(runtime, request.run_id, request.call_id, fn.name)
        token = sdk_runtime.enter(ctx)
        with self._lock:
            self._running += 1
            sdk_runtime.set_process_default(ctx if self._running == 1 else None)
            self.memory.busy()
        # The call attempt's span is current around the user's code (engine.tracing).
        trace = tracing.enter_call(request.trace_context)
        try:
            response = self._run(fn, request, runtime)
        finally:
            tracing.leave_call(trace)
            with self._lock:
                self._running -= 1
                sdk_runtime.set_process_default(None)
                if self._running == 0:
                    self.memory.idle()
            sdk_runtime.leave(token)
            _call_output.buffer = None
        response.logs = _clip_logs(buffer.getvalue())
        _put_metrics(response, ctx.metrics)
        return response

    def _run(self, fn: Function[..., Any], request: pb.RunRequest, runtime: ExecutorRuntime) -> pb.RunResponse:
        def fail(exc: BaseException, kind: pb.FailureKind | None = None) -> pb.RunResponse:
            return pb.RunResponse(
                failure=wire.failure_from_exception(exc, function=fn.name, call_id=request.call_id, kind=kind)
            )

        try:
            args, kwargs = decode_arguments(request.arguments, runtime.blobs)
        except Exception as exc:  # noqa: BLE001
            return fail(DeserializationError(
                f"the arguments of {fn.name} could not be deserialised here: "
                f"{type(exc).__name__}: {exc}"), pb.FAILURE_KIND_INTERNAL)
        if self.instance is not None:
            instance, failure = self.instance.get(request.call_id)
            if failure is not None:
                return pb.RunResponse(failure=failure)
            args.insert(0, instance)
        try:
            if fn.is_async:
                result = asyncio.run(_call_async(fn, args, kwargs, self.pid))
            else:
                try:
                    result = fn.fn(*args, **kwargs)
                except BaseException as exc:
                    _exit_if_forked(self.pid, exc)
                    raise
                _exit_if_forked(self.pid, None)
        except Exception as exc:  # noqa: BLE001 - the user's exception is the call's outcome
            return fail(exc)

        blobs = self.blobs
        assert blobs is not None
        tail = result if isinstance(result, Future) else future_of_coroutine(result)
        if tail is not None:
            if asyncio.iscoroutine(result):
                result.close()
            try:
                encoder = GraphEncoder(runtime.blobs)
                encoder.add(tail)
            except Exception as exc:  # noqa: BLE001
                return fail(exc)
            return pb.RunResponse(tail_call=pb.TailCall(root_id=tail.id, futures=encoder.specs))
        try:
            # Into the exchange directory at once when large (engine.executor.blobs).
            data = blobs.dumps(result)
        except Exception as exc:  # noqa: BLE001
            return fail(SerializationError(
                f"{fn.name} returned a {type(result).__name__} that cannot be serialised: {exc}"
            ))
        if isinstance(data, Staged):
            return pb.RunResponse(value=blobs.adopt(data))
        return pb.RunResponse(value=wire.PayloadEncoder(runtime.blobs).data(data))

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:  # noqa: N802
        return pb.HealthResponse(running_calls=self._running)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        if self.code_dir is not None:
            for dirpath, _dirnames, _ in os.walk(self.code_dir):
                os.chmod(dirpath, 0o755)
            shutil.rmtree(self.code_dir, ignore_errors=True)


# The GIL's switch interval in an executor that runs calls side by side (Python's default is
# 5 ms). Every thread waiting for the GIL wakes up once per interval to ask for it: when a
# thousand calls of 200 ms end within a few milliseconds (the leaves of a tree), a thousand
# threads wait, and at 5 ms their wake-ups alone took more CPU than the calls (2 s of CPU for
# 1,000 calls in 1.3 s, against 0.3 s in 0.35 s at 50 ms: `benchmarks/README.md`, "Research
# tree, round two"). Threads that block (on I/O, a sleep, a queue) still hand the GIL on at once;
# only a call that computes keeps it up to 50 ms before another thread gets a turn.
CALLS_SWITCH_INTERVAL_S = 0.05

# Threads an executor starts for its calls before they are asked for (`_CallThreads`): the
# function's `concurrency`, up to this many; beyond, they start as calls arrive.
CALL_THREADS_AHEAD = 1024


class _CallThreads:
    """The threads that run one stream's calls: one per call running, started as calls arrive
    (up to `limit`, the function's concurrency) and kept for the next ones.

    `submit` never waits for a thread. `concurrent.futures.ThreadPoolExecutor` starts each
    thread in `submit`, with `threading.Thread.start`, which blocks until the new thread has
    run: a batch of 500 calls arriving at once (the leaves of a tree) kept the thread reading
    the stream for 500 hand-offs of the GIL one after another, each an OS wake-up on a loaded
    machine, before the last call of the batch was even queued. Here `submit` queues the call
    and, when no thread is idle, asks a thread of the pool's own (`spawner`) for one more; the
    reader goes on at once. They are `threading.Thread`s, not bare `_thread` ones: a process a
    call forks from a thread that `threading` did not start ends with exit code 1 instead of 0
    (`multiprocessing.Process`, Python 3.11). They end when the stream does (`close`).

    Starting a thread costs about 0.25 ms of CPU on this machine (1,000 threads: 255 ms, and
    16 MB): paid when a thousand calls arrive at once (the leaves of a tree), it put the last
    of them 410 ms after their arrival instead of 240. So the spawner also starts `ahead`
    threads before any call asks for them, one after another while nothing else is asked of
    it, as soon as the pool exists (the stream's first calls): by the time a fan-out's widest
    level arrives they wait for it."""

    def __init__(self, limit: int, run: Callable[[pb.RunRequest], None], ahead: int = 0) -> None:
        self.limit = limit
        self.ahead = min(ahead, limit)
        self.run = run
        self.jobs: queue.SimpleQueue[pb.RunRequest | None] = queue.SimpleQueue()
        # One token per thread that finished a call and waits for the next: taken by `submit`.
        # Queues rather than a lock and a count: a thousand calls that end together would all
        # contend for one lock.
        self.idle: queue.SimpleQueue[None] = queue.SimpleQueue()
        self.threads = 0  # threads asked for; only the thread that submits reads and changes it
        self.wanted: queue.SimpleQueue[bool] = queue.SimpleQueue()  # True: one more; False: stop
        self.spawner = threading.Thread(target=self._spawn, name="calls-spawner", daemon=True)
        self.spawner.start()

    def submit(self, request: pb.RunRequest) -> None:
        """Run `request` on an idle thread, or on a new one. Called from one thread only."""
        self.jobs.put(request)
        try:
            self.idle.get_nowait()  # that thread will take it
        except queue.Empty:
            if self.threads < self.limit:  # the scheduler sends at most `limit` calls at once
                self.threads += 1
                self.wanted.put(True)

    def _spawn(self) -> None:
        started = 0
        while True:
            try:
                # A thread asked for; else, until `ahead` are up, one more before it is asked for.
                more, spare = self.wanted.get(block=started >= self.ahead), False
            except queue.Empty:
                more, spare = True, True
            if not more:
                break
            if started < self.limit:
                started += 1
                threading.Thread(target=self._work, args=(spare,), name=f"call-{started}", daemon=True).start()
        for _ in range(started):  # each thread ends once it is idle
            self.jobs.put(None)

    def _work(self, spare: bool) -> None:
        if spare:
            self.idle.put(None)  # started ahead: idle from the start
        while True:
            request = self.jobs.get()
            if request is None:
                return
            self.run(request)
            self.idle.put(None)

    def close(self) -> None:
        """End the idle threads (and each busy one once its call is done), and the spawner."""
        self.wanted.put(False)


class _Instance:
    """The executor's instance of its method's `@cls()` class, built by the first call.

    The constructor runs once, on a thread of its own so that `init_timeout` can be kept: the
    first call (and any call that arrives meanwhile, with `concurrency` above 1) waits for it,
    and its output goes to that first call's logs. If it raises or overruns, this executor has
    nothing to serve with: the call fails with `wire.CLASS_INIT_FAILED` as its type, naming the
    class, with the constructor's traceback (or, on a timeout, where the constructor was), the
    scheduler retires the executor, and every call that still reaches it fails the same way.
    A constructor left running past its timeout cannot be stopped; it ends with the executor.
    """

    def __init__(self, fn: Function[..., Any], pid: int) -> None:
        assert fn.cls is not None and fn.config.init_timeout is not None
        self.fn = fn
        self.pid = pid
        self.klass = fn.cls
        self.timeout = fn.config.init_timeout
        self._lock = threading.Lock()
        self._built = False
        self._value: Any = None
        self._failure: pb.Failure | None = None

    def get(self, call_id: str) -> tuple[Any, pb.Failure | None]:
        with self._lock:
            if not self._built and self._failure is None:
                self._build(call_id)
            if self._failure is not None:
                failure = pb.Failure()
                failure.CopyFrom(self._failure)
                failure.call_id = call_id
                return None, failure
            return self._value, None

    def _build(self, call_id: str) -> None:
        name = self.klass.__qualname__
        done = threading.Event()
        outcome: list[Any] = []
        logs = _call_output.buffer

        def build() -> None:
            _call_output.buffer = logs
            try:
                try:
                    instance = construct(self.klass)
                except BaseException as exc:
                    _exit_if_forked(self.pid, exc)  # a process the constructor forked ends here
                    raise
                _exit_if_forked(self.pid, None)
                outcome.append(instance)
            except BaseException as exc:  # noqa: BLE001 - the constructor's failure is the call's
                outcome.append(exc)
            finally:
                done.set()

        thread = threading.Thread(target=build, name=f"{name}.__init__", daemon=True)
        thread.start()
        if not done.wait(self.timeout):
            frame = sys._current_frames().get(thread.ident or 0)
            failure = wire.make_failure(
                pb.FAILURE_KIND_TIMEOUT,
                f"{name}.__init__ did not finish within init_timeout={self.timeout:g} s (the "
                "constructor of a @cls() class runs once per executor, before its first call); "
                "this executor is replaced",
                function=self.fn.name, call_id=call_id, type_name=wire.CLASS_INIT_FAILED)
            if frame is not None:
                failure.traceback = "Where the constructor was:\n" + "".join(traceback.format_stack(frame))
            self._failure = failure
            return
        result = outcome[0]
        if isinstance(result, BaseException):
            failure = wire.failure_from_exception(result, function=self.fn.name, call_id=call_id)
            failure.type_name = wire.CLASS_INIT_FAILED
            failure.message = (
                f"{name}.__init__ raised {type(result).__name__}: {result} (the constructor of a "
                "@cls() class runs once per executor, before its first call); this executor is "
                "replaced")
            self._failure = failure
            return
        self._value = result
        self._built = True


def _looks_like_method(fn: Function[..., Any]) -> bool:
    """A `@function()` defined in a class body that never got `@cls()`."""
    if "." not in fn.name:
        return False
    params = list(inspect.signature(fn.fn).parameters)
    return bool(params) and params[0] == "self"


async def _call_async(fn: Function[..., Any], args: list[Any], kwargs: dict[str, Any], pid: int) -> Any:
    try:
        result = await fn.fn(*args, **kwargs)
    except BaseException as exc:
        _exit_if_forked(pid, exc)
        raise
    _exit_if_forked(pid, None)
    return result


def _exit_if_forked(pid: int, exc: BaseException | None) -> None:
    """Called as the user's function returns (`exc` None) or raises `exc`: in a process that
    the call forked (its pid is not the executor's `pid`) and that left the function without
    `os._exit`, end the process here, as `multiprocessing` ends its children. Above this frame
    is the executor's code, which would answer the call again over the parent's connection."""
    if os.getpid() == pid:
        return
    code = 0
    try:
        if isinstance(exc, SystemExit):
            if isinstance(exc.code, int):
                code = exc.code
            elif exc.code is not None:
                print(exc.code, file=sys.stderr)
                code = 1
        elif exc is not None:
            traceback.print_exception(exc)
            code = 1
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        os._exit(code)


def _after_fork_in_child(stdout: Any, stderr: Any) -> None:
    """`os.register_at_fork` hook: the child of a fork made by a call is a plain Python process
    (see "Forking inside a call" above)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.stdout, sys.stderr = stdout, stderr
    # The gRPC server's threads are not in the child, but `concurrent.futures` still lists them
    # and joins each at exit; the forking thread may be one of them (a call of a function with
    # concurrency 1 runs on one; others run on `_CallThreads`, which nothing joins), and joining
    # itself raises, so a `multiprocessing` child that ended well would exit with code 1.
    cf_thread._threads_queues.clear()  # type: ignore[attr-defined]  # a WeakKeyDictionary


def decode_arg(arg: pb.Arg, blobs: wire.BlobStore) -> Any:
    which = arg.WhichOneof("kind")
    if which == "value":
        return wire.load_payload(arg.value, blobs)
    if which == "list":
        items = [decode_arg(a, blobs) for a in arg.list.items]
        return tuple(items) if arg.list.is_tuple else items
    raise ValueError(f"unresolved argument {which}: the scheduler must resolve references")


def decode_arguments(arguments: pb.Arguments, blobs: wire.BlobStore) -> tuple[list[Any], dict[str, Any]]:
    return ([decode_arg(a, blobs) for a in arguments.args],
            {k: decode_arg(v, blobs) for k, v in arguments.kwargs.items()})


# What one call's output keeps: the end of it, where the error usually is.
MAX_LOG_CHARS = 1024 * 1024


def _put_metrics(response: pb.RunResponse, metrics: sdk_runtime.Metrics) -> None:
    """What the call recorded through RequestContext.metrics, sent with its outcome."""
    if not metrics.counters and not metrics.timers:
        return
    for name, value in metrics.counters.items():
        response.metrics.counters[name] = value
    for name, (count, total, low, high) in metrics.timers.items():
        response.metrics.timers[name].CopyFrom(
            pb.TimerStats(count=int(count), sum=total, min=low, max=high))


def _clip_logs(text: str) -> str:
    if len(text) <= MAX_LOG_CHARS:
        return text
    dropped = len(text) - MAX_LOG_CHARS
    return f"[engine: the first {dropped} characters of this call's output were dropped]\n" + text[-MAX_LOG_CHARS:]


def serve(listen: str, port_file: str | None = None, max_workers: int = 256,
          parent_pid: int | None = None, init_timeout: float = INIT_TIMEOUT_S,
          template_pid: int | None = None) -> NoReturn:
    """Serve until SIGTERM/SIGINT, or until the executor is left alone (`Lifetime`: with
    `parent_pid`, that parent process is gone (or, with `template_pid`, the template this
    process was forked from, or its parent); or its scheduler's stream stays closed past
    $ENGINE_EXECUTOR_ORPHAN_TIMEOUT; or nobody initialises it within `init_timeout` seconds).
    Writes the bound port to `port_file` once listening. Never returns: the process ends with
    `os._exit`, whatever calls are still running."""
    try:
        orphan_timeout = parse_orphan_timeout(os.environ.get(ORPHAN_TIMEOUT_ENV))
        idle_trim = parse_idle_trim(os.environ.get(memory.IDLE_TRIM_ENV))
    except ValueError as exc:
        raise SystemExit(f"engine executor: {exc}") from None
    sys.dont_write_bytecode = True
    original_stdout, original_stderr = sys.stdout, sys.stderr
    sys.stdout = _ThreadStream(sys.stdout)  # type: ignore[assignment]
    sys.stderr = _ThreadStream(sys.stderr)  # type: ignore[assignment]
    os.register_at_fork(after_in_child=lambda: _after_fork_in_child(original_stdout, original_stderr))
    lifetime = Lifetime(orphan_timeout=orphan_timeout, init_timeout=init_timeout, parent_pid=parent_pid,
                        template_pid=template_pid)
    executor = Executor(lifetime, idle_trim)
    blank = os.environ.pop(BLANK_ENV, None) == "1"  # not the function's to see
    memory.forget_defaults()
    server = grpc.server(cf.ThreadPoolExecutor(max_workers=max_workers), options=wire.GRPC_OPTIONS)
    pb_grpc.add_FunctionExecutorServicer_to_server(executor, server)
    port = server.add_insecure_port(listen)
    if port == 0:
        raise SystemExit(f"engine executor: cannot listen on {listen}")
    server.start()
    if port_file:
        tmp = f"{port_file}.tmp"
        with open(tmp, "w") as fh:
            fh.write(str(port))
        os.replace(tmp, port_file)
    if blank:
        executor.warm_up()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=lifetime.watch, args=(stop, executor.memory.tick), name="lifetime",
                     daemon=True).start()
    stop.wait()
    try:
        if lifetime.reason:
            print(f"engine executor: exiting: {lifetime.reason}", file=original_stderr, flush=True)
        server.stop(grace=0)
        executor.close()
    except BaseException:  # noqa: BLE001 - whatever fails here, the process must still end
        with contextlib.suppress(BaseException):
            traceback.print_exc(file=original_stderr)
    finally:
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                with contextlib.suppress(BaseException):
                    stream.flush()
        if parent_pid and os.getpgrp() == os.getpid():
            # A local executor leads its own process group (the process backend starts it so):
            # end the processes its calls started with it, as the backend's own stop would.
            os.killpg(os.getpid(), signal.SIGKILL)
        # A call's thread cannot be interrupted, and a normal exit would wait for it.
        os._exit(0)
