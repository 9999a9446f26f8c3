"""A fake backend for the scheduler's unit tests: executors that answer on the scheduler's own
event loop, with no process, container or socket behind them.

What is real: the whole `Scheduler` (the call graph and its readiness, pools and their scaling,
the fair queue, retries, budgets, signals, group commit), `ExecutorState` (the one `Calls`
stream per executor, answers matched to calls by id) and a SQLite store in the test's directory.
What is fake:

- `FakeBackend.start_executor` returns at once — or fails (`start_errors`), or waits until the
  test opens its gate (`gates`) — and records every executor it started and how many of each
  function were alive at once (`peak`).
- The executor at the other end of the channel. The seam is `Backend.channel(handle)`: the real
  backends return a gRPC channel to the executor's address; this one returns a `FakeChannel`
  whose `Initialize` and `Calls` a `FakeExecutor` serves in-process. Every message still goes
  through its protobuf serialisation, both ways.

A function's behaviour is a handler, `handler(call: FakeCall)`, plain or async. It returns the
call's value; or returns a `Node` — a tail call, sent with every future the node reaches, as the
SDK encodes one (`engine.executor.runtime.GraphEncoder`); or raises (a function error;
`engine.errors.RequestError` fails the request). A function without a handler *holds* each of
its calls until the test answers it (`FakeCall.answer`, `.fail`, `.tail`): the test decides
when each call ends, so nothing depends on timing. A handler that creates futures and blocks on
them — a function in `fut.result()` — uses `FakeCall.submit` and `FakeCall.wait`, which go to
the scheduler methods the callback service calls (`submit_children`, `await_children`) without
its gRPC hop and credential check (`engine.scheduler.access` is tested on its own).

`call()`, `map_()`, `reduce_()` and `signal()` build futures as a function creates them (`Node`s:
a `FutureSpec` and the nodes it depends on). Arguments may hold nodes anywhere in nested lists
and tuples, and as keyword arguments, which the wire protocol carries as references.

`FakeEngine` puts it together as `engine run` does: an application made of handlers and
function settings, a store, a started scheduler (callback server and lease keeper included),
and `until(condition)` to await a state instead of sleeping. `stored()` reads what the store has
*committed*, on a second connection: the scheduler acts on a state only after committing it
(`Scheduler._flush`), so once a test sees a call's outcome there, its dependants were released.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import shutil
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from engine import wire
from engine.app import AppSpec, FunctionSettings
from engine.backends.base import Backend, ExecutorHandle, ExecutorSpec, ExitInfo
from engine.config import EngineConfig
from engine.executor.server import decode_arguments
from engine.scheduler import Scheduler
from engine.scheduler.budgets import Budget
from engine.scheduler.state import RunState
from engine.sdk.function import FunctionConfig
from engine.sdk.retries import Retries
from engine.store import CallRow, RunRow, Store, open_store, store_url
from engine.wire.v1 import engine_pb2 as pb

Handler = Callable[["FakeCall"], Any]

# --- futures, as a function creates them ---------------------------------------------------------

_ids = itertools.count(1)


class Node:
    """A future: its `FutureSpec` and the nodes its arguments reference (its dependencies)."""

    def __init__(self, spec: pb.FutureSpec, deps: list[Node]) -> None:
        self.spec = spec
        self.deps = deps

    @property
    def id(self) -> str:
        return self.spec.id

    def __repr__(self) -> str:
        return f"<Node {self.spec.function} {self.id}>"


def _new_id(function: str, id: str | None) -> str:
    return id or f"{function}-{next(_ids)}"


def _has_node(value: Any) -> bool:
    return isinstance(value, Node) or (
        isinstance(value, (list, tuple)) and any(_has_node(v) for v in value))


def _arg(value: Any, deps: list[Node]) -> pb.Arg:
    if isinstance(value, Node):
        deps.append(value)
        return pb.Arg(ref=value.id)
    if isinstance(value, (list, tuple)) and _has_node(value):
        return pb.Arg(list=pb.ArgList(items=[_arg(v, deps) for v in value],
                                      is_tuple=isinstance(value, tuple)))
    return pb.Arg(value=pb.Payload(data=wire.dumps(value)))


def arguments(args: tuple[Any, ...], kwargs: dict[str, Any], deps: list[Node]) -> pb.Arguments:
    out = pb.Arguments(args=[_arg(v, deps) for v in args])
    for key in sorted(kwargs):
        out.kwargs[key].CopyFrom(_arg(kwargs[key], deps))
    return out


def call(function: str, *args: Any, id: str | None = None, **kwargs: Any) -> Node:
    """`function.future(*args, **kwargs)`."""
    deps: list[Node] = []
    spec = pb.FutureSpec(id=_new_id(function, id), kind=pb.NODE_KIND_CALL, function=function,
                         arguments=arguments(args, kwargs, deps))
    return Node(spec, deps)


def map_(function: str, items: Any, *, id: str | None = None) -> Node:
    """`function.future.map(items)`: `items` a list (of values and nodes) or a node of a list."""
    deps: list[Node] = []
    spec = pb.FutureSpec(id=_new_id(f"map-{function}", id), kind=pb.NODE_KIND_MAP, function=function,
                         arguments=arguments((items,), {}, deps))
    return Node(spec, deps)


def reduce_(function: str, items: Any, initial: Any, *, id: str | None = None) -> Node:
    """`function.future.reduce(items, initial)`."""
    deps: list[Node] = []
    spec = pb.FutureSpec(id=_new_id(f"reduce-{function}", id), kind=pb.NODE_KIND_REDUCE,
                         function=function, arguments=arguments((items, initial), {}, deps))
    return Node(spec, deps)


def signal(name: str, *, timeout: float | None = None, repeatable: bool = False,
           id: str | None = None) -> Node:
    """`engine.signal(name, timeout=..., repeatable=...)`."""
    spec = pb.FutureSpec(id=_new_id(f"signal-{name}", id), kind=pb.NODE_KIND_SIGNAL, function=name)
    spec.signal.repeatable = repeatable
    if timeout is not None:
        spec.signal.timeout = timeout
    return Node(spec, [])


def graph(*roots: Node) -> list[pb.FutureSpec]:
    """The specs `roots` reach, dependencies first, each once (the order a message needs)."""
    out: list[pb.FutureSpec] = []
    seen: set[str] = set()

    def visit(node: Node) -> None:
        if node.id in seen:
            return
        seen.add(node.id)
        for dep in node.deps:
            visit(dep)
        out.append(node.spec)

    for root in roots:
        visit(root)
    return out


# --- the executors -------------------------------------------------------------------------------


class FakeCall:
    """One call as an executor receives it: its decoded arguments, and how to answer."""

    def __init__(self, executor: FakeExecutor, request: pb.RunRequest, store: Store) -> None:
        self.executor = executor
        self.request = request
        self.function = executor.function
        self.run_id = request.run_id
        self.call_id = request.call_id
        self.attempt = request.attempt
        self.args, self.kwargs = decode_arguments(request.arguments, store)
        self.answered = False
        self.task: asyncio.Task[None] | None = None

    @property
    def arg(self) -> Any:
        """The first positional argument."""
        return self.args[0]

    def answer(self, value: Any) -> None:
        """Return `value`."""
        self._respond(pb.RunResponse(value=pb.Payload(data=wire.dumps(value))))

    def fail(self, exc: BaseException) -> None:
        """Raise `exc` (a RequestError fails the request; anything else is a function error)."""
        self._respond(pb.RunResponse(failure=wire.failure_from_exception(
            exc, function=self.function, call_id=self.call_id)))

    def tail(self, node: Node) -> None:
        """Return the future `node`: a tail call."""
        self._respond(pb.RunResponse(tail_call=pb.TailCall(root_id=node.id, futures=graph(node))))

    async def submit(self, *nodes: Node) -> None:
        """Start `nodes` (`fut.run()`); raises `BudgetRefused` as the callback service would
        answer RESOURCE_EXHAUSTED."""
        await self.executor.backend.engine.scheduler.submit_children(self.run_id, self.call_id, graph(*nodes))

    async def wait(self, *nodes: Node, return_when: int = pb.RETURN_WHEN_ALL_COMPLETED) -> dict[str, Any]:
        """Block until `nodes` are done (`Future.wait`): each finished node's id → its value, or
        the exception its failure raises in the caller."""
        scheduler = self.executor.backend.engine.scheduler
        response = await scheduler.await_children(pb.AwaitRequest(
            run_id=self.run_id, parent_call_id=self.call_id, ids=[n.id for n in nodes],
            return_when=return_when))  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        for outcome in response.outcomes:
            if outcome.WhichOneof("result") == "value":
                out[outcome.id] = wire.load_payload(outcome.value, scheduler.store)
            else:
                out[outcome.id] = wire.exception_from_failure(outcome.failure, self.run_id)
        return out

    def _respond(self, response: pb.RunResponse) -> None:
        if self.answered:
            raise AssertionError(f"{self} was answered twice")
        self.answered = True
        self.executor.respond(self, response)

    def __repr__(self) -> str:
        return f"<FakeCall {self.function} {self.call_id} attempt {self.attempt}>"


class FakeExecutor:
    """One executor: serves `Initialize` and the `Calls` stream for the scheduler, running each
    call's handler as a task on the loop (or holding the call when its function has none)."""

    def __init__(self, backend: FakeBackend, spec: ExecutorSpec, handle_id: str) -> None:
        self.backend = backend
        self.spec = spec
        self.function = spec.function
        self.handle = ExecutorHandle(id=handle_id, address=f"fake:{handle_id}", function=spec.function,
                                     ref=self)
        self.initialized: pb.InitializeRequest | None = None
        # Every call it received, in order; those not answered yet; the most it ran at once.
        self.calls: list[FakeCall] = []
        self.running: dict[str, FakeCall] = {}
        self.most_running = 0
        self.stopped = False
        self.exit: ExitInfo | None = None
        self._responses: asyncio.Queue[pb.RunResponse | None] = asyncio.Queue()

    @property
    def gone(self) -> bool:
        return self.stopped or self.exit is not None

    async def initialize(self, request: pb.InitializeRequest) -> pb.InitializeResponse:
        self.initialized = request
        return pb.InitializeResponse(python_version=self.backend.python_version)

    def receive(self, request: pb.RunRequest) -> None:
        if self.gone:
            raise RuntimeError("the call stream is closed")
        call = FakeCall(self, request, self.backend.engine.store)
        self.calls.append(call)
        self.running[call.call_id] = call
        self.most_running = max(self.most_running, len(self.running))
        self.backend.received.append(call)
        handler = self.backend.handlers.get(self.function)
        if handler is not None:
            call.task = asyncio.ensure_future(self._run(handler, call))

    async def _run(self, handler: Handler, call: FakeCall) -> None:
        try:
            result = handler(call)
            if inspect.isawaitable(result):
                result = await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the handler's exception is the call's outcome
            if not call.answered:
                call.fail(exc)
            return
        if call.answered or self.gone:
            return
        if isinstance(result, Node):
            call.tail(result)
        else:
            call.answer(result)

    def respond(self, call: FakeCall, response: pb.RunResponse) -> None:
        if self.gone or call.call_id not in self.running:
            return  # a dead executor answers nothing
        del self.running[call.call_id]
        response.call_id = call.call_id
        self._responses.put_nowait(pb.RunResponse.FromString(response.SerializeToString()))

    def kill(self, *, oom_killed: bool = False, exit_code: int = 137) -> None:
        """Die as a crashed process does: the stream ends, the calls on it get no answer, and
        the backend reports the exit (`exit_info`)."""
        self.exit = ExitInfo(exited=True, exit_code=exit_code, oom_killed=oom_killed,
                             detail="killed by the test")
        self._end()

    def stop(self) -> None:
        self.stopped = True
        self._end()

    def _end(self) -> None:
        for call in self.running.values():
            if call.task is not None:
                call.task.cancel()
        self.running.clear()
        self._responses.put_nowait(None)

    async def responses(self) -> AsyncIterator[pb.RunResponse]:
        while True:
            response = await self._responses.get()
            if response is None:
                return
            yield response

    def __repr__(self) -> str:
        return f"<FakeExecutor {self.handle.id}{' gone' if self.gone else ''}>"


