"""`Image`: how to extend the runtime image for one function.

A function runs in the engine's runtime image unless its `@function(image=...)` names an `Image`.
An `Image` is only a description — a base and an ordered list of steps (`run`, `env`, `copy`,
`workdir`), chained like Tensorlake's `Image`, whose names and meaning it keeps so ported code
works unchanged:

    image = (
        Image(name="pdf-tools")
        .run("apt-get install -y poppler-utils")
        .run("pip install pypdf==4.2.0")
        .env("PDF_DPI", "150")
        .copy("assets/fonts", "/opt/fonts")
    )

`engine image build` turns it into a Docker image (see `engine.images`). Things worth knowing
about the steps:

- `run` steps run as root, in order, with `/bin/sh -c`. The build has no network access to the
  package index, so `pip install ...` commands are detected and their packages are downloaded as
  wheels on the host first; pip inside the build installs from those wheels only. Packages with
  no wheel for Linux/this Python cannot be installed that way.
- `copy(src, dest)` takes `src` relative to the directory `engine image build` runs in, with
  Dockerfile `COPY` semantics (a directory's contents are copied into `dest`).
- Executors run as an unprivileged user with a read-only root filesystem; `/tmp` and
  `/home/engine` are fresh, empty tmpfs mounts at run time, so files put there by a build step
  are not visible to the function. Put them elsewhere (e.g. `/opt/...`).
- Secrets do not belong in `env` (they would be baked into the image): pass them at run time.

This module is part of the SDK layer: it imports nothing from Docker, gRPC, the scheduler or the
backends, and an `Image` pickles, so it can travel with a function to an executor.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from engine.errors import SDKUsageError

StepKind = Literal["run", "env", "copy", "workdir"]

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ImageStep:
    """One build step. `args` are, by kind: run `(command,)`; env `(key, value)`;
    copy `(src, dest)`; workdir `(path,)`."""

    kind: StepKind
    args: tuple[str, ...]


class Image:
    """A container image for a function: a base plus ordered build steps.

    `name` names the image (`engine-fn-<name>:<hash>` once built); two functions that share an
    `Image` share the built image. `tag` is kept for Tensorlake compatibility and recorded on the
    built image as a label; the Docker tag itself is a content hash so that a changed definition
    never reuses a stale image. `base_image` defaults to the engine's runtime image; any other
    base must be a Debian-like image with `python3` of the engine's minor version, already present
    in the local Docker engine (there is no registry to pull from) — the engine and its
    dependencies are installed on top of it.

    Each step method returns the image itself, so calls chain. Raises `SDKUsageError` for an
    empty name, an empty command or path, or an environment variable name that is not a valid
    identifier.
    """

    def __init__(self, name: str = "default", tag: str = "latest", base_image: str | None = None):
        if not isinstance(name, str) or not name.strip():
            raise SDKUsageError(f"Image name must be a non-empty string, got {name!r}")
        if not isinstance(tag, str) or not tag.strip():
            raise SDKUsageError(f"Image tag must be a non-empty string, got {tag!r}")
        if base_image is not None and (not isinstance(base_image, str) or not base_image.strip()):
            raise SDKUsageError(
                f"Image base_image must be an image reference like 'python:3.11-slim' or None, "
                f"got {base_image!r}"
            )
        self._name = name
        self._tag = tag
        self._base_image = base_image
        self._steps: list[ImageStep] = []

    # --- read-only attributes ----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def base_image(self) -> str | None:
        """The base image reference, or None for the engine's runtime image."""
        return self._base_image

    @property
    def steps(self) -> tuple[ImageStep, ...]:
        """The build steps, in order (a tuple: add steps with the methods below)."""
        return tuple(self._steps)

    # --- steps -------------------------------------------------------------------------------

    def run(self, commands: str | list[str]) -> Image:
        """Run shell command(s) as root at build time. A list adds one step per command."""
        for command in [commands] if isinstance(commands, str) else list(commands):
            if not isinstance(command, str) or not command.strip():
                raise SDKUsageError(
                    f"Image {self._name!r}: run() needs a non-empty shell command, got {command!r}"
                )
            self._steps.append(ImageStep("run", (command,)))
        return self

    def env(self, key: str, value: str) -> Image:
        """Set an environment variable in the image (not for secrets: pass those at run time)."""
        if not isinstance(key, str) or not _ENV_KEY.match(key):
            raise SDKUsageError(
                f"Image {self._name!r}: env() key must be a shell identifier "
                f"(letters, digits, _), got {key!r}"
            )
        if not isinstance(value, str):
            raise SDKUsageError(
                f"Image {self._name!r}: env({key!r}, ...) value must be a string, got {type(value).__name__}"
            )
        if "\n" in value or "\r" in value:
            raise SDKUsageError(f"Image {self._name!r}: env({key!r}, ...) value has a newline")
        self._steps.append(ImageStep("env", (key, value)))
        return self

    def copy(self, src: str, dest: str) -> Image:
        """Copy `src` (relative to the build's working directory) to `dest` in the image."""
        for what, path in (("src", src), ("dest", dest)):
            if not isinstance(path, str) or not path.strip():
                raise SDKUsageError(
                    f"Image {self._name!r}: copy() {what} must be a non-empty path, got {path!r}"
                )
        self._steps.append(ImageStep("copy", (src, dest)))
        return self

    def workdir(self, directory: str) -> Image:
        """Set the working directory for later steps and for the function at run time."""
        if not isinstance(directory, str) or not directory.strip():
            raise SDKUsageError(f"Image {self._name!r}: workdir() needs a non-empty path, got {directory!r}")
        self._steps.append(ImageStep("workdir", (directory,)))
        return self

    def __repr__(self) -> str:
        base = f", base_image={self._base_image!r}" if self._base_image else ""
        return f"Image(name={self._name!r}, tag={self._tag!r}{base}, steps={len(self._steps)})"


__all__ = ["Image", "ImageStep"]
