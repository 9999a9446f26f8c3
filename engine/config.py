"""`engine.yaml`: engine settings and per-function overrides of the decorator values.

    backend: process            # process | docker | swarm (docs/swarm.md)
    max_executors: 16           # executors running at once (blocked parents not counted)
    idle_timeout: 10            # seconds an idle executor is kept
    warm_executors: 2           # blank executors started ahead, for a function's first call (0: none)
    max_concurrent_runs: 16     # engine server: runs executing at once (the rest wait, queued)
    max_concurrent_calls: 64    # this application: calls of all its runs executing at once
    store: postgresql://engine@db:5432/engine   # engine server: the store (default: SQLite in the state dir)
    webhook: {url: https://example.com/hook, secret: s3cret, headers: {X-Team: data}}   # engine server: POST each run's end
    budget: {max_calls: 1000, max_depth: 3, max_duration: 600}   # each run's default budget
    functions:
      research: {cpu: 0.5, memory: 0.5, timeout: 120, retries: {max_retries: 3, initial_delay: 0.2}}

Read from `--config PATH`, else `engine.yaml` beside the application file. Every mistake — an
unknown key, a wrong type, a function the application does not define — is a `ConfigError` that
names the file, the key and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import ConfigError
from engine.sdk.retries import Retries


class RetriesConfig(BaseModel):
    """`retries:` in YAML; becomes an `engine.Retries` once validated."""

    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(default=0, ge=0, le=100)
    initial_delay: float = Field(default=1.0, ge=0)
    max_delay: float = Field(default=60.0, ge=0)
    delay_multiplier: float = Field(default=2.0, ge=1.0)

    def to_retries(self) -> Retries:
        return Retries(**self.model_dump())


class FunctionOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu: float | None = Field(default=None, gt=0)
    memory: float | None = Field(default=None, gt=0)
    ephemeral_disk: float | None = Field(default=None, gt=0)
    gpu: str | list[str] | None = None
    timeout: float | None = Field(default=None, gt=0)
    retries: RetriesConfig | None = None
    concurrency: int | None = Field(default=None, ge=1)
    min_containers: int | None = Field(default=None, ge=0)
    max_containers: int | None = Field(default=None, ge=1)
    warm_containers: int | None = Field(default=None, ge=0)
    secrets: list[str] | None = None
    # Name of an image already built (e.g. `engine-fn-heavy:abc123`), replacing the decorator's.
    image: str | None = None
    # Swarm placement constraints, e.g. ["node.labels.gpu==true"] (swarm backend only).
    constraints: list[str] | None = None



class SwarmConfig(BaseModel):
    """`swarm:` — settings of the swarm backend (docs/swarm.md)."""

    model_config = ConfigDict(extra="forbid")

    # Where nodes pull engine images from (`engine image build --push REGISTRY`), e.g. 10.0.0.5:5000.
    registry: str | None = None
    # The attachable overlay network executors join (default engine-net; created when absent).
    network: str | None = None
    # The address executors call the scheduler back on when the engine is not attached to the
    # network (default: this machine's address on the route to the Swarm manager).
    advertise: str | None = None


class WebhookConfig(BaseModel):
    """`webhook:` — engine server: where to POST the end of every run of the applications this
    file configures, unless a submission names its own (docs/server.md, "Completion webhooks")."""

    model_config = ConfigDict(extra="forbid")

    url: str
    secret: str | None = None      # signs each delivery (HMAC-SHA256); never shown by the API
    headers: dict[str, str] = Field(default_factory=dict)
class BudgetConfig(BaseModel):
    """`budget:` — the default budget of the application's runs (docs/configuration.md#budgets),
    replacing the decorator's limits it names; `null` lifts one."""

    model_config = ConfigDict(extra="forbid")

    max_calls: int | None = Field(default=None, ge=1)
    max_depth: int | None = Field(default=None, ge=0)
    max_duration: float | None = Field(default=None, gt=0)


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["process", "docker", "swarm", "auto"] | None = None
    max_executors: int | None = Field(default=None, ge=1)
    idle_timeout: float | None = Field(default=None, ge=0)
    # Blank executors kept started, ready for any function that fits (engine.scheduler.warm).
    warm_executors: int | None = Field(default=None, ge=0)
    # `engine server` only: runs executing at once; the rest wait, durably, in the store.
    max_concurrent_runs: int | None = Field(default=None, ge=1)
    # The application's (engine.yaml beside it): calls of all its runs together executing at
    # once; overrides `@application(max_concurrent_calls=)`. None: no cap.
    max_concurrent_calls: int | None = Field(default=None, ge=1)
    # `engine server` only: the store's URL (sqlite:///PATH or postgresql://...); --store and
    # ENGINE_STORE come first.
    store: str | None = None
    functions: dict[str, FunctionOverride] = Field(default_factory=dict)
    swarm: SwarmConfig | None = None
    # The application's `on_failure` ("finish" or "cancel"), overriding the decorator's.
    on_failure: Literal["finish", "cancel"] | None = None
    webhook: WebhookConfig | None = None
    budget: BudgetConfig | None = None


def load_config(path: Path | None) -> EngineConfig:
    """Parse and validate a config file; None gives the defaults."""
    if path is None:
        return EngineConfig()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return EngineConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    try:
        return EngineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        got = err.get("input")
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: unknown key {key!r}") from None
        raise ConfigError(f"{path}: {key}: {err['msg']} (got {got!r})") from None


def check_function_names(config: EngineConfig, path: Path | None, known: set[str]) -> None:
    unknown = sorted(set(config.functions) - known)
    if unknown:
        raise ConfigError(
            f"{path}: functions.{unknown[0]}: no @function() of that name in the application "
            f"(defined: {', '.join(sorted(known)) or 'none'})"
        )
