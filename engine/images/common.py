"""Constants, small helpers, the build lock and the Docker client that the image builders share,
and the check that an image's Python minor version equals the host's.

The Docker SDK is imported where a client is made or its errors caught, not at the top: the
runtime image's tag (`engine.images.tag`) is read from here by `engine run`'s early start, which
must not wait for the SDK's import (`tests/unit/test_startup_imports.py`)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import (
    DockerUnavailable,
    ImageBuildError,
    ImageMissing,
    PythonVersionMismatch,
)

if TYPE_CHECKING:
    import docker

Progress = Callable[[str], None] | None

#: Runtime dependencies of the engine inside a container (no `docker`: executors never talk to
#: the Docker engine).
RUNTIME_DEPENDENCIES = ("grpcio", "protobuf", "cloudpickle", "pydantic", "pyyaml", "rich", "blake3")

EXECUTOR_PORT = 50051
EXECUTOR_UID = 10001

BASE_REPOSITORY = "engine-base"
RUNTIME_REPOSITORY = "engine-runtime"
FUNCTION_REPOSITORY_PREFIX = "engine-fn-"

#: Image labels. Not `engine.managed`: containers inherit image labels, and that one marks the
#: containers the docker backend owns.
LABEL_KIND = "engine.image"  # base | runtime | function
LABEL_PYTHON = "engine.python"
LABEL_BASE = "engine.base"
LABEL_CONTENT = "engine.content"  # digest of a function image's copied files
LABEL_USER_TAG = "engine.user_tag"

DEBIAN_SUITE = "bookworm"
DEBOOTSTRAP_PACKAGES = ("python3", "python3-venv", "ca-certificates")

# This file is engine/images/common.py: the engine package is two levels up.
_ENGINE_DIR = Path(__file__).resolve().parent.parent
_REPO_ROOT = _ENGINE_DIR.parent
_DOCKERFILE = _REPO_ROOT / "runtime_image" / "Dockerfile"

_STEP_TAIL_LINES = 40


# --- small helpers ---------------------------------------------------------------------------


def host_python_version() -> str:
    """The engine's own Python as `major.minor`, e.g. `3.11`."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _say(progress: Progress, line: str) -> None:
    if progress is not None:
        progress(line)


