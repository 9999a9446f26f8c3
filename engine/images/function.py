"""Function images: `engine-fn-<name>:<hash>` for a user's `engine.sdk.image.Image`.

Built FROM the runtime image (or from the Image's own `base_image`, with the runtime layers
replayed on top of it). `pip install` commands in its `run` steps are found, their packages
downloaded as wheels on the host, and pip in the build is pointed at those wheels only
(`PIP_NO_INDEX`, `PIP_FIND_LINKS`), with the engine's pins as constraints so a user package cannot
replace a dependency the engine needs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import docker

from engine.errors import ImageBuildError, SDKUsageError
from engine.images.common import (
    FUNCTION_REPOSITORY_PREFIX,
    LABEL_BASE,
    LABEL_CONTENT,
    LABEL_KIND,
    LABEL_PYTHON,
    LABEL_USER_TAG,
    Progress,
    _arch,
    _build_lock,
    _check_python,
    _inspect_image,
    _labels,
    _repository_name,
    _run_logged,
    _say,
    _sha256,
    docker_client,
    host_python_version,
    wheel_cache_dir,
)
from engine.images.runtime import (
    _build_context,
    _docker_build,
    _dockerfile_text,
    _link_or_copy,
    _pip_platform_args,
    _stage_runtime_context,
    build_runtime_image,
    pinned_requirements,
    runtime_image_tag,
)

if TYPE_CHECKING:
    from engine.sdk.image import Image

# Function-image build: where the wheels for user `pip install`s and the engine's constraints sit
# during the build (removed in the last step; /tmp is a tmpfs at run time anyway).
_FN_BUILD_DIR = "/tmp/engine-fn-build"

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