class FakeStream:
    """The `Calls` stream as `ExecutorState` uses it: `write` a batch of requests (`RunRequests`),
    iterate the answers (each in a `RunResponses` of its own)."""

    def __init__(self, executor: FakeExecutor) -> None:
        self.executor = executor

    async def initial_metadata(self) -> tuple[()]:
        """The executor's answer to the stream's opening: it holds the stream from now on."""
        return ()

    def done(self) -> bool:
        return self.executor.gone

    async def write(self, batch: pb.RunRequests) -> None:
        for request in pb.RunRequests.FromString(batch.SerializeToString()).requests:
            self.executor.receive(request)

    async def _batches(self) -> AsyncIterator[pb.RunResponses]:
        async for response in self.executor.responses():
            yield pb.RunResponses(responses=[response])

    def __aiter__(self) -> AsyncIterator[pb.RunResponses]:
        return self._batches()


class FakeChannel:
    """What `FunctionExecutorStub` needs of a `grpc.aio.Channel`, served by one FakeExecutor."""

    def __init__(self, executor: FakeExecutor) -> None:
        self.executor = executor
        self.closed = False

    def unary_unary(self, method: str, request_serializer: Any = None, response_deserializer: Any = None,
                    **_: Any) -> Callable[..., Any]:
        async def invoke(request: Any, timeout: float | None = None, **__: Any) -> Any:
            if not method.endswith("/Initialize"):
                raise NotImplementedError(f"the fake executor does not serve {method}")
            reply = await self.executor.initialize(pb.InitializeRequest.FromString(request_serializer(request)))
            return response_deserializer(reply.SerializeToString())

        return invoke

    def stream_stream(self, method: str, **_: Any) -> Callable[..., FakeStream]:
        return lambda *args, **kwargs: FakeStream(self.executor)

    async def close(self) -> None:
        self.closed = True


