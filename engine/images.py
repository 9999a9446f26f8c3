"""Building the images that function executors run in — locally, offline, with no registry.

Why offline: the machines this engine runs on have no container registry (`docker pull` fails),
and pip *inside* a container cannot verify the package index's TLS certificate (the index is
reached through a proxy whose CA only the host trusts). We do not disable verification. Instead
everything a build needs is fetched on the host, where pip works, and handed to Docker in the
build context; the build itself never touches the network. That is also exactly what an
air-gapped user needs.

Three kinds of image, each cached by a content-derived tag:

1. Base: `python:3.X-slim` if the local engine already has it (the ordinary path), otherwise
   `engine-base:bookworm-py3.X`, made once with `debootstrap --variant=minbase` and
   `docker import` (about 70 s + 3 s here; never repeated while the image exists).
2. Runtime: `engine-runtime:py3.X-<hash>`, from `runtime_image/Dockerfile`. Its dependencies
   (grpcio, protobuf, cloudpickle, pydantic, pyyaml, rich and what they require) are pinned to
   the versions installed on the host — the generated protobuf code and the pickles must match
   on both sides — downloaded as wheels into `~/.cache/engine/wheels/<cpXY-arch>/` (reused
   across builds, so a rebuild needs no network) and installed with `pip --no-index`. The
   engine package goes in as its source tree. The hash covers the engine source, the pins and
   the Dockerfile, so editing engine code yields a new tag and a stale image is never used.
   (The base is not in the tag: after adding a `python:3.X-slim` image, rebuild with `force`.)
   Old runtime tags only share layers with the current one; `prune_images()` removes them.
3. Function: `engine-fn-<name>:<hash>` for a user's `engine.sdk.image.Image`, built FROM the
   runtime image (or from the Image's own `base_image`, with the runtime layers replayed on top
   of it). `pip install` commands in its `run` steps are found, their packages downloaded as
   wheels on the host, and pip in the build is pointed at those wheels only (`PIP_NO_INDEX`,
   `PIP_FIND_LINKS`), with the engine's pins as constraints so a user package cannot replace a
   dependency the engine needs.

The Python minor version of every image must equal the host's: cloudpickle's output is only
portable between equal minor versions. Images carry it as the label `engine.python`, and a
mismatch raises `PythonVersionMismatch` before anything runs.

The Docker SDK is blocking: call these from the CLI or from a thread, never on an event loop.
Builds hold a per-user file lock, so parallel builds of one tag run once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import docker
import docker.errors

from engine.errors import (
    DockerUnavailable,
    ImageBuildError,
    ImageMissing,
    InfrastructureError,
    PythonVersionMismatch,
    SDKUsageError,
)

if TYPE_CHECKING:
    from engine.sdk.image import Image

Progress = Callable[[str], None] | None

#: Runtime dependencies of the engine inside a container (no `docker`: executors never talk to
#: the Docker engine).
RUNTIME_DEPENDENCIES = ("grpcio", "protobuf", "cloudpickle", "pydantic", "pyyaml", "rich")

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

_ENGINE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _ENGINE_DIR.parent
_DOCKERFILE = _REPO_ROOT / "runtime_image" / "Dockerfile"

# Function-image build: where the wheels for user `pip install`s and the engine's constraints sit
# during the build (removed in the last step; /tmp is a tmpfs at run time anyway).
_FN_BUILD_DIR = "/tmp/engine-fn-build"
_STEP_TAIL_LINES = 40
_BUILD_HTTP_TIMEOUT = 3600  # a silent `run` step (a compile) must not time the stream out


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


# --- base image ------------------------------------------------------------------------------


def base_image_candidates() -> tuple[str, str]:
    """(`python:3.X-slim`, `engine-base:bookworm-py3.X`) for the host's Python."""
    minor = host_python_version()
    return f"python:{minor}-slim", f"{BASE_REPOSITORY}:{DEBIAN_SUITE}-py{minor}"


