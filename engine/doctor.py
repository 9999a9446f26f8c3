"""`engine doctor`: is this machine ready to run functions in containers? Each check says what
it found and, when something is wrong, what to do."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def run_checks() -> list[Check]:
    checks: list[Check] = []
    version = "%d.%d.%d" % sys.version_info[:3]
    checks.append(Check("python", sys.version_info >= (3, 10), f"engine runs on Python {version}",
                        "use Python 3.10 or newer"))
    try:
        from engine.images import docker_client

        client = docker_client()
        info = client.version()
        checks.append(Check("docker", True, f"Docker engine {info.get('Version')} (API {info.get('ApiVersion')}) answers"))
    except Exception as exc:  # noqa: BLE001 - every failure here is the same answer: no Docker
        checks.append(Check(
            "docker", False, f"no Docker engine answers ({str(exc).splitlines()[0][:160]})",
            "run `bash scripts/ensure-docker.sh` (installs and starts one), or use --backend process",
            required=False,
        ))
        return checks
    from engine import images

    tag = images.runtime_image_tag()
    built = dict(images.list_engine_images())
    if tag in built:
        py = images.image_python_version(tag)
        same = py == "%d.%d" % sys.version_info[:2]
        checks.append(Check("runtime image", True, f"{tag} (built {built[tag]})"))
        checks.append(Check(
            "python versions", same, f"image Python {py}, engine Python {version}",
            "rebuild with `engine image build --force` from this Python",
        ))
    else:
        checks.append(Check("runtime image", False, f"{tag} is not built",
                            "run `engine image build` (offline; about 2 minutes the first time)"))
    others = [t for t in built if t != tag]
    if others:
        checks.append(Check("other engine images", True, ", ".join(others[:8]) + (" ..." if len(others) > 8 else "")))
    has_debootstrap = bool(shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap"))
    checks.append(Check(
        "debootstrap", has_debootstrap,
        "available (builds a base image without a registry)" if has_debootstrap else "not installed",
        "apt-get install debootstrap (needed only when no python:3.X-slim image is present)",
        required=False,
    ))
    return checks
