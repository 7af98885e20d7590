"""Fakes for tests and examples, chosen explicitly, never by accident.

Select the fake embedder with the ``testing:`` scheme: ``embedding.model = "testing:hash-64"``
in a config, ``--embedder testing:hash-64`` on the command line, or ``HashEmbedder(64)``
passed to ``RAG(..., embedder=...)``. Production modules never import this one except through
that scheme (:func:`rag.embedding.make_embedder`).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

from .errors import ConfigError

SCHEME = "testing:"
"""Model names starting with this select a fake from this module."""


class HashEmbedder:
    """Deterministic fake embedder: hashed bag of lower-cased words, L2-normalised.

    Texts that share words get positive cosine similarity, so retrieval tests behave sensibly
    without loading a model. ``embed_documents``: (n, dim) float32; ``embed_query``: (dim,)
    float32; an all-punctuation text gives the zero vector. Chunking still counts in
    all-MiniLM-L6-v2 word pieces (the packaged tokenizer), with its 256-token limit.
    """

    max_seq_length = 256

    def __init__(self, dim: int = 64):
        self.dim = int(dim)
        self.model_id = f"hash-{self.dim}"

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                w = "".join(ch for ch in w if ch.isalnum())
                if not w:
                    continue
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            n = np.linalg.norm(out[i])
            if n > 0:
                out[i] /= n
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def make_embedder(model: str) -> HashEmbedder:
    """The fake named by ``testing:<name>``: ``testing:hash-<dim>`` gives :class:`HashEmbedder`.
    Raises ConfigError for any other name."""
    name = model[len(SCHEME):] if model.startswith(SCHEME) else model
    if name.startswith("hash-") and name[5:].isdigit() and int(name[5:]) >= 2:
        return HashEmbedder(int(name[5:]))
    raise ConfigError(f"embedding.model: unknown test embedder {model!r} (use 'testing:hash-64')")


__all__ = ["HashEmbedder", "SCHEME", "make_embedder"]
