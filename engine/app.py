"""An application as the engine runs it: the user's code, its functions' settings, its input.

`load_app("app.py:main")` imports the user's file, finds the application function, merges each
function's decorator settings with `engine.yaml`, and knows how to ship the code: the project
directory (the directory the module is imported from) zipped deterministically, so the same
code always has the same digest and executors can be reused across runs of it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import io
import json
import os
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from engine.config import EngineConfig, check_function_names, load_config
from engine.errors import ConfigError, InputError, SDKUsageError
from engine.sdk.file import File
from engine.sdk.function import Function, FunctionConfig, region_constraint, registered
from engine.sdk.http import HttpBody, is_raw_body_hint
from engine.sdk.image import Image
from engine.sdk.retries import Retries

if TYPE_CHECKING:
    from engine.scheduler.budgets import Budget

SKIP_DIRS = {
    ".git", ".hg", ".engine", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", "build", "dist", ".tox",
}
MAX_CODE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class FunctionSettings:
    """Effective settings of one function: decorator values overridden by engine.yaml. Never
    changed once made; `AppSpec.resolve_images` replaces them with their image tags."""

    name: str
    module: str
    config: FunctionConfig
    retries: Retries
    secrets: dict[str, str] = field(default_factory=dict)
    # Docker image to run it in: engine.yaml's `image`, or its `Image`'s tag once
    # `AppSpec.resolve_images` ran; None for the runtime image.
    image_tag: str | None = None
    # Placement constraints (swarm backend): engine.yaml's, then the region's.
    constraints: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        return dict(self.secrets)


@dataclass
class AppSpec:
    name: str
    app_file: Path
    module: str
    code_root: Path
    config_path: Path | None
    config: EngineConfig
    functions: dict[str, FunctionSettings]
    env_source: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # False for commands that never run functions (building images): secrets may be absent.
    require_secrets: bool = True
    # "finish" or "cancel" (`engine.sdk.function.ON_FAILURE`): engine.yaml's, else the
    # decorator's. Resolved when the spec is made: a server may have another version's modules
    # imported by the time a run fails.
    on_failure: str = "finish"

    def settings(self, name: str) -> FunctionSettings:
        found = self.functions.get(name)
        if found is None:
            fn = registered(name, self.module)
            if fn is None:
                raise SDKUsageError(f"no @function() named {name!r} in {self.app_file}")
            found = self.functions[name] = self._settings_for(fn)
        return found

    def _settings_for(self, fn: Function[..., Any]) -> FunctionSettings:
        override = self.config.functions.get(fn.name)
        config: FunctionConfig = fn.config
        if override is not None:
            # `image` and `constraints` are the backend's business, not FunctionConfig fields.
            changes = {k: getattr(override, k) for k in override.model_fields_set
                       if k not in ("image", "constraints")}
            if override.retries is not None:
                changes["retries"] = override.retries.to_retries()
            config = config.replace(**changes)
        app_fn = registered(self.name, self.module)
        app_retries = app_fn.application.retries if app_fn and app_fn.application else Retries()
        retries = config.retries or app_retries
        secrets = {}
        for key in config.secrets:
            if key not in self.env_source:
                if not self.require_secrets:
                    continue
                raise SDKUsageError(
                    f"function {fn.name} needs secret {key!r}: set it in the environment or "
                    "pass --env-file FILE"
                )
            secrets[key] = self.env_source[key]
        image_tag = override.image if override is not None and override.image else None
        # A function defined in a script run as __main__ is imported by executors under the
        # script's own name.
        module = self.module if fn.module == "__main__" else fn.module
        constraints = tuple(override.constraints or ()) if override is not None else ()
        # A region (the function's, else the application's) is a placement constraint.
        app_region = app_fn.application.region if app_fn and app_fn.application else None
        region = config.region or app_region
        if region is not None and region_constraint(region) not in constraints:
            constraints += (region_constraint(region),)
        return FunctionSettings(fn.name, module, config, retries, secrets, image_tag, constraints)

    def budget(self) -> Budget:
        """The default budget of this application's runs: the decorator's limits, with those
        engine.yaml's `budget:` names replacing them (a submission may change them again)."""
        from engine.scheduler.budgets import Budget

        app_fn = registered(self.name, self.module)
        app = app_fn.application if app_fn is not None else None
        budget = Budget(app.max_calls, app.max_depth, app.max_duration) if app is not None else Budget()
        if self.config.budget is not None:
            given = self.config.budget
            budget = budget.updated({k: getattr(given, k) for k in given.model_fields_set})
        return budget

    def resolve_images(self, tag_for: Callable[[Image], str]) -> None:
        """Give each function with an `Image` (and no image of its own in engine.yaml) that
        image's tag, once, before any of its calls runs: `tag_for` builds it (docker) or names
        the pushed one (swarm). The one place image tags are decided."""
        for name, settings in self.functions.items():
            if settings.image_tag is None and settings.config.image is not None:
                self.functions[name] = replace(settings, image_tag=tag_for(settings.config.image))

    @functools.cached_property
    def max_concurrent_calls(self) -> int | None:
        """Calls of this application's runs, all together, that may execute at once:
        engine.yaml's `max_concurrent_calls`, else the decorator's; None for no cap."""
        if self.config.max_concurrent_calls is not None:
            return self.config.max_concurrent_calls
        fn = registered(self.name, self.module)
        return fn.application.max_concurrent_calls if fn and fn.application else None

    @functools.cached_property
    def code_zip(self) -> bytes:
        return zip_project(self.code_root)

    @functools.cached_property
    def code_digest(self) -> str:
        return hashlib.sha256(self.code_zip).hexdigest()

    @property
    def function(self) -> Function[..., Any]:
        fn = registered(self.name, self.module)
        assert fn is not None
        return fn