def _sha256(parts: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _repository_name(name: str) -> str:
    """A Docker repository component from a user's image name."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("._-")
    cleaned = re.sub(r"[._-]{2,}", "-", cleaned)
    return cleaned[:64] or "default"


def cache_dir() -> Path:
    """`~/.cache/engine` (or `$XDG_CACHE_HOME/engine`)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "engine"


def wheel_cache_dir() -> Path:
    """Where downloaded wheels are kept, per Python version and CPU architecture."""
    major, minor = sys.version_info[:2]
    return cache_dir() / "wheels" / f"cp{major}{minor}-{_arch()}"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _shorten(line: str, width: int = 120) -> str:
    line = re.sub(r"\s+", " ", line)
    return line if len(line) <= width else line[: width - 3] + "..."


def _tail(lines: Iterable[str]) -> str:
    return "\n".join(lines).rstrip() or "(no output)"


def _run_logged(
    cmd: list[str],
    *,
    step: str,
    progress: Progress = None,
    show: Callable[[str], bool] = lambda line: False,
    cwd: str | None = None,
) -> None:
    """Run a host command; raise ImageBuildError with its last lines when it fails."""
    tail: deque[str] = deque(maxlen=_STEP_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            cwd=cwd,
        )
    except OSError as exc:
        raise ImageBuildError(f"{step} failed: cannot run {cmd[0]}: {exc}") from exc
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        tail.append(line)
        if show(line):
            _say(progress, f"  {line}")
    code = proc.wait()
    if code != 0:
        raise ImageBuildError(f"{step} failed (exit {code}). Last output:\n{_tail(tail)}")


# Builds of the same tag from two processes (parallel test workers, two terminals) would both
# run, and two debootstraps would both take a minute: builds hold a per-user file lock, and
# check again for the image once they have it. Re-entrant within a process (a runtime build
# makes the base; a function build makes the runtime).
_lock = threading.RLock()
_lock_depth = 0


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    global _lock_depth
    with _lock:
        if _lock_depth:
            _lock_depth += 1
            try:
                yield
            finally:
                _lock_depth -= 1
            return
        cache_dir().mkdir(parents=True, exist_ok=True)
        with open(cache_dir() / "build.lock", "a+") as handle:
            try:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
            except ImportError:  # not POSIX: the in-process lock still holds
                pass
            _lock_depth = 1
            try:
                yield
            finally:
                _lock_depth = 0


# --- Docker client ---------------------------------------------------------------------------


def docker_client() -> docker.DockerClient:
    """A client for the local Docker engine (`DOCKER_HOST` or the default socket).

    Raises `DockerUnavailable` when no engine answers a ping.
    """
    import docker  # here, not above: reading a tag (`engine.images.tag`) needs no Docker SDK

    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        # A bigger pool than the default 10: the docker backend calls from many threads at once.
        client = docker.from_env(max_pool_size=32)
        client.ping()
    except Exception as exc:  # DockerException, requests errors, FileNotFoundError...
        raise DockerUnavailable(
            f"No Docker engine answers at {where}: start one (scripts/ensure-docker.sh) "
            f"or use --backend process ({type(exc).__name__}: {exc})"
        ) from exc
    return client


def _inspect_image(client: docker.DockerClient, ref: str) -> dict | None:
    import docker.errors

    try:
        return client.api.inspect_image(ref)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.NotFound:
        return None


def _labels(attrs: dict) -> dict[str, str]:
    return (attrs.get("Config") or {}).get("Labels") or {}


def _python_of(client: docker.DockerClient, ref: str, attrs: dict) -> str:
    """An image's Python minor version: from our label, the official images' PYTHON_VERSION
    variable, or (last resort) by running `python3` in it once."""
    label = _labels(attrs).get(LABEL_PYTHON)
    if label:
        return label
    for item in (attrs.get("Config") or {}).get("Env") or []:
        if item.startswith("PYTHON_VERSION="):
            match = re.match(r"(\d+)\.(\d+)", item.split("=", 1)[1])
            if match:
                return f"{match.group(1)}.{match.group(2)}"
    import docker.errors

    code = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        exit_code, out = run_once(client, ref, ["python3", "-c", code], network_disabled=True)
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"Could not run python3 in image {ref}: {exc}") from exc
    if exit_code != 0 or not re.fullmatch(r"\d+\.\d+", out.strip()):
        raise ImageBuildError(
            f"Image {ref} has no working python3 (exit {exit_code}: {out.strip()[-300:]}): use a "
            f"base image with Python {host_python_version()}"
        )
    return out.strip()


def run_once(client: docker.DockerClient, ref: str, argv: list[str], **create: object) -> tuple[int, str]:
    """Run `argv` in a throw-away container of `ref`; return (exit code, output).

    Not `containers.run(remove=True)`: for a container that exits at once its logs can be read
    before the logging driver has them, and come back empty.
    """
    import docker.errors

    container = client.api.create_container(
        ref, entrypoint=argv, command=[], labels={"engine.probe": "1"}, **create
    )
    try:
        client.api.start(container)
        exit_code = int(client.api.wait(container)["StatusCode"])
        deadline = time.monotonic() + 2
        while True:
            out = client.api.logs(container, stdout=True, stderr=True).decode("utf-8", "replace")
            if out or time.monotonic() > deadline:
                return exit_code, out
            time.sleep(0.05)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(container, force=True)


def _check_python(client: docker.DockerClient, ref: str, attrs: dict) -> str:
    want = host_python_version()
    have = _python_of(client, ref, attrs)
    if have != want:
        raise PythonVersionMismatch(
            f"Image {ref} has Python {have} but the engine runs on Python {want}: cloudpickle "
            f"needs the same minor version on both sides. Run the engine with Python {have}, "
            f"or build from a base with Python {want} (remove {ref} and run "
            f"`engine image build` again)."
        )
    return have


def image_python_version(tag: str) -> str:
    """The Python minor version (`3.11`) of a local image; raises ImageMissing if absent."""
    client = docker_client()
    attrs = _inspect_image(client, tag)
    if attrs is None:
        raise ImageMissing(f"Image {tag} is not in the local Docker engine: run `engine image build`")
    return _python_of(client, tag, attrs)