def _debootstrap(rootfs: Path, progress: Progress = None) -> None:
    """Install a minimal Debian with python3 into `rootfs` (about 70 s, needs root)."""
    exe = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if os.path.exists("/usr/sbin/debootstrap") else None
    )
    if exe is None:
        raise ImageBuildError(
            "debootstrap is not installed, and no python base image is available locally: "
            "run scripts/ensure-docker.sh (installs it), or `docker load` a "
            f"python:{host_python_version()}-slim image"
        )
    cmd = [
        exe,
        "--variant=minbase",
        f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
        DEBIAN_SUITE,
        str(rootfs),
    ]
    mirror = os.environ.get("ENGINE_DEBIAN_MIRROR")
    if mirror:
        cmd.append(mirror)
    # debootstrap prints a line per package; pass on only its phase lines.
    phases = re.compile(
        r"^I: (Retrieving Release|Resolving|Installing|Unpacking required|"
        r"Configuring required|Base system)"
    )
    _run_logged(cmd, step="debootstrap", progress=progress, show=lambda line: bool(phases.match(line)))


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    try:
        with open("/proc/mounts") as f:
            points = [line.split()[1].replace("\\040", " ") for line in f]
    except OSError:
        return []
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Remove a debootstrap work directory. A failed debootstrap can leave /proc and /sys
    mounted inside it; unmount those first so that removal never reaches the host's."""
    for point in _mounts_below(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    still = _mounts_below(path)
    if still:
        raise ImageBuildError(f"Could not unmount {', '.join(still)}; remove {path} by hand after unmounting")
    shutil.rmtree(path, ignore_errors=True)


def _rootfs_python(rootfs: Path) -> str:
    versions = sorted(
        m.group(1)
        for p in (rootfs / "usr" / "bin").glob("python3.*")
        if (m := re.fullmatch(r"python(3\.\d+)", p.name))
    )
    if not versions:
        raise ImageBuildError(f"debootstrap finished but {rootfs}/usr/bin has no python3.X")
    return versions[-1]


def _make_base_image(client: docker.DockerClient, tag: str, progress: Progress) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            "Making the base image with debootstrap needs root, and no "
            f"python:{host_python_version()}-slim image is available locally: run "
            "`engine image build` as root once, or `docker load` a python slim image"
        )
    work_root = cache_dir() / "build"
    work_root.mkdir(parents=True, exist_ok=True)
    # Under ~/.cache, not /tmp: /tmp is often a small tmpfs or mounted nodev.
    work = Path(tempfile.mkdtemp(prefix="base-", dir=work_root))
    try:
        rootfs = work / "rootfs"
        _say(progress, f"debootstrap {DEBIAN_SUITE} (minbase + {', '.join(DEBOOTSTRAP_PACKAGES)})")
        started = time.monotonic()
        _debootstrap(rootfs, progress)
        _say(progress, f"debootstrap done in {time.monotonic() - started:.0f} s")
        have, want = _rootfs_python(rootfs), host_python_version()
        if have != want:
            raise PythonVersionMismatch(
                f"Debian {DEBIAN_SUITE} ships Python {have} but the engine runs on Python {want}: "
                f"cloudpickle needs the same minor version on both sides. Run the engine with "
                f"Python {have}, or `docker load` a python:{want}-slim image."
            )
        # Package caches are dead weight in an image that never runs apt from its cache.
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / sub).glob("*"):
                if item.is_file() and item.name not in ("lock",):
                    item.unlink()
        tarball = work / "rootfs.tar"
        _say(progress, f"docker import -> {tag}")
        started = time.monotonic()
        _run_logged(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tarball), "."],
            step="tar of the debootstrap root",
        )
        repository, image_tag = tag.rsplit(":", 1)
        try:
            client.api.import_image(
                src=str(tarball),
                repository=repository,
                tag=image_tag,
                changes=[
                    f"LABEL {LABEL_KIND}=base {LABEL_PYTHON}={want}",
                    "ENV LANG=C.UTF-8",
                    'CMD ["/bin/bash"]',
                ],
            )
        except docker.errors.APIError as exc:
            raise ImageBuildError(f"docker import of the base image failed: {exc}") from exc
        _say(progress, f"docker import done in {time.monotonic() - started:.0f} s")
    finally:
        _remove_tree(work)


def ensure_base_image(progress: Progress = None, *, client: docker.DockerClient | None = None) -> str:
    """Return a local base image tag with the host's Python, making one if needed.

    Prefers `python:3.X-slim` when the local engine has it; otherwise `engine-base:bookworm-py3.X`,
    created once with debootstrap (needs root and the Debian mirror) and reused afterwards.
    Raises `PythonVersionMismatch` if the base's Python minor differs from the host's,
    `ImageBuildError` if it cannot be made, `DockerUnavailable` without a Docker engine.
    """
    client = client or docker_client()
    for ref in base_image_candidates():
        attrs = _inspect_image(client, ref)
        if attrs is not None:
            _check_python(client, ref, attrs)
            return ref
    tag = base_image_candidates()[1]
    with _build_lock():
        if _inspect_image(client, tag) is None:  # made by another process meanwhile?
            _make_base_image(client, tag, progress)
    return tag


