"""What the examples share besides `engine.ai`: the image with `openai`, the secrets and the retry
policy of the functions that call the model, and `clip`.

- Every model call goes through `engine.ai` (engine/sdk/ai.py), which reads `OPENAI_BASE_URL` and
  `OPENAI_API_KEY` from the environment. Functions that call the model list both in
  `secrets=SECRETS`: the engine passes them to the function's container as environment variables
  at run time (they are never baked into an image).
- `LLM_IMAGE` is the runtime image plus `openai` at the host's version. The build has no index
  to install from: `engine run` downloads the wheels on the host and installs them offline.
- `LLM_RETRIES`: a malformed answer (`ModelOutputError`) or a model server that stays away fails
  the call, and the call runs again, a few times, quickly; sampling makes the next answer
  different, so a malformed answer is a transient failure, not a crash of the workflow.
- The model: each application takes an optional `model` and its root function writes it to the
  request state (`engine.model`), where every `ai` call of the run finds it.

Keep prompts short and `max_tokens` small: the local Gemma 3 270M generates about 24 tokens/s on
two cores, and the server answers one request at a time. It is a small pretrained model, so its
answers are weak; what the examples show is the workflow around them (fan-out, validation,
retries, checkpoints), which is the same with any model behind `OPENAI_BASE_URL`.
"""

from __future__ import annotations

import importlib.metadata

from engine import Image, RequestContext, Retries

# Environment variables every LLM-calling function receives (from the environment of `engine
# run`, or `--env-file`).
SECRETS = ["OPENAI_BASE_URL", "OPENAI_API_KEY"]

# A malformed answer or a dropped connection is retried, a few times, quickly.
LLM_RETRIES = Retries(max_retries=3, initial_delay=0.5, max_delay=4)


def openai_requirement() -> str:
    """`openai==VERSION` for an `Image`'s `pip install`, VERSION being the host's."""
    # The host's version, so that the host (process backend) and the containers agree. Inside a
    # container without openai this module is imported too; the pin is only used on the host.
    try:
        return f"openai=={importlib.metadata.version('openai')}"
    except importlib.metadata.PackageNotFoundError:
        return "openai"


LLM_IMAGE = Image(name="llm").run(f"pip install {openai_requirement()}")


def use_model(model: str | None) -> None:
    """In a root function: every `engine.ai` call of this run uses `model` (None: the default)."""
    if model:
        RequestContext.get().state.set("engine.model", model)


def clip(text: str, limit: int = 300) -> str:
    """Text to put into the next prompt: short, on one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
