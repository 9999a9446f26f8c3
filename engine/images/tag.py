"""The runtime image's tag: `engine-runtime:py3.X-<hash>` of the engine's source, the pinned
dependencies and the Dockerfile.

Apart from the builders (`engine.images.runtime`) because it needs no Docker SDK: `engine run`'s
early start (`engine.backends.early`) reads the tag on a thread while the CLI imports the rest
of itself, and that thread must not spend its time importing the SDK.

The dependencies (grpcio, protobuf, cloudpickle, pydantic, pyyaml, rich, blake3 and what they
require) are pinned to the versions installed on the host: the generated protobuf code and the
pickles must match on both sides.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
from pathlib import Path

from engine.errors import ImageBuildError
from engine.images.common import (
    _DOCKERFILE,
    _ENGINE_DIR,
    RUNTIME_DEPENDENCIES,
    RUNTIME_REPOSITORY,
    _arch,
    _normalize,
    _sha256,
    cache_dir,
    host_python_version,
)


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
    import importlib.metadata  # here: a cached tag (`runtime_image_tag`) needs none of this

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


def _stamp() -> tuple:
    """What the tag is computed from, cheaply: the engine's files and the Dockerfile (names,
    sizes, mtimes), the interpreter, and the directories packages are installed in (a `pip
    install` or uninstall adds or removes a `*.dist-info` entry there, which changes the
    directory's mtime: the pins are then computed again)."""
    site = [_stat_key(Path(p)) for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    return (sys.version, sys.prefix, *site, *(_stat_key(p) for p in [*_engine_source_files(), _DOCKERFILE]))


def _cache_file() -> Path:
    """One per engine checkout (two checkouts, two tags) and Python version."""
    checkout = _sha256([str(_ENGINE_DIR).encode()])[:12]
    return cache_dir() / "runtime-tags" / f"py{host_python_version()}-{checkout}.json"


def runtime_image_tag() -> str:
    """`engine-runtime:py3.X-<12 hex>`, derived from the engine's source files, the pinned
    dependency versions and the Dockerfile. Needs no Docker engine (nor the Docker SDK).

    Computing it reads every engine file and every pinned distribution's metadata (about 50 ms,
    more on a busy machine, where `engine run` starts its first container with it): the answer
    is kept, in this process and in the cache directory, under a cheap fingerprint of what it
    depends on (`_stamp`), and computed again when that changes."""
    stamp = _stamp()
    cached = _runtime_tag_cache.get(stamp)
    if cached:
        return cached
    key = json.dumps(stamp)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        saved = json.loads(_cache_file().read_text())
        if saved["stamp"] == key and isinstance(saved["tag"], str):
            _runtime_tag_cache[stamp] = saved["tag"]
            return saved["tag"]
    tag = _runtime_tag_of(_ENGINE_DIR, _dockerfile_text())
    _runtime_tag_cache.clear()
    _runtime_tag_cache[stamp] = tag
    with contextlib.suppress(OSError):  # a read-only cache directory: computed every time
        _cache_file().parent.mkdir(parents=True, exist_ok=True)
        temp = _cache_file().with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps({"stamp": key, "tag": tag}))
        os.replace(temp, _cache_file())
    return tag


def _runtime_tag_of(engine_root: Path, dockerfile: str) -> str:
    parts = [b"engine-runtime/1", host_python_version().encode(), _arch().encode()]
    parts += [pin.encode() for pin in pinned_requirements()]
    parts.append(dockerfile.encode())
    for path in _engine_source_files(engine_root):
        parts.append(path.relative_to(engine_root).as_posix().encode())
        parts.append(path.read_bytes())
    return f"{RUNTIME_REPOSITORY}:py{host_python_version()}-{_sha256(parts)[:12]}"
