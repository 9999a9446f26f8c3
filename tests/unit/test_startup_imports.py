"""What starting costs: the modules `import engine`, `engine run`'s early start and every executor
load (benchmarks/startup.py measures the time; this pins the reason it stays small).

- `import engine` (every user module, every executor) loads no pydantic, openai, gRPC or Docker
  SDK: `engine.ai` imports pydantic for a schema only, openai when called; nor uuid or email.
- `engine.cli` and `engine.backends.early` load no gRPC, Docker SDK or pydantic — nor asyncio —
  so that `EarlyStart` begins (and the first container starts) before the heavy imports of
  `engine run`; nor does what its thread uses on docker (`engine.backends.dockerapi`, the
  runtime tag).
- The executor loads no server-side layer (scheduler, store, backends, HTTP server) and no pydantic.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("pydantic", "openai", "grpc", "docker", "aiohttp", "rich", "google.protobuf")
# Not heavy, but 10-30 ms that nothing in `import engine` needs (a future's id, a Retry-After date).
NEEDLESS = ("uuid", "platform", "email")
SERVER_SIDE = ("engine.scheduler", "engine.store", "engine.backends", "engine.server", "engine.runner",
               "engine.config", "aiohttp", "docker", "pydantic", "openai")


def loaded(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (f"import sys; import {imports}; "
            f"print('\\n'.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.split() if m in prefixes or m.startswith(tuple(p + "." for p in prefixes))]


@pytest.mark.parametrize("imports", ["engine", "engine.cli, engine.backends.early",
                                     "engine.backends.dockerapi, engine.images.tag, engine.images"])
def test_starting_loads_nothing_heavy(imports: str) -> None:
    assert loaded(imports, HEAVY) == []


def test_import_engine_loads_nothing_needless() -> None:
    assert loaded("engine", NEEDLESS) == []


def test_the_early_start_begins_before_asyncio_loads() -> None:
    # asyncio and what it pulls in took 60 of the 73 ms `engine run` spent importing
    # engine.backends.early before its thread could ask Docker for the first container.
    assert loaded("engine.cli, engine.backends.early", ("asyncio", *NEEDLESS)) == []


def test_every_public_name_of_images_resolves() -> None:
    # engine.images imports its submodules on first use: each name it exports must be found.
    code = ("import engine.images as m; missing = [n for n in m.__all__ if getattr(m, n, None) is None]; "
            "assert not missing, missing; assert m.base.ensure_base_image is m.ensure_base_image")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_executor_loads_no_server_side_layer() -> None:
    assert loaded("engine.executor.server", SERVER_SIDE) == []


def test_probe_sees_heavy_modules() -> None:
    # Worthless if it could not see them: the runner does load them.
    found = loaded("engine.runner", HEAVY + SERVER_SIDE)
    assert "grpc" in found and "pydantic" in found and "engine.scheduler" in found


def test_ai_schema_still_validated() -> None:
    # pydantic is loaded when a schema is given, and a non-model schema is still refused.
    from pydantic import BaseModel

    from engine import ai
    from engine.errors import SDKUsageError
    from engine.sdk.ai import parse

    class Plan(BaseModel):
        topics: list[str]

    assert parse('["a", "b"]', Plan) == Plan(topics=["a", "b"])
    with pytest.raises(SDKUsageError, match="pydantic model class"):
        ai("hi", schema=dict)  # type: ignore[call-overload]