# --- runtime image ---------------------------------------------------------------------------


def _marker_applies(marker: str) -> bool:
    if not marker.strip():
        return True
    if "extra" in marker:  # optional extras of a dependency are never needed here
        return False
    try:
        from packaging.markers import Marker
    except ImportError:  # pip vendors it
        try:
            from pip._vendor.packaging.markers import (  # type: ignore[assignment,no-redef]
                Marker,
            )
        except ImportError:
            return True  # keep it; pinning only what is installed bounds the damage
    try:
        return bool(Marker(marker).evaluate())
    except ValueError:  # invalid or unevaluable marker: keep the requirement
        return True


def pinned_requirements() -> list[str]:
    """`name==version` for the runtime dependencies and everything they require, at the
    versions installed on the host (the host and the executors must agree on them)."""
    return list(_pinned_requirements())


@functools.lru_cache(maxsize=1)
def _pinned_requirements() -> tuple[str, ...]:
    pins: dict[str, str] = {}
    todo = list(RUNTIME_DEPENDENCIES)
    while todo:
        name = todo.pop()
        key = _normalize(name)
        if key in pins:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            if name in RUNTIME_DEPENDENCIES:
                raise ImageBuildError(
                    f"{name} is not installed on this machine; the runtime image pins its "
                    f"dependencies to the host's versions: `pip install -e .` in the engine "
                    f"checkout first"
                ) from None
            continue  # a requirement whose marker applies but is not installed: pip resolves it
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        for requirement in dist.requires or []:
            spec, _, marker = requirement.partition(";")
            if not _marker_applies(marker):
                continue
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
            if match:
                todo.append(match.group(1))
    return tuple(sorted(pins.values(), key=str.lower))


def _engine_source_files(root: Path = _ENGINE_DIR) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
        for filename in sorted(filenames):
            if filename.endswith((".pyc", ".pyo")) or filename.startswith("."):
                continue
            files.append(Path(dirpath) / filename)
    return files


def _dockerfile_text() -> str:
    try:
        return _DOCKERFILE.read_text()
    except OSError as exc:
        raise ImageBuildError(
            f"{_DOCKERFILE} is missing ({exc.strerror}): image builds need the engine's source "
            f"checkout (the runtime_image/ directory next to the engine package)"
        ) from None


_runtime_tag_cache: dict[tuple, str] = {}


def _stat_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_size, st.st_mtime_ns)


def runtime_image_tag() -> str:
    """`engine-runtime:py3.X-<12 hex>`, derived from the engine's source files, the pinned
    dependency versions and the Dockerfile. Needs no Docker engine."""
    files = _engine_source_files()
    # Cheap fingerprint (names, sizes, mtimes) so that repeated calls skip re-hashing.
    stamp = tuple(_stat_key(p) for p in [*files, _DOCKERFILE])
    cached = _runtime_tag_cache.get(stamp)
    if cached:
        return cached
    tag = _runtime_tag_of(_ENGINE_DIR, _dockerfile_text())
    _runtime_tag_cache.clear()
    _runtime_tag_cache[stamp] = tag
    return tag


def _runtime_tag_of(engine_root: Path, dockerfile: str) -> str:
    parts = [b"engine-runtime/1", host_python_version().encode(), _arch().encode()]
    parts += [pin.encode() for pin in pinned_requirements()]
    parts.append(dockerfile.encode())
    for path in _engine_source_files(engine_root):
        parts.append(path.relative_to(engine_root).as_posix().encode())
        parts.append(path.read_bytes())
    return f"{RUNTIME_REPOSITORY}:py{host_python_version()}-{_sha256(parts)[:12]}"


def _pip_platform_args() -> list[str]:
    arch = _arch()
    args = ["--only-binary=:all:", "--python-version", host_python_version()]
    for plat in ("manylinux2014", "manylinux_2_17", "manylinux_2_28"):
        args += ["--platform", f"{plat}_{arch}"]
    return args


def _wheel_key(filename: str) -> tuple[str, str] | None:
    if not filename.endswith(".whl"):
        return None
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return None
    return _normalize(parts[0]), parts[1]