class FakeBackend(Backend):
    """Starts `FakeExecutor`s; records what a test asserts on."""

    name = "fake"

    def __init__(self, engine: FakeEngine, handlers: dict[str, Handler]) -> None:
        self.engine = engine
        self.handlers = handlers
        # Every executor started, in order; those not stopped yet, by handle id.
        self.started: list[FakeExecutor] = []
        self.live: dict[str, FakeExecutor] = {}
        # The most executors of each function alive at once, and of all functions together.
        self.peak: Counter[str] = Counter()
        self.peak_total = 0
        # Live executors per function after each start: to compute any peak a test needs.
        self.history: list[Counter[str]] = []
        # Every call any executor received, in order.
        self.received: list[FakeCall] = []
        # Per function: starts fail with this exception; starts wait for this event.
        self.start_errors: dict[str, Exception] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.start_failures: Counter[str] = Counter()
        # What executors answer `Initialize` with.
        self.python_version = wire.python_version()
        self._ids = itertools.count(1)

    def live_of(self, function: str) -> list[FakeExecutor]:
        return [ex for ex in self.live.values() if ex.function == function]

    def started_of(self, function: str) -> list[FakeExecutor]:
        return [ex for ex in self.started if ex.function == function]

    def calls_of(self, function: str) -> list[FakeCall]:
        return [c for c in self.received if c.function == function]

    def running_of(self, function: str) -> list[FakeCall]:
        return [c for ex in self.live_of(function) for c in ex.running.values()]

    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        gate = self.gates.get(spec.function)
        if gate is not None:
            await gate.wait()
        error = self.start_errors.get(spec.function)
        if error is not None:
            self.start_failures[spec.function] += 1
            raise error
        ex = FakeExecutor(self, spec, f"{spec.function}-{next(self._ids)}")
        self.started.append(ex)
        self.live[ex.handle.id] = ex
        counts = Counter(e.function for e in self.live.values())
        self.history.append(counts)
        self.peak[spec.function] = max(self.peak[spec.function], counts[spec.function])
        self.peak_total = max(self.peak_total, len(self.live))
        return ex.handle

    async def stop_executor(self, handle: ExecutorHandle) -> None:
        ex = self.live.pop(handle.id, None)
        if ex is not None:
            ex.stop()

    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        ex: FakeExecutor = handle.ref  # type: ignore[assignment]
        return ex.exit or ExitInfo(exited=False, detail="still running")

    def channel(self, handle: ExecutorHandle) -> Any:
        return FakeChannel(handle.ref)  # type: ignore[arg-type]

    async def close(self) -> None:
        for ex in list(self.live.values()):
            await self.stop_executor(ex.handle)


