"""BM25 term weights for Qdrant sparse vectors, from OUR tokenizer (:mod:`rag.index.sparse`).

Qdrant multiplies each stored sparse value by the term's IDF when the sparse vector is
configured with ``Modifier.IDF``; its IDF is Lucene's ``ln(1 + (N - df + 0.5) / (df + 0.5))``
(``N``: points holding the sparse vector, counted per shard). So a chunk stores only the
length-normalised TF saturation of Lucene's BM25 (the form :class:`rag.index.sparse.BM25Index`
uses, no ``(k1 + 1)`` numerator, so raw scores equal the local index's)::

    w(t, d) = tf(t, d) / (tf(t, d) + k1 * (1 - b + b * dl(d) / avgdl))

and a query sends weight 1 per occurrence of each term (its query term frequency, as the local
index counts a repeated query term again). ``score = sum_t qtf(t) * idf(t) * w(t, d)``: the
same number :class:`BM25Index` computes when ``avgdl`` and the corpus are the same.

``avgdl`` is frozen when a collection's first chunks are written (weights already stored stay
valid without rewriting); the collection's metadata keeps the true running average, ``rag info``
shows the drift and ``rag verify --repair`` re-weights every chunk with the current one. The
effect of a stale avgdl is measured in ``benchmarks/results/qdrant.md``.

Term ids are the first 4 bytes of BLAKE2b of the UTF-8 stem (a stable uint32, the same on every
machine and Python process; Python's ``hash`` is salted). Two stems colliding share one
posting list and IDF: with V distinct stems about ``V**2 / 2**33`` pairs collide (SciFact's
~26k stems: expected 0.08 pairs; 1M stems: about 116, each a rare-term pair).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from functools import lru_cache
from typing import Any, Mapping

from ...config import BM25Config
from ..analysis import BM25Tokenizer, query_term_counts

TERM_HASH = "blake2b-32"
"""Name of the term id function, stored in the collection metadata and checked on open."""


def term_id(stem: str) -> int:
    """Stable uint32 id of a BM25 term: first 4 bytes (big-endian) of BLAKE2b(stem, UTF-8)."""
    return int.from_bytes(hashlib.blake2b(stem.encode("utf-8", "surrogatepass"), digest_size=4).digest(), "big")


class TermWeighter:
    """Chunk text -> (term ids, BM25 TF weights); query text -> (term ids, query weights).

    ``config``: the index's :class:`BM25Config` (k1, b, language, stopwords, stemming).
    ``avgdl``: average chunk length in terms (> 0) used for length normalisation. Thread-safe
    (the tokenizer's stem cache takes a lock).
    """

    def __init__(self, config: BM25Config, avgdl: float):
        if not avgdl > 0:
            raise ValueError(f"avgdl must be > 0, not {avgdl!r}")
        self.config = config
        self.k1 = float(config.k1)
        self.b = float(config.b)
        self.avgdl = float(avgdl)
        self.tokenizer = BM25Tokenizer(config.language, config.stopwords, config.stemming)

    @classmethod
    def from_settings(cls, bm25: Mapping[str, Any] | BM25Config | None, avgdl: float) -> "TermWeighter":
        """A shared weighter for these settings (cached: the stem cache survives leases)."""
        import json
        from dataclasses import asdict

        d = asdict(bm25) if isinstance(bm25, BM25Config) else dict(bm25 or {})
        return _cached(json.dumps(d, sort_keys=True, default=str), float(avgdl))

    def length(self, text: str) -> int:
        """Number of BM25 terms of ``text`` (its ``dl``)."""
        return len(self.tokenizer.tokenize(text))

    def document(self, text: str) -> tuple[list[int], list[float]]:
        """Sparse vector of one chunk's index text: sorted uint32 term ids and float weights
        ``tf / (tf + k1 * (1 - b + b * dl / avgdl))`` in (0, 1). Colliding stems add their tf."""
        terms = self.tokenizer.tokenize(text)
        if not terms:
            return [], []
        tf = Counter(term_id(t) for t in terms)
        norm = self.k1 * (1.0 - self.b + self.b * len(terms) / self.avgdl)
        ids = sorted(tf)
        return ids, [tf[i] / (tf[i] + norm) for i in ids]

    def query(self, text: str) -> tuple[list[int], list[float]]:
        """Sparse query vector: sorted term ids with weight = how often the term occurs in the
        query. English words also query their other British/American spelling's stem with the
        word's count (:func:`rag.index.analysis.query_term_counts`; a stem no chunk holds matches nothing)."""
        counts = query_term_counts(self.tokenizer, text)
        if not counts:
            return [], []
        by_id: Counter = Counter()
        for t, c in counts.items():
            by_id[term_id(t)] += c
        ids = sorted(by_id)
        return ids, [float(by_id[i]) for i in ids]


@lru_cache(maxsize=16)
def _cached(settings_json: str, avgdl: float) -> TermWeighter:
    import json

    return TermWeighter(BM25Config(**json.loads(settings_json)), avgdl)