def _find_wheels(directory: Path, pins: list[str]) -> tuple[list[Path], list[str]]:
    """Files in `directory` for each pin, and the pins with no file."""
    index: dict[tuple[str, str], Path] = {}
    if directory.is_dir():
        for path in directory.iterdir():
            key = _wheel_key(path.name)
            if key:
                index.setdefault(key, path)
    found: list[Path] = []
    missing: list[str] = []
    for pin in pins:
        name, version = pin.split("==", 1)
        wheel = index.get((_normalize(name), version))
        if wheel is None:
            missing.append(pin)
        else:
            found.append(wheel)
    return found, missing


def runtime_wheels(progress: Progress = None) -> list[Path]:
    """The pinned runtime wheels, downloaded into the wheel cache unless already there."""
    pins = pinned_requirements()
    cache = wheel_cache_dir()
    found, missing = _find_wheels(cache, pins)
    if not missing:
        _say(progress, f"wheels: {len(found)} cached in {cache}")
        return found
    cache.mkdir(parents=True, exist_ok=True)
    _say(progress, f"wheels: downloading {len(missing)} of {len(pins)} into {cache}")
    started = time.monotonic()
    # --no-deps: the pins are the whole closure already, so the download is exactly them.
    _run_logged(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            *_pip_platform_args(),
            "-d",
            str(cache),
            *missing,
        ],
        step="pip download of the runtime wheels",
        progress=progress,
    )
    _say(progress, f"wheels: downloaded in {time.monotonic() - started:.1f} s")
    found, missing = _find_wheels(cache, pins)
    if missing:
        raise ImageBuildError(
            f"pip download finished but no wheel for {', '.join(missing)} is in {cache}: these "
            f"must exist as wheels for Linux {_arch()} / Python {host_python_version()}"
        )
    return found


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def _stage_runtime_context(ctx: Path, progress: Progress) -> None:
    """Put into `ctx` what runtime_image/Dockerfile COPYs: wheels/, requirements.txt, engine/."""
    (ctx / "wheels").mkdir()
    for wheel in runtime_wheels(progress):
        _link_or_copy(wheel, ctx / "wheels" / wheel.name)
    (ctx / "requirements.txt").write_text("\n".join(pinned_requirements()) + "\n")
    for path in _engine_source_files():
        dest = ctx / "engine" / path.relative_to(_ENGINE_DIR)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)


@contextlib.contextmanager
def _build_context() -> Iterator[Path]:
    work_root = cache_dir() / "build"
    work_root.mkdir(parents=True, exist_ok=True)
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=work_root))
    try:
        yield ctx
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def _docker_build(
    client: docker.DockerClient,
    ctx: Path,
    tag: str,
    *,
    what: str,
    buildargs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    progress: Progress = None,
) -> None:
    """`docker build` of `ctx`; progress gets each `Step N/M` line; a failure raises
    ImageBuildError with the failing step and its last output lines."""
    step = "(before the first step)"
    output: deque[str] = deque(maxlen=_STEP_TAIL_LINES)
    error = None
    started = time.monotonic()
    try:
        for chunk in client.api.build(
            path=str(ctx),
            tag=tag,
            buildargs=buildargs or {},
            labels=labels or {},
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            timeout=_BUILD_HTTP_TIMEOUT,
        ):
            if "stream" in chunk:
                for line in _ANSI.sub("", chunk["stream"]).splitlines():
                    if line.startswith("Step "):
                        step = line
                        output.clear()
                        _say(progress, f"  {_shorten(line)}")
                    elif line.strip():
                        output.append(line)
            if "error" in chunk:
                error = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                break
    except docker.errors.APIError as exc:
        error = str(exc.explanation or exc)
    except docker.errors.DockerException as exc:
        error = str(exc)
    if error:
        raise ImageBuildError(f"Building {what} ({tag}) failed at {step}\n{_tail(output)}\n{error.strip()}")
    _say(progress, f"built {tag} in {time.monotonic() - started:.1f} s")


def build_runtime_image(progress: Progress = None, force: bool = False) -> str:
    """Build the runtime image if its tag is missing (or `force`); return the tag.

    Raises `ImageBuildError` (with the failing step's output), `PythonVersionMismatch`,
    `DockerUnavailable`.
    """
    client = docker_client()
    tag = runtime_image_tag()
    if not force and _inspect_image(client, tag) is not None:
        return tag
    with _build_lock():
        if not force and _inspect_image(client, tag) is not None:
            return tag
        return _build_runtime(client, tag, progress, force)