# --- an engine on it -----------------------------------------------------------------------------


class Fn:
    """A function of the fake application: its handler (None: hold every call), its retry
    policy, and any `FunctionConfig` field (`max_containers=3`, `concurrency=2`, ...)."""

    def __init__(self, handler: Handler | None = None, *, retries: Retries | None = None, **config: Any) -> None:
        self.handler = handler
        self.retries = retries or Retries()
        self.config = FunctionConfig(**config)


def echo(call: FakeCall) -> Any:
    """A handler returning its arguments: the one positional argument, else args and kwargs."""
    if len(call.args) == 1 and not call.kwargs:
        return call.arg
    return (tuple(call.args), call.kwargs)


class FakeEngine:
    """A scheduler driving one application on the fake backend, with a SQLite store.

    `functions` maps each function's name to its handler, or to `Fn(handler, **settings)`, or
    to None (hold its calls); the first is the application (the root call's function).
    """

    def __init__(self, state_dir: Path, functions: dict[str, Handler | Fn | None], *,
                 max_executors: int = 16, idle_timeout: float = 10.0, on_failure: str = "finish",
                 max_concurrent_calls: int | None = None) -> None:
        self.state_dir = Path(state_dir)
        fns = {name: f if isinstance(f, Fn) else Fn(f) for name, f in functions.items()}
        self.handlers = {name: f.handler for name, f in fns.items() if f.handler is not None}
        code = self.state_dir / "code"
        code.mkdir(parents=True, exist_ok=True)
        root = next(iter(fns))
        self.app = AppSpec(
            name=root, app_file=code / "fakeapp.py", module="fakeapp", code_root=code, config_path=None,
            config=EngineConfig(max_concurrent_calls=max_concurrent_calls),
            functions={name: FunctionSettings(name, "fakeapp", f.config, f.retries) for name, f in fns.items()},
            env_source={}, on_failure=on_failure,
        )
        self.max_executors = max_executors
        self.idle_timeout = idle_timeout

    async def __aenter__(self) -> FakeEngine:
        url = store_url(self.state_dir)
        self.store = open_store(url)
        # A second connection sees only what the scheduler committed.
        self.reader = open_store(url)
        self.backend = FakeBackend(self, self.handlers)
        self.scheduler = Scheduler(self.store, self.backend, max_executors=self.max_executors,
                                   idle_timeout=self.idle_timeout)
        await self.scheduler.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.scheduler.close()
        finally:
            self.reader.close()
            self.store.close()
            shutil.rmtree(self.state_dir / "code", ignore_errors=True)

    def submit(self, *args: Any, budget: Budget | None = None, priority: int = 1, **kwargs: Any) -> RunState:
        """Start a run of the application with these arguments (values only)."""
        return self.scheduler.submit_run(self.app, wire.dumps((args, kwargs)), arguments(args, kwargs, []),
                                         budget=budget or Budget(), priority=priority)

    async def until(self, condition: Callable[[], Any], what: str = "", timeout: float = 5.0) -> None:
        """Let the loop run until `condition()` holds; fail the test after `timeout` seconds (a
        deadline for a hung scheduler, not a measure of its speed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await asyncio.sleep(0)  # always let the scheduler take a step: a test loop never spins
        while not condition():
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}")
            await asyncio.sleep(0.002)

    async def serve(self, run: RunState, *functions: str, value: Handler = echo) -> None:
        """Answer every held call of `functions` with `value(call)` as it arrives, until `run`
        ends."""
        while not run.done.is_set():
            for c in [c for f in functions for c in self.backend.running_of(f)]:
                c.answer(value(c))
            await self.until(lambda: run.done.is_set() or any(self.backend.running_of(f) for f in functions),
                             f"run {run.run_id} to end or call {', '.join(functions)}")

    async def finished(self, run: RunState, timeout: float = 5.0) -> RunRow:
        """The run's committed row once it has ended."""
        await self.until(run.done.is_set, f"run {run.run_id} to end", timeout)
        return self.reader.get_run(run.run_id)

    def result(self, run: RunState) -> Any:
        """The ended run's value, or raises its failure as `Request.output()` does."""
        row = self.reader.get_run(run.run_id)
        if row.failure:
            raise wire.exception_from_failure(pb.Failure.FromString(row.failure), run.run_id)
        data = self.reader.run_result(row)
        return wire.loads(data) if data is not None else None

    def stored(self, run: RunState, call_id: str) -> CallRow | None:
        """A call's committed row (None: it was never created)."""
        return next((r for r in self.reader.load_calls(run.run_id) if r.call_id == call_id), None)

    def stored_status(self, run: RunState, call_id: str) -> str | None:
        row = self.stored(run, call_id)
        return row.status if row is not None else None


def drive(scenario: Callable[[], Any]) -> None:
    """Run an async test body on a fresh event loop."""
    asyncio.run(scenario())


__all__ = ["FakeBackend", "FakeCall", "FakeEngine", "FakeExecutor", "Fn", "Node", "call", "drive",
           "echo", "graph", "map_", "reduce_", "signal"]
