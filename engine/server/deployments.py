"""Deployed code: every version of every application, in the store and imported.

The store of record is the `deployments` table (name, version, sha256 of the archive, the
application file, the zip bytes `engine deploy` uploaded — what executors receive), so every
server on the same store runs and resumes every run. Each server caches versions it uses,
unpacked, under its state directory:

    apps/<name>/<version>/code/            the archive, unpacked: what the server imports

A cache directory is written under a temporary name and renamed, so a half-unpacked one is never
used. Versions are never changed or removed: a run records its version (`runs.version`), so a
run started on version 3 finishes (or resumes, after a restart or on another server) on version
3 even when version 4 is deployed meanwhile. Deploying code identical to the latest version
(same digest, same file) creates no new version. Two servers deploying at once each get their
own version number (the table's key decides; the loser takes the next).

State directories from before deployments moved into the store (`apps/<name>/<version>/
deployment.json` beside `code.zip`) are imported into it once, at the first scan.

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
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from engine.app import MAX_CODE_BYTES, AppSpec, app_spec_for, import_file
from engine.errors import SDKUsageError
from engine.sdk.function import Function
from engine.store import RunRow, Store

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
    def __init__(self, state_dir: Path, store: Store) -> None:
        self.root = (Path(state_dir) / "apps").resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._versions: dict[str, dict[int, Deployment]] = {}
        self._active: Deployment | None = None

    # --- discovery ---------------------------------------------------------------------------

    def scan(self) -> list[str]:
        """Read every version from the store and import the latest of each application.
        Returns one line per application that could not be loaded (the server goes on)."""
        self._import_legacy()
        self.refresh()
        problems = []
        for name in sorted(self._versions):
            try:
                self.get(name)
            except SDKUsageError as exc:
                problems.append(f"application {name}: {exc}")
        return problems

    def refresh(self) -> None:
        """Learn the versions deployed since (by this server or another on the same store)."""
        for row in self.store.deployments():
            known = self._versions.setdefault(row.name, {})
            if row.version not in known:
                known[row.version] = Deployment(
                    name=row.name, version=row.version, digest=row.digest, file=row.file,
                    deployed_at=row.deployed_at, directory=self.root / row.name / str(row.version))

    def _import_legacy(self) -> None:
        have = {(d.name, d.version) for d in self.store.deployments()}
        for meta in sorted(self.root.glob("*/*/deployment.json")):
            data = json.loads(meta.read_text())
            key = (data["name"], int(data["version"]))
            zip_path = meta.parent / "code.zip"
            if key in have or not zip_path.is_file():
                continue
            self.store.import_deployment(key[0], key[1], data["digest"], data["file"],
                                         float(data["deployed_at"]), zip_path.read_bytes())
            log.info("deployment imported into the store", extra={"fields": {"application": key[0],
                                                                              "version": key[1]}})
        # Runs accepted before runs recorded their version named it by their application
        # file's path, `<root>/<name>/<version>/code/<file>`: record it, so they are taken.
        root = str(self.root) + os.sep
        for row in self.store.runs_in_order(("queued", "running", "failed", "cancelled")):
            parts = row.app_file[len(root):].split(os.sep) if row.app_file.startswith(root) else []
            if row.version is None and len(parts) >= 3 and parts[0] == row.application and parts[1].isdigit():
                self.store.update_run(row.run_id, version=int(parts[1]))
        self.store.commit()

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
        if not versions or (version is not None and version not in versions):
            self.refresh()
            versions = self._versions.get(name)
        if not versions:
            raise KeyError(name)
        dep = versions[max(versions) if version is None else version]
        if dep.spec is None:
            self._load(dep, self._code(dep))
        return dep

    def for_run(self, row: RunRow) -> Deployment | None:
        """The loaded version a run was accepted on, or None (a run of `engine run`, or a
        version this store does not have)."""
        if row.version is None:
            return None
        try:
            return self.get(row.application, row.version)
        except KeyError:
            return None

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
            self.refresh()
            out = []
            for name in names:
                latest = self.latest(name)
                if latest is not None and latest.digest == digest and latest.file == file:
                    out.append((self.get(name, latest.version), False))
                    continue
                row = None
                while row is None:  # another server took the number: the next one
                    row = self.store.add_deployment(name, digest, file, bundle)
                dep = Deployment(name=name, version=row.version, digest=digest, file=file,
                                 deployed_at=row.deployed_at, directory=self.root / name / str(row.version))
                self._versions.setdefault(name, {})[row.version] = dep
                self._load(dep, bundle)
                out.append((dep, True))
            return out
        finally:
            shutil.rmtree(incoming, ignore_errors=True)

    def _code(self, dep: Deployment) -> bytes:
        try:
            return self.store.deployment_code(dep.name, dep.version)
        except KeyError:
            raise SDKUsageError(f"version {dep.version} of {dep.name} is not in the store") from None

    def _cache(self, dep: Deployment, bundle: bytes) -> None:
        """Unpack the version into its cache directory, once (atomically, by rename)."""
        if dep.code_dir.is_dir():
            return
        dep.directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dep.directory))
        try:
            _unpack(bundle, staging / "code")
            try:
                os.replace(staging / "code", dep.code_dir)
            except OSError:
                if not dep.code_dir.is_dir():  # not another process's rename winning the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- importing ---------------------------------------------------------------------------

    def _load(self, dep: Deployment, bundle: bytes) -> None:
        self._cache(dep, bundle)
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