def _build_runtime(client: docker.DockerClient, tag: str, progress: Progress, force: bool) -> str:
    base = ensure_base_image(progress, client=client)
    with _build_context() as ctx:
        _stage_runtime_context(ctx, progress)
        dockerfile = _dockerfile_text()
        (ctx / "Dockerfile").write_text(dockerfile)
        # The tag of what was actually staged: if the source changed since `tag` was computed,
        # the image must not go out under the old tag.
        tag = _runtime_tag_of(ctx / "engine", dockerfile)
        if not force and _inspect_image(client, tag) is not None:
            return tag
        _say(progress, f"building {tag} from {base}")
        _docker_build(
            client,
            ctx,
            tag,
            what="the runtime image",
            buildargs={"BASE": base, "PYTHON_VERSION": host_python_version()},
            labels={LABEL_KIND: "runtime", LABEL_PYTHON: host_python_version(), LABEL_BASE: base},
            progress=progress,
        )
    return tag


# --- function images -------------------------------------------------------------------------

# pip options whose value is the next argument; forwarded to the host's `pip download` when
# they change *what* is resolved, dropped otherwise.
_PIP_VALUE_OPTIONS_FORWARD = {
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
}
_PIP_VALUE_OPTIONS_DROP = {
    "-t",
    "--target",
    "--prefix",
    "--root",
    "--src",
    "--upgrade-strategy",
    "--log",
    "--cache-dir",
    "--progress-bar",
    "--platform",
    "--python-version",
    "--implementation",
    "--abi",
    "--trusted-host",
    "--proxy",
    "--timeout",
    "--retries",
    "--exists-action",
    "--cert",
    "--client-cert",
    "--global-option",
    "--config-settings",
    "-C",
    "--root-user-action",
    "--report",
    "--only-binary",
    "--no-binary",
    "-e",
    "--editable",
}
_PIP_FLAGS_FORWARD = {"--pre", "--no-deps"}
_SHELL_OPERATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;"}


def _pip_invocation(tokens: list[str]) -> list[str] | None:
    """If `tokens` (one shell command) is a `pip install`, return the arguments after `install`."""
    i = 0
    while i < len(tokens) and (
        re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[i]) or tokens[i] in ("sudo", "env", "exec", "command")
    ):
        i += 1
    rest = tokens[i:]
    if not rest:
        return None
    exe = os.path.basename(rest[0])
    if re.fullmatch(r"pip(3(\.\d+)?)?", exe):
        rest = rest[1:]
    elif re.fullmatch(r"python(3(\.\d+)?)?", exe) and rest[1:3] == ["-m", "pip"]:
        rest = rest[3:]
    else:
        return None
    # global options before the subcommand (pip -q install ...)
    while rest and rest[0].startswith("-"):
        rest = rest[1:]
    if not rest or rest[0] != "install":
        return None
    return rest[1:]


def pip_download_args(command: str) -> list[list[str]]:
    """For each `pip install` in a shell command, the arguments for a host `pip download` that
    fetches what it installs. Local paths and editable installs are skipped (they are not on an
    index); options that do not change the resolution are dropped."""
    try:
        lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return []  # unbalanced quotes: the shell will say so during the build
    commands: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token in _SHELL_OPERATORS:
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    result = []
    for tokens in commands:
        args = _pip_invocation(tokens)
        if args is None:
            continue
        out: list[str] = []
        requirements = 0
        i = 0
        while i < len(args):
            arg = args[i]
            if arg.startswith("--") and "=" in arg:
                opt = arg.split("=", 1)[0]
                if opt in _PIP_VALUE_OPTIONS_FORWARD:
                    out.append(arg)
                    requirements += opt in ("--requirement",)
            elif arg in _PIP_VALUE_OPTIONS_FORWARD:
                if i + 1 < len(args):
                    out += [arg, args[i + 1]]
                    requirements += arg in ("-r", "--requirement")
                i += 1
            elif arg in _PIP_VALUE_OPTIONS_DROP:
                i += 1
            elif arg in _PIP_FLAGS_FORWARD:
                out.append(arg)
            elif arg.startswith("-"):
                pass  # -U, -q, --no-cache-dir, --force-reinstall, --user, ...
            elif _is_local_requirement(arg):
                pass
            else:
                out.append(arg)
                requirements += 1
            i += 1
        if requirements:
            result.append(out)
    return result


