"""The base image: a Python of the host's minor version that the runtime image is built on.

`python:3.X-slim` if the local engine already has it (the ordinary path), otherwise
`engine-base:bookworm-py3.X`, made once with `debootstrap --variant=minbase` and `docker import`
(about 70 s + 3 s here; never repeated while the image exists).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors

from engine.errors import ImageBuildError, PythonVersionMismatch
from engine.images.common import (
    BASE_REPOSITORY,
    DEBIAN_SUITE,
    DEBOOTSTRAP_PACKAGES,
    LABEL_KIND,
    LABEL_PYTHON,
    Progress,
    _build_lock,
    _check_python,
    _inspect_image,
    _run_logged,
    _say,
    cache_dir,
    docker_client,
    host_python_version,
)


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