def zip_project(root: Path) -> bytes:
    """Zip `root` deterministically (sorted, fixed timestamps), skipping caches and VCS dirs."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
            )
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                total += path.stat().st_size
                if total > MAX_CODE_BYTES:
                    raise SDKUsageError(
                        f"the project directory {root} is over {MAX_CODE_BYTES >> 20} MB: keep "
                        "large data out of it (executors receive the whole directory)"
                    )
                info = zipfile.ZipInfo(str(path.relative_to(root)), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return buffer.getvalue()


def module_location(path: Path) -> tuple[str, Path]:
    """The module name a file imports as, and the directory that must be on sys.path for it:
    walk up through packages (directories with __init__.py)."""
    path = path.resolve()
    parts = [path.stem]
    root = path.parent
    while (root / "__init__.py").exists():
        parts.insert(0, root.name)
        root = root.parent
    return ".".join(parts), root


def import_file(path: Path) -> tuple[Any, str, Path]:
    module_name, root = module_location(path)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise SDKUsageError(f"{exc.filename}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - user code failed at import: say where, briefly
        tb = exc.__traceback__
        where = ""
        while tb is not None:
            if tb.tb_frame.f_code.co_filename.startswith(str(root)):
                where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}: "
            tb = tb.tb_next
        raise SDKUsageError(f"{where}importing {path.name} failed: {type(exc).__name__}: {exc}") from None
    return module, module_name, root


def load_app(
    target: str, config_path: Path | None = None, env_file: Path | None = None,
    *, require_secrets: bool = True,
) -> AppSpec:
    """Load `FILE.py:FUNCTION`. Raises `SDKUsageError` (or `ConfigError`) with one clear line."""
    if ":" not in target:
        raise SDKUsageError(f"expected FILE.py:FUNCTION, got {target!r}")
    file_part, _, fn_name = target.rpartition(":")
    path = Path(file_part)
    if not path.is_file():
        raise SDKUsageError(f"no such file: {file_part}")
    module, module_name, root = import_file(path)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise SDKUsageError(f"{file_part} has no function {fn_name!r}")
    if not isinstance(fn, Function):
        raise SDKUsageError(f"{file_part}:{fn_name} is not decorated with @function()")
    if not fn.is_application:
        raise SDKUsageError(
            f"{file_part}:{fn_name} is not an application: add @application() to it"
        )
    return app_spec_for(fn, path, module_name, root, config_path, env_file,
                        require_secrets=require_secrets)


def app_spec_for(
    fn: Function[..., Any], app_file: Path, module_name: str, root: Path,
    config_path: Path | None = None, env_file: Path | None = None,
    *, require_secrets: bool = True,
) -> AppSpec:
    if config_path is None and (app_file.parent / "engine.yaml").is_file():
        config_path = app_file.parent / "engine.yaml"
    config = load_config(config_path)
    env = dict(os.environ)
    if env_file is not None:
        env.update(read_env_file(env_file))
    spec = AppSpec(
        name=fn.name, app_file=app_file.resolve(), module=module_name, code_root=root,
        config_path=config_path, config=config, functions={}, env_source=env,
        require_secrets=require_secrets,
        on_failure=config.on_failure or (fn.application.on_failure if fn.application else "finish"),
    )
    known = {f.name for f in _module_functions(module_name)}
    check_function_names(config, config_path, known | set(_all_registered()))
    for f in _module_functions(module_name):
        spec.functions[f.name] = spec._settings_for(f)
    spec.functions.setdefault(fn.name, spec._settings_for(fn))
    return spec


@functools.cache
def registered_application(name: str) -> AppSpec:
    """The `@application()` named `name` among those this process imported (for a call of one
    application from another under `engine run`; `engine server` resolves deployed ones)."""
    fn = registered(name)
    if fn is None or not fn.is_application:
        raise SDKUsageError(f"no @application() named {name!r} is defined in this code; to call an "
                            "application of another project, deploy both to `engine server`")
    return app_spec_from_function(fn)


def app_spec_from_function(fn: Function[..., Any]) -> AppSpec:
    """For `run_local_application`: locate the module that defines `fn`."""
    module = sys.modules.get(fn.module)
    file = getattr(module, "__file__", None)
    if file is None:
        raise SDKUsageError(f"cannot find the file that defines {fn.name}: define it in a .py file")
    path = Path(file)
    if fn.module == "__main__":
        module_name, root = path.stem, path.parent.resolve()
    else:
        module_name = fn.module
        root = path.resolve().parent
        for _ in range(module_name.count(".")):
            root = root.parent
    return app_spec_for(fn, path, module_name, root)


def _module_functions(module_name: str) -> list[Function[..., Any]]:
    from engine.sdk.function import _REGISTRY

    return [f for fns in _REGISTRY.values() for f in fns
            if f.module == module_name or (f.module == "__main__" and _main_stem() == module_name)]


def _main_stem() -> str | None:
    file = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(file).stem if file else None


def _all_registered() -> list[str]:
    from engine.sdk.function import registered_names

    return registered_names()


def read_env_file(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the env file ({exc.strerror})") from None
    env = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        env[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return env


# --- application input and output --------------------------------------------------------------


def _params(fn: Function[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(fn.fn).parameters.values())


def _hints(fn: Function[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(fn.fn)
    except Exception:  # noqa: BLE001 - unresolvable hints: validate nothing rather than fail
        return {}


def raw_body_parameter(fn: Function[..., Any]) -> tuple[str, type] | None:
    """The parameter annotated `File` or `HttpBody` (its name and that class), if there is one;
    `SDKUsageError` if there are several, which no raw body or `--input-file` could fill."""
    hints = _hints(fn)
    found = [(p.name, hints[p.name]) for p in _params(fn) if is_raw_body_hint(hints.get(p.name))]
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise SDKUsageError(f"{fn.name} has several File/HttpBody parameters ({names}): send "
                            "multipart/form-data with one part named after each")
    return found[0] if found else None


def raw_value(hint: type, content: bytes, content_type: str | None) -> File | HttpBody:
    """The value a raw body becomes for a parameter annotated `hint` (File or HttpBody)."""
    if issubclass(hint, File):
        return hint(content, content_type or "application/octet-stream")
    assert issubclass(hint, HttpBody)
    return hint(content, content_type)


def parse_input(fn: Function[..., Any], text: str | None,
                file: tuple[bytes, str] | None = None) -> dict[str, Any]:
    """`--input` JSON (and `--input-file` content with its content type) → validated keyword
    arguments. With one parameter the JSON is its value; with several, an object of keyword
    arguments. The file fills the parameter annotated `File` (or `HttpBody`); the JSON then
    gives the others."""
    if file is not None:
        return _parse_file_input(fn, text, file)
    params = _params(fn)
    if text is None:
        missing = [p.name for p in params if p.default is inspect.Parameter.empty]
        if missing:
            raw = raw_body_parameter(fn)
            how = "pass --input-file PATH" if raw is not None and raw[0] in missing else "pass --input JSON"
            raise InputError(f"{fn.name} needs input ({', '.join(missing)}): {how}")
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--input is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not params:
        if data not in (None, {}):
            raise InputError(f"{fn.name} takes no input: drop --input (or pass null)")
        return {}
    if len(params) == 1:
        return validate_input(fn, (), {params[0].name: data})
    if not isinstance(data, dict):
        names = ", ".join(p.name for p in params)
        raise InputError(f"{fn.name} takes several parameters ({names}): pass a JSON object of them")
    return validate_input(fn, (), data)


def _parse_file_input(fn: Function[..., Any], text: str | None,
                      file: tuple[bytes, str]) -> dict[str, Any]:
    raw = raw_body_parameter(fn)
    if raw is None:
        raise InputError(f"{fn.name} has no parameter annotated File: pass its input as --input JSON")
    name, hint = raw
    others = [p for p in _params(fn) if p.name != name]
    data: Any = {}
    if text is not None:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--input is not valid JSON: {exc.msg} at position {exc.pos}") from None
        if len(others) == 1:
            data = {others[0].name: data}
        elif not isinstance(data, dict):
            names = ", ".join(p.name for p in others)
            raise InputError(f"--input must be a JSON object of {fn.name}'s other parameters ({names})")
        if name in data:
            raise InputError(f"{fn.name}: {name!r} given twice (--input-file fills it)")
    return validate_input(fn, (), {**data, name: raw_value(hint, *file)})


def validate_input(fn: Function[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Bind and validate an application's arguments against its type hints (pydantic)."""
    params = _params(fn)
    names = [p.name for p in params]
    unknown = [k for k in kwargs if k not in names]
    if unknown:
        raise InputError(f"{fn.name} has no parameter {unknown[0]!r} (parameters: {', '.join(names)})")
    if len(args) > len(params):
        raise InputError(f"{fn.name} takes {len(params)} argument(s), got {len(args)}")
    bound: dict[str, Any] = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key in bound:
            raise InputError(f"{fn.name}: {key!r} given twice")
        bound[key] = value
    hints = _hints(fn)
    out: dict[str, Any] = {}
    for p in params:
        if p.name not in bound:
            if p.default is inspect.Parameter.empty:
                raise InputError(f"{fn.name}: missing input field {p.name!r}")
            continue
        hint = hints.get(p.name, Any)
        if is_raw_body_hint(hint):
            out[p.name] = _raw_input(fn, p.name, hint, bound[p.name])
            continue
        try:
            out[p.name] = TypeAdapter(hint).validate_python(bound[p.name])
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join([p.name, *(str(x) for x in err["loc"])])
            raise InputError(f"input field {loc}: {err['msg']}") from None
        except PydanticSchemaGenerationError:
            # Tensorlake refuses these hints at deploy time; here they surface at the first run.
            raise SDKUsageError(
                f"{fn.name}: the type hint of parameter {p.name!r} ({hint}) cannot be validated: "
                f"File and HttpBody must be a parameter's whole hint ({p.name}: File), and other "
                "classes must be pydantic-compatible") from None
    return out