def _is_local_requirement(arg: str) -> bool:
    return arg.startswith((".", "/", "~", "file:")) or arg.endswith((".whl", ".tar.gz", ".zip")) or "$" in arg


def _copy_sources(image: Image) -> list[tuple[int, Path, str]]:
    """(step index, absolute source, dest) of every copy step; sources resolve against the
    current directory."""
    out = []
    for index, step in enumerate(image.steps):
        if step.kind == "copy":
            src, dest = step.args
            path = Path(src).expanduser()
            if not path.is_absolute():
                path = Path.cwd() / path
            out.append((index, path, dest))
    return out


def _content_digest(image: Image) -> str:
    """Digest of every file a copy step brings in. Raises SDKUsageError for a missing source."""
    parts: list[bytes] = []
    for index, path, _dest in _copy_sources(image):
        if not path.exists():
            raise SDKUsageError(
                f"Image {image.name!r}: copy({image.steps[index].args[0]!r}, ...) source does "
                f"not exist relative to {Path.cwd()}: run `engine image build` from the "
                f"directory the paths are relative to"
            )
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            parts.append(f"{index}:{file.relative_to(path) if file != path else ''}".encode())
            parts.append(file.read_bytes())
    return _sha256(parts)[:16]


def _steps_fingerprint(image: Image) -> str:
    data = json.dumps(
        {"base": image.base_image, "steps": [[s.kind, *s.args] for s in image.steps]},
        sort_keys=True,
    )
    return data


def function_image_tag(image: Image) -> str:
    """`engine-fn-<name>:<12 hex>`, from the runtime image's tag, the base and the steps.

    Copied files' contents are not in the tag (so a scheduler can compute it from any
    directory); they are recorded as a label and a build with changed files rebuilds the tag.
    """
    digest = _sha256([b"engine-fn/1", runtime_image_tag().encode(), _steps_fingerprint(image).encode()])
    return f"{FUNCTION_REPOSITORY_PREFIX}{_repository_name(image.name)}:{digest[:12]}"


def _dockerfile_env_value(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def _function_dockerfile(image: Image, *, base_dockerfile: str) -> str:
    """The function image's Dockerfile: `base_dockerfile` (FROM the runtime image, or the
    runtime Dockerfile replayed on a custom base) plus the user's steps."""
    lines = [
        base_dockerfile.rstrip(),
        "",
        "# --- function image steps " + "-" * 60,
        "USER root",
        f"COPY fn-build/ {_FN_BUILD_DIR}/",
        # pip in `run` steps may only use the wheels downloaded on the host, and must keep the
        # engine's pins. ARGs are in the steps' environment but not in the final image.
        "ARG PIP_NO_INDEX=1",
        f"ARG PIP_FIND_LINKS={_FN_BUILD_DIR}/wheels",
        f"ARG PIP_CONSTRAINT={_FN_BUILD_DIR}/constraints.txt",
        "ARG PIP_DISABLE_PIP_VERSION_CHECK=1",
        "ARG PIP_NO_CACHE_DIR=1",
        "ARG PIP_ROOT_USER_ACTION=ignore",
        # Build steps run at /, not in /home/engine or /tmp: both are tmpfs mounts at run time
        # and would hide what a step leaves there.
        "WORKDIR /",
    ]
    workdir_set = False
    copy_index = {index: dest for index, _path, dest in _copy_sources(image)}
    for index, step in enumerate(image.steps):
        if step.kind == "run":
            lines.append("RUN " + json.dumps(["/bin/sh", "-c", step.args[0]]))
        elif step.kind == "env":
            key, value = step.args
            lines.append(f"ENV {key}={_dockerfile_env_value(value)}")
        elif step.kind == "copy":
            src = f"files/{index}/{Path(step.args[0]).name or 'src'}"
            lines.append("COPY " + json.dumps([src, copy_index[index]]))
        elif step.kind == "workdir":
            lines.append("WORKDIR " + json.dumps(step.args[0])[1:-1])
            workdir_set = True
    lines.append(f"RUN rm -rf {_FN_BUILD_DIR}")
    lines.append("USER engine")
    if not workdir_set:
        lines.append("WORKDIR /home/engine")
    return "\n".join(lines) + "\n"


def _download_user_wheels(image: Image, dest: Path, progress: Progress) -> None:
    jobs = [args for s in image.steps if s.kind == "run" for args in pip_download_args(s.args[0])]
    if not jobs:
        return
    cache = wheel_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    constraints = dest.parent / "constraints.txt"
    for args in jobs:
        _say(progress, f"wheels: pip download {' '.join(args)}")
        _run_logged(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--disable-pip-version-check",
                *_pip_platform_args(),
                "--find-links",
                str(cache),
                "-c",
                str(constraints),
                "-d",
                str(dest),
                *args,
            ],
            step=f"Image {image.name!r}: downloading wheels for `pip install {' '.join(args)}` "
            f"(packages must exist as wheels for Linux {_arch()} / Python "
            f"{host_python_version()}; put hand-built wheels in {cache})",
            progress=progress,
        )
    # Keep them for the next build (pip reuses files found through --find-links).
    for wheel in dest.glob("*.whl"):
        target = cache / wheel.name
        if not target.exists():
            _link_or_copy(wheel, target)


