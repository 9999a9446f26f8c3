"""Pushing built images to a registry (for clusters: the swarm backend), and listing and pruning
the engine's images in the local Docker engine."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

import docker
import docker.errors

from engine.errors import ImageMissing, InfrastructureError, SDKUsageError
from engine.images.common import (
    LABEL_BASE,
    LABEL_KIND,
    RUNTIME_REPOSITORY,
    Progress,
    _inspect_image,
    _say,
    docker_client,
)
from engine.images.runtime import runtime_image_tag


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