def _raw_input(fn: Function[..., Any], name: str, hint: type, value: Any) -> Any:
    if isinstance(value, hint):
        return value
    if isinstance(value, (File, HttpBody)) and (value.content_type or not issubclass(hint, File)):
        return raw_value(hint, value.content, value.content_type)  # the one for the other
    raise InputError(
        f"input field {name}: {fn.name} takes a {hint.__name__} here, not JSON: send the file as "
        "the request body with its Content-Type (or a multipart/form-data part named "
        f"{name!r}), or pass --input-file PATH to `engine run`")


def to_json(value: Any) -> Any:
    """An application's output as JSON-compatible data (pydantic models become dicts; a `File`
    or `HttpBody` becomes `file_json`, its bytes left out)."""
    from pydantic_core import to_jsonable_python

    try:
        return to_jsonable_python(value, fallback=_raw_fallback)
    except Exception:  # noqa: BLE001 - fall back to a readable form rather than lose the result
        return repr(value)


def _raw_fallback(value: Any) -> Any:
    if isinstance(value, (File, HttpBody)):
        return file_json(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def file_json(value: File | HttpBody) -> dict[str, Any]:
    """What JSON says of a `File` (or `HttpBody`) value: its content type and size."""
    return {"content_type": value.content_type, "size": len(value.content)}


__all__ = [
    "AppSpec", "ConfigError", "FunctionSettings", "file_json", "load_app", "parse_input",
    "raw_body_parameter", "raw_value", "to_json", "validate_input",
]