def build_function_image(image: Image, progress: Progress = None, force: bool = False) -> str:
    """Build a user's `Image` unless an up-to-date one exists; return its tag.

    Raises `ImageBuildError` (with the failing step's output), `SDKUsageError` (a copy source
    that does not exist), `PythonVersionMismatch`, `DockerUnavailable`.
    """
    client = docker_client()
    tag = function_image_tag(image)
    content = _content_digest(image)

    def up_to_date() -> bool:
        attrs = _inspect_image(client, tag)
        return attrs is not None and _labels(attrs).get(LABEL_CONTENT) == content

    if not force and up_to_date():
        return tag
    with _build_lock():
        if not force and up_to_date():
            return tag
        _build_function(client, image, tag, content, progress)
    return tag


def _build_function(
    client: docker.DockerClient, image: Image, tag: str, content: str, progress: Progress
) -> None:
    labels = {
        LABEL_KIND: "function",
        LABEL_PYTHON: host_python_version(),
        LABEL_CONTENT: content,
        LABEL_USER_TAG: image.tag,
    }
    buildargs: dict[str, str] = {}
    with _build_context() as ctx:
        if image.base_image:
            base_attrs = _inspect_image(client, image.base_image)
            if base_attrs is None:
                raise ImageBuildError(
                    f"Image {image.name!r}: base image {image.base_image} is not in the local "
                    f"Docker engine, and there is no registry to pull from: `docker load` it "
                    f"first (or drop base_image to build on the engine's runtime image)"
                )
            _check_python(client, image.base_image, base_attrs)
            _stage_runtime_context(ctx, progress)
            base_dockerfile = _dockerfile_text()
            buildargs = {"BASE": image.base_image, "PYTHON_VERSION": host_python_version()}
            labels[LABEL_BASE] = image.base_image
        else:
            runtime = build_runtime_image(progress)
            base_dockerfile = f"FROM {runtime}"
            labels[LABEL_BASE] = runtime
        fn_build = ctx / "fn-build"
        (fn_build / "wheels").mkdir(parents=True)
        (fn_build / "constraints.txt").write_text("\n".join(pinned_requirements()) + "\n")
        _download_user_wheels(image, fn_build / "wheels", progress)
        for index, path, _dest in _copy_sources(image):
            target = ctx / "files" / str(index) / (Path(image.steps[index].args[0]).name or "src")
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, symlinks=True)
            else:
                shutil.copy2(path, target)
        (ctx / "Dockerfile").write_text(_function_dockerfile(image, base_dockerfile=base_dockerfile))
        _say(progress, f"building {tag}")
        _docker_build(
            client,
            ctx,
            tag,
            what=f"image {image.name!r}",
            buildargs=buildargs,
            labels=labels,
            progress=progress,
        )


def build_images(images: Iterable[Image], progress: Progress = None, force: bool = False) -> dict[str, str]:
    """Build the runtime image and each distinct user image; return {image name: tag}.

    Functions without an image use `runtime_image_tag()`. Raises `SDKUsageError` when two
    different images share a name (their tags would collide).
    """
    distinct: dict[str, Image] = {}
    for image in images:
        seen = distinct.get(image.name)
        if seen is None:
            distinct[image.name] = image
        elif seen is not image and _steps_fingerprint(seen) != _steps_fingerprint(image):
            raise SDKUsageError(
                f"Two different images are named {image.name!r}: give each Image its own name"
            )
    build_runtime_image(progress, force=force)
    return {name: build_function_image(image, progress, force=force) for name, image in distinct.items()}


# --- pushing to a registry (for clusters: the swarm backend) ---------------------------------


