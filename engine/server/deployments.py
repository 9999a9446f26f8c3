"""Deployed code: every version of every application, on disk and imported.

Layout, under the state directory:

    apps/<name>/<version>/code.zip         the bytes `engine deploy` uploaded: what executors receive
    apps/<name>/<version>/code/            the same, unpacked: what the server imports
    apps/<name>/<version>/deployment.json  name, version, sha256 of code.zip, the application file

`deployment.json` is written last (to a temporary name, then renamed), so a version directory
without it is an interrupted deploy and is ignored. Versions are never changed or removed: a run
records its application file's path, which names its version, so a run started on version 3
finishes (or resumes, after a restart) on version 3 even when version 4 is deployed meanwhile.
Deploying code identical to the latest version (same digest, same file) creates no new version.

Importing: the server imports each version to validate inputs against the application's type
hints and to read its functions' settings. Two deployments may well both have a module called
`app`, so each import is isolated: modules imported from other deployments are removed from
`sys.modules` first, the function registry is emptied for the import and restored after, and
the version's functions' settings are all resolved while its registry is in place (the
`AppSpec` then never needs the global registry). `activate()` puts a version's modules back in
`sys.modules`, for unpickling values whose classes it defines. Limitation: the scheduler itself
unpickles map/reduce values; with two deployments sharing a module name, a map over instances
of a class from that module resolves the class in whichever version was activated last.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.app import MAX_CODE_BYTES, AppSpec, app_spec_for, import_file
from engine.errors import SDKUsageError
from engine.sdk.function import Function

log = logging.getLogger("engine.server.deployments")


class BadBundle(SDKUsageError):
    """The uploaded bytes are not a usable project archive."""


@dataclass
class Deployment:
    name: str
    version: int
    digest: str
    file: str
    deployed_at: float
    directory: Path
    spec: AppSpec | None = None
    function: Function[..., Any] | None = None
    modules: dict[str, ModuleType] = field(default_factory=dict)

    @property
    def code_dir(self) -> Path:
        return self.directory / "code"

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest,
                "file": self.file, "deployed_at": self.deployed_at}


class Deployments:
    def __init__(self, state_dir: Path) -> None:
        self.root = (Path(state_dir) / "apps").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._versions: dict[str, dict[int, Deployment]] = {}
        self._active: Deployment | None = None

    # --- discovery ---------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Read every complete version from disk and import the latest of each application.
        Returns one line per application that could not be loaded (the server goes on)."""
        problems = []
        for app_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for version_dir in app_dir.iterdir():
                meta = version_dir / "deployment.json"
                if not meta.is_file():
                    continue
                data = json.loads(meta.read_text())
                dep = Deployment(name=data["name"], version=int(data["version"]), digest=data["digest"],
                                 file=data["file"], deployed_at=float(data["deployed_at"]),
                                 directory=version_dir)
                self._versions.setdefault(dep.name, {})[dep.version] = dep
        for name in sorted(self._versions):
            try:
                self.get(name)
            except SDKUsageError as exc:
                problems.append(f"application {name}: {exc}")
        return problems

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[Deployment]:
        return [self._versions[name][v] for v in sorted(self._versions.get(name, {}))]

    def latest(self, name: str) -> Deployment | None:
        versions = self._versions.get(name)
        return versions[max(versions)] if versions else None

    def get(self, name: str, version: int | None = None) -> Deployment:
        """A loaded version (the latest by default). Raises KeyError if there is none, or
        `SDKUsageError` if its code no longer imports."""
        versions = self._versions.get(name)
        if not versions:
            raise KeyError(name)
        dep = versions[max(versions) if version is None else version]
        if dep.spec is None:
            self._load(dep, self._zip_bytes(dep))
        return dep

    def version_of(self, application: str, app_file: str) -> int | None:
        """The version a run was started on, from the application file path it recorded;
        None for a run that is not of a deployed application (a run of `engine run`)."""
        root = str(self.root) + os.sep
        if not app_file.startswith(root):
            return None
        parts = app_file[len(root):].split(os.sep)
        if len(parts) < 3 or parts[0] != application or not parts[1].isdigit():
            return None
        return int(parts[1])

    def for_app_file(self, application: str, app_file: str) -> Deployment | None:
        """The loaded version a run was started on (see `version_of`), or None."""
        version = self.version_of(application, app_file)
        if version is None or version not in self._versions.get(application, {}):
            return None
        return self.get(application, version)

    # --- deploying ---------------------------------------------------------------------------

    def deploy(self, bundle: bytes, file: str) -> list[tuple[Deployment, bool]]:
        """Register the applications `file` defines in the zipped project `bundle`; returns
        each deployment and whether it is new (False: identical to the latest version)."""
        file = file.strip().lstrip("/")
        if not file.endswith(".py") or ".." in Path(file).parts:
            raise BadBundle(f"file must be a .py path inside the project, got {file!r}")
        digest = hashlib.sha256(bundle).hexdigest()
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            _unpack(bundle, incoming / "code")
            if not (incoming / "code" / file).is_file():
                raise BadBundle(f"the archive has no {file}")
            try:
                with self._isolated(incoming / "code") as registry:
                    module, module_name, _ = import_file(incoming / "code" / file)
                    names = [f.name for fns in registry.values() for f in fns
                             if f.is_application and f.module == module_name]
            finally:
                _drop_modules_under(incoming)
            if not names:
                raise SDKUsageError(f"{file} defines no @application()")
            out = []
            for name in names:
                latest = self.latest(name)
                if latest is not None and latest.digest == digest and latest.file == file:
                    out.append((self.get(name, latest.version), False))
                    continue
                version = (latest.version if latest else 0) + 1
                target = self.root / name / str(version)
                if target.exists():  # an interrupted deploy left it without deployment.json
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                shutil.copytree(incoming / "code", target / "code")
                (target / "code.zip").write_bytes(bundle)
                dep = Deployment(name=name, version=version, digest=digest, file=file,
                                 deployed_at=time.time(), directory=target)
                self._load(dep, bundle)
                _write_atomic(target / "deployment.json", json.dumps(dep.summary()))
                self._versions.setdefault(name, {})[version] = dep
                out.append((dep, True))
            return out
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    # --- importing ---------------------------------------------------------------------------

    def _zip_bytes(self, dep: Deployment) -> bytes:
        try:
            return (dep.directory / "code.zip").read_bytes()
        except OSError as exc:
            raise SDKUsageError(f"version {dep.version} has no code.zip ({exc.strerror})") from None

    def _load(self, dep: Deployment, bundle: bytes) -> None:
        app_file = dep.code_dir / dep.file
        with self._isolated(dep.code_dir) as registry:
            module, module_name, root = import_file(app_file)
            fn = getattr(module, dep.name, None)
            if not isinstance(fn, Function) or not fn.is_application:
                raise SDKUsageError(f"{dep.file} no longer defines the application {dep.name}")
            spec = app_spec_for(fn, app_file, module_name, root)
            # Resolve every function's settings now, while this version's registry is in place.
            for fns in registry.values():
                for f in fns:
                    spec.settings(f.name)
        # The executors receive exactly the uploaded bytes (cached_property: set the cache).
        spec.__dict__["code_zip"] = bundle
        spec.__dict__["code_digest"] = dep.digest
        dep.spec, dep.function = spec, fn
        dep.modules = {name: m for name, m in list(sys.modules.items())
                       if _module_under(m, dep.code_dir)}
        self._active = dep

    @contextlib.contextmanager
    def _isolated(self, code_dir: Path) -> Iterator[dict[str, list[Function[..., Any]]]]:
        from engine.sdk import function as sdk_function

        registry = sdk_function._REGISTRY
        saved = {k: list(v) for k, v in registry.items()}
        registry.clear()
        self._active = None
        _drop_modules_under(self.root)
        self._set_path(code_dir)
        try:
            yield registry
        finally:
            registry.clear()
            registry.update(saved)

    def _set_path(self, code_dir: Path) -> None:
        sys.path[:] = [p for p in sys.path if not _is_under(Path(p or "."), self.root)]
        sys.path.insert(0, str(code_dir))
        importlib.invalidate_caches()

    def activate(self, dep: Deployment) -> None:
        """Make `dep`'s modules the ones `import` (and unpickling) finds, until another
        version is activated or imported."""
        if self._active is dep:
            return
        _drop_modules_under(self.root)
        sys.modules.update(dep.modules)
        self._set_path(dep.code_dir)
        self._active = dep


def _unpack(bundle: bytes, dest: Path) -> None:
    try:
        zf = zipfile.ZipFile(io.BytesIO(bundle))
    except zipfile.BadZipFile:
        raise BadBundle("the request body is not a zip archive of the project") from None
    with zf:
        total = sum(info.file_size for info in zf.infolist())
        if total > MAX_CODE_BYTES:
            raise BadBundle(f"the project is over {MAX_CODE_BYTES >> 20} MB unpacked")
        dest.mkdir(parents=True)
        base = dest.resolve()
        for name in zf.namelist():
            if not _is_under((dest / name).resolve(), base):
                raise BadBundle(f"archive entry escapes the project directory: {name}")
        zf.extractall(dest)


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def _module_under(module: ModuleType | None, root: Path) -> bool:
    # A string test: this runs over every module in sys.modules. Deployed modules are imported
    # from absolute, resolved sys.path entries, so their __file__ starts with the root.
    file = getattr(module, "__file__", None)
    return isinstance(file, str) and file.startswith(str(root) + os.sep)


def _drop_modules_under(root: Path) -> None:
    for name, module in list(sys.modules.items()):
        if _module_under(module, root):
            del sys.modules[name]


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
