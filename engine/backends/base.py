"""The backend interface: where function executors run.

A backend starts and stops *executors* — one gRPC server process per function instance
(`engine.executor`), either as a local OS process (`process`) or as a Docker container
(`docker`). Backends only report what happened (an executor started, stopped, or died and
why); the scheduler alone decides what happens next (retry, fail, replace).

Every method is a coroutine: the scheduler runs on one asyncio loop and must never block it.
Blocking SDKs (the Docker SDK, subprocess waits) are pushed to threads inside the backend.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from engine.errors import SDKUsageError

if TYPE_CHECKING:  # gRPC is imported by `channel`: `engine run` reads this module before it (early.py)
    import grpc


@dataclass(frozen=True)
class ExecutorSpec:
    """Everything a backend needs to start one executor for one function."""

    function: str
    run_id: str
    cpu: float = 1.0
    memory_gb: float = 1.0
    ephemeral_disk_gb: float = 10.0
    gpu: str | None = None
    # Image tag (docker backend). None means the runtime image.
    image: str | None = None
    concurrency: int = 1
    # Secrets and other environment variables for the user's code. Never baked into an image.
    env: dict[str, str] = field(default_factory=dict)
    # Placement constraints (swarm backend), e.g. ("node.labels.gpu==true",). Others ignore them.
    constraints: tuple[str, ...] = ()
    # The executor's exchange directory on this machine (engine.scheduler.exchange), given only
    # to a backend whose `shares_filesystem` is true: the backend makes it the executor's
    # (`ENGINE_EXCHANGE_DIR`; docker mounts `in` read-only and `out` writable).
    exchange_dir: str | None = None


WARM_ENV = "ENGINE_WARM_EXECUTORS"
#: The function name a blank executor is started under (container labels, process log names).
BLANK = "(blank)"


def blank_spec(env: dict[str, str]) -> ExecutorSpec:
    """What a blank executor of the warm pool (`engine.scheduler.warm`) is started with: default
    resources, the runtime image, no secrets, no constraints. `env`: what every executor gets
    (tracing)."""
    return ExecutorSpec(function=BLANK, run_id="", env=dict(env))


def warm_size(configured: int | None, default: int) -> int:
    """How many blank executors to keep: $ENGINE_WARM_EXECUTORS, else engine.yaml's
    `warm_executors`, else the backend's `default`. Raises `SDKUsageError` for a bad value."""
    text = os.environ.get(WARM_ENV)
    if text is not None and text.strip():
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0:
            raise SDKUsageError(f"{WARM_ENV} must be a whole number of executors (0 turns the warm pool "
                                f"off), not {text!r}")
        return value
    return configured if configured is not None else default


@dataclass(frozen=True)
class ExecutorHandle:
    """A started executor. `address` is the host:port the scheduler dials over gRPC."""

    id: str
    address: str
    function: str
    # Backend-specific reference (a Popen, a container id); opaque to the scheduler.
    ref: object = None


@dataclass(frozen=True)
class ExitInfo:
    """Why an executor is gone, as far as the backend can tell."""

    exited: bool
    exit_code: int | None = None
    oom_killed: bool = False
    detail: str = ""


class Backend(abc.ABC):
    """Starts, stops and inspects executors. One instance per scheduler."""

    #: Name used on the CLI and in YAML (`process`, `docker`).
    name: str = ""

    #: Host that executors use to reach the scheduler's callback server.
    callback_host: str = "127.0.0.1"

    #: Interface the scheduler's callback server binds to.
    callback_bind_host: str = "127.0.0.1"

    #: Whether executors run on the scheduler's machine and can be given a directory of it: then
    #: large values move through an exchange directory instead of streaming over gRPC.
    shares_filesystem: bool = False

    #: Blank executors kept ready by default (`engine.scheduler.warm`).
    warm_executors: int = 2

    #: Set when the process ends right after `close` (`engine run`): `close` may then ask for
    #: each executor's removal and return without waiting for it, where the backend knows it is
    #: carried out all the same (docker: by the Docker engine). Executors end in any case: an
    #: executor without its scheduler ends itself (`engine.executor.lifetime`).
    close_without_waiting: bool = False

    @abc.abstractmethod
    async def start_executor(self, spec: ExecutorSpec) -> ExecutorHandle:
        """Start an executor and return once its gRPC server accepts connections.

        Raises `engine.errors.InfrastructureError` (or a subclass such as `ImageMissing`)
        when the executor cannot be started.
        """

    @abc.abstractmethod
    async def stop_executor(self, handle: ExecutorHandle) -> None:
        """Stop and remove an executor. Idempotent; never raises for an executor already gone."""

    @abc.abstractmethod
    async def exit_info(self, handle: ExecutorHandle) -> ExitInfo:
        """Report whether the executor has exited and why (exit code, out-of-memory kill)."""

    def channel(self, handle: ExecutorHandle) -> grpc.aio.Channel:
        """The channel the scheduler speaks to a started executor over: gRPC to its `address`.
        Only a backend whose executors are reached another way overrides it (the unit tests'
        in-process fake, `tests/unit/fakebackend.py`, answers on the scheduler's own loop)."""
        import grpc

        from engine import wire

        return grpc.aio.insecure_channel(handle.address, options=wire.GRPC_OPTIONS)

    async def logs(self, handle: ExecutorHandle) -> str:
        """Whatever the executor wrote outside of calls (start-up errors). Best effort."""
        return ""

    async def close(self) -> None:
        """Stop every executor this backend started. Called on normal exit and on Ctrl-C."""

    async def cleanup_orphans(self) -> int:
        """Remove executors left by an engine process that died. Returns how many."""
        return 0