def registry_image(registry: str, tag: str) -> str:
    """`tag` as it is named in `registry`: `10.0.0.5:5000/engine-runtime:py3.11-<hash>`.

    Raises `SDKUsageError` for an address with a scheme (`http://...`): Docker names registries
    by host[:port] only; plain HTTP is the registry's and the engines' configuration.
    """
    address = registry.strip().rstrip("/")
    if not address or "://" in address or any(c.isspace() for c in address):
        raise SDKUsageError(
            f"registry {registry!r}: give its address as HOST[:PORT] (e.g. 10.0.0.5:5000), "
            "without http:// or https://"
        )
    return f"{address}/{tag}"


def push_images(tags: Iterable[str], registry: str, progress: Progress = None) -> list[str]:
    """Push local images to `registry` under the same repository and tag; return their names
    there (what cluster nodes pull).

    The registry must accept pushes from the local engine: over TLS, or over plain HTTP when it
    is on loopback (Docker allows that by default) or is in the engine's
    `insecure-registries`. The extra local tag a push needs is removed afterwards. Raises
    `ImageMissing` for an image that is not built, `InfrastructureError` when the push fails.
    """
    client = docker_client()
    pushed = []
    for tag in dict.fromkeys(tags):
        if _inspect_image(client, tag) is None:
            raise ImageMissing(f"Image {tag} is not built: run `engine image build` first")
        remote = registry_image(registry, tag)
        repository, _, version = remote.rpartition(":")
        _say(progress, f"pushing {remote}")
        try:
            client.api.tag(tag, repository, version)
            for line in client.api.push(repository, tag=version, stream=True, decode=True):
                if isinstance(line, dict) and line.get("error"):
                    raise InfrastructureError(f"pushing {remote} failed: {line['error']}")
        except docker.errors.DockerException as exc:
            raise InfrastructureError(f"pushing {remote} failed: {exc}") from exc
        finally:
            with contextlib.suppress(docker.errors.DockerException):
                client.api.remove_image(remote, noprune=True)
        pushed.append(remote)
    return pushed


def list_engine_images() -> list[tuple[str, str]]:
    """(tag, created) of every image the engine built (base, runtime, function), newest first."""
    client = docker_client()
    rows = []
    for item in client.api.images(filters={"label": LABEL_KIND}):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item.get("Created", 0)))
        for tag in item.get("RepoTags") or []:
            if tag != "<none>:<none>":
                rows.append((item.get("Created", 0), tag, created))
    rows.sort(reverse=True)
    return [(tag, created) for _, tag, created in rows]


def prune_images(progress: Progress = None, *, dry_run: bool = False) -> list[str]:
    """Remove runtime images other than the current one, and function images built on them.

    Each edit of the engine's code makes a new runtime tag; the old ones only share layers.
    Images still used by a container are kept. Returns the removed (or, with `dry_run`, the
    removable) tags.
    """
    client = docker_client()
    current = runtime_image_tag()
    removed = []
    for item in client.api.images(filters={"label": LABEL_KIND}):
        labels = item.get("Labels") or {}
        kind = labels.get(LABEL_KIND)
        stale = (kind == "runtime" and current not in (item.get("RepoTags") or [])) or (
            kind == "function"
            and labels.get(LABEL_BASE, "").startswith(RUNTIME_REPOSITORY + ":")
            and labels.get(LABEL_BASE) != current
        )
        if not stale:
            continue
        for ref in [t for t in item.get("RepoTags") or [] if t != "<none>:<none>"] or [item["Id"]]:
            if dry_run:
                removed.append(ref)
                continue
            try:
                client.api.remove_image(ref, noprune=False)
            except docker.errors.APIError as exc:
                _say(progress, f"kept {ref}: {exc.explanation or exc}")
                continue
            removed.append(ref)
            _say(progress, f"removed {ref}")
    return removed


__all__ = [
    "EXECUTOR_PORT",
    "EXECUTOR_UID",
    "RUNTIME_DEPENDENCIES",
    "base_image_candidates",
    "build_function_image",
    "build_images",
    "build_runtime_image",
    "cache_dir",
    "docker_client",
    "ensure_base_image",
    "function_image_tag",
    "host_python_version",
    "image_python_version",
    "list_engine_images",
    "pinned_requirements",
    "pip_download_args",
    "prune_images",
    "push_images",
    "registry_image",
    "runtime_image_tag",
    "run_once",
    "runtime_wheels",
    "wheel_cache_dir",
]
