"""The runtime image: `engine-runtime:py3.X-<hash>`, from `runtime_image/Dockerfile`.

Its dependencies (grpcio, protobuf, cloudpickle, pydantic, pyyaml, rich, blake3 and what they
require) are pinned to the versions installed on the host — the generated protobuf code and the
pickles must match on both sides — downloaded as wheels into `~/.cache/engine/wheels/<cpXY-arch>/` (reused
across builds, so a rebuild needs no network) and installed with `pip --no-index`. The engine
package goes in as its source tree. The hash covers the engine source, the pins and the
Dockerfile, so editing engine code yields a new tag and a stale image is never used. (The base is
not in the tag: after adding a `python:3.X-slim` image, rebuild with `force`.) Old runtime tags
only share layers with the current one; `prune_images()` removes them.

Also here: the `docker build` driver and build-context helpers that function images reuse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from engine.errors import ImageBuildError
from engine.images.base import ensure_base_image
from engine.images.common import (
    _ANSI,
    _ENGINE_DIR,
    _STEP_TAIL_LINES,
    LABEL_BASE,
    LABEL_KIND,
    LABEL_PYTHON,
    Progress,
    _arch,
    _build_lock,
    _inspect_image,
    _normalize,
    _run_logged,
    _say,
    _shorten,
    _tail,
    cache_dir,
    docker_client,
    host_python_version,
    wheel_cache_dir,
)
from engine.images.tag import (
    _dockerfile_text,
    _engine_source_files,
    _runtime_tag_of,
    pinned_requirements,
    runtime_image_tag,
)

_BUILD_HTTP_TIMEOUT = 3600  # a silent `run` step (a compile) must not time the stream out


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
