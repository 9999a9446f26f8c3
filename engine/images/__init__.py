"""Building the images that function executors run in — locally, offline, with no registry.

Why offline: the machines this engine runs on have no container registry (`docker pull` fails),
and pip *inside* a container cannot verify the package index's TLS certificate (the index is
reached through a proxy whose CA only the host trusts). We do not disable verification. Instead
everything a build needs is fetched on the host, where pip works, and handed to Docker in the
build context; the build itself never touches the network. That is also exactly what an
air-gapped user needs.

Three kinds of image, each cached by a content-derived tag, each in its own module:

1. `base`: `python:3.X-slim` if the local engine already has it, otherwise
   `engine-base:bookworm-py3.X`, made once with debootstrap and `docker import`.
2. `runtime`: `engine-runtime:py3.X-<hash>`, from `runtime_image/Dockerfile` — the engine's
   source tree and its dependencies, pinned to the host's versions and installed from wheels
   downloaded on the host. The hash covers the engine source, the pins and the Dockerfile.
3. `function`: `engine-fn-<name>:<hash>` for a user's `engine.sdk.image.Image`, built FROM the
   runtime image; the wheels its `pip install`s need are downloaded on the host too.

`common` holds the constants, small helpers, the build lock, the Docker client and the Python
version check; `registry` pushes images to a registry (for the swarm backend) and lists and prunes
local ones. Import from `engine.images`: it re-exports the public names of all of them.

The Python minor version of every image must equal the host's: cloudpickle's output is only
portable between equal minor versions. Images carry it as the label `engine.python`, and a
mismatch raises `PythonVersionMismatch` before anything runs.

The Docker SDK is blocking: call these from the CLI or from a thread, never on an event loop.
Builds hold a per-user file lock, so parallel builds of one tag run once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. Imported on first use (PEP 562), not here: the builders import
# the Docker SDK, and `engine run`'s early start reads the runtime tag (`engine.images.tag`)
# without waiting for it.
_HOMES = {
    "base_image_candidates": "engine.images.base",
    "ensure_base_image": "engine.images.base",
    "BASE_REPOSITORY": "engine.images.common",
    "build_function_image": "engine.images.function",
    "build_images": "engine.images.function",
    "build_runtime_image": "engine.images.runtime",
    "cache_dir": "engine.images.common",
    "DEBIAN_SUITE": "engine.images.common",
    "DEBOOTSTRAP_PACKAGES": "engine.images.common",
    "docker_client": "engine.images.common",
    "EXECUTOR_PORT": "engine.images.common",
    "EXECUTOR_UID": "engine.images.common",
    "function_image_tag": "engine.images.function",
    "FUNCTION_REPOSITORY_PREFIX": "engine.images.common",
    "host_python_version": "engine.images.common",
    "image_python_version": "engine.images.common",
    "LABEL_BASE": "engine.images.common",
    "LABEL_CONTENT": "engine.images.common",
    "LABEL_KIND": "engine.images.common",
    "LABEL_PYTHON": "engine.images.common",
    "LABEL_USER_TAG": "engine.images.common",
    "list_engine_images": "engine.images.registry",
    "pinned_requirements": "engine.images.tag",
    "pip_download_args": "engine.images.function",
    "Progress": "engine.images.common",
    "prune_images": "engine.images.registry",
    "push_images": "engine.images.registry",
    "registry_image": "engine.images.registry",
    "run_once": "engine.images.common",
    "RUNTIME_DEPENDENCIES": "engine.images.common",
    "runtime_image_tag": "engine.images.tag",
    "RUNTIME_REPOSITORY": "engine.images.common",
    "runtime_wheels": "engine.images.runtime",
    "wheel_cache_dir": "engine.images.common",
}


_SUBMODULES = ("base", "common", "function", "registry", "runtime", "tag")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"engine.images.{name}")
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'engine.images' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from engine.images.base import base_image_candidates, ensure_base_image
    from engine.images.common import (
        BASE_REPOSITORY,
        DEBIAN_SUITE,
        DEBOOTSTRAP_PACKAGES,
        EXECUTOR_PORT,
        EXECUTOR_UID,
        FUNCTION_REPOSITORY_PREFIX,
        LABEL_BASE,
        LABEL_CONTENT,
        LABEL_KIND,
        LABEL_PYTHON,
        LABEL_USER_TAG,
        RUNTIME_DEPENDENCIES,
        RUNTIME_REPOSITORY,
        Progress,
        cache_dir,
        docker_client,
        host_python_version,
        image_python_version,
        run_once,
        wheel_cache_dir,
    )
    from engine.images.function import (
        build_function_image,
        build_images,
        function_image_tag,
        pip_download_args,
    )
    from engine.images.registry import (
        list_engine_images,
        prune_images,
        push_images,
        registry_image,
    )
    from engine.images.runtime import build_runtime_image, runtime_wheels
    from engine.images.tag import pinned_requirements, runtime_image_tag

__all__ = [
    "BASE_REPOSITORY",
    "DEBIAN_SUITE",
    "DEBOOTSTRAP_PACKAGES",
    "EXECUTOR_PORT",
    "EXECUTOR_UID",
    "FUNCTION_REPOSITORY_PREFIX",
    "LABEL_BASE",
    "LABEL_CONTENT",
    "LABEL_KIND",
    "LABEL_PYTHON",
    "LABEL_USER_TAG",
    "RUNTIME_DEPENDENCIES",
    "RUNTIME_REPOSITORY",
    "Progress",
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
