"""Dense, sparse (BM25) and hybrid retrieval over one leased index state
(:class:`rag.index.backend.IndexReader`), with filters, access control, optional per-document
aggregation and optional cross-encoder reranking.

Filtering happens inside each retriever (the backend compiles the :class:`Filter`), so
``top_k`` hits come back whenever that many chunks match.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from .config import RetrievalConfig
from .errors import ConfigError, ModelError
from .index.backend import TRUSTED, Filter, Ranked
from .types import Hit, SearchResult

log = logging.getLogger("rag")

MODES = ("hybrid", "dense", "bm25")
PARALLEL_HYBRID = True
"""Run BM25 beside query embedding + dense search in hybrid mode (a shared pool of two worker threads)."""
_POOL = None
_POOL_LOCK = threading.Lock()


def _pool():
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                from concurrent.futures import ThreadPoolExecutor

                _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rag-bm25")
    return _POOL


class CrossEncoderReranker:
    """Rerank with any sentence-transformers ``CrossEncoder`` folder or cached name the user has.

    Scores are the model's raw relevance logits (higher is better). Loads on first use, from
    safetensors weights only; raises ModelError when the model cannot be loaded.
    """

    def __init__(self, model: str):
        self.model_name = model
        self._model = None

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """(n,) float32 relevance scores for (query, text) pairs."""
        if self._model is None:
            try:
                from sentence_transformers import CrossEncoder

                from .embedding import quiet_transformers

                quiet_transformers()
                # safetensors only: a pickled pytorch_model.bin can run code when loaded
                self._model = CrossEncoder(self.model_name, device="cpu", model_kwargs={"use_safetensors": True})
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"cannot load reranker {self.model_name!r}: {str(e).splitlines()[0]}") from None
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._model.predict([(query, t) for t in texts], show_progress_bar=False), dtype=np.float32).reshape(-1)


def validate_top_k(top_k: Any, name: str = "top_k") -> int:
    """``top_k`` as a positive int. Raises ConfigError (naming ``name``) for anything else:
    0, negatives, floats such as 2.7, strings, and bools (True is not a count)."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer >= 1, not {top_k!r}")
    if top_k < 1:
        raise ConfigError(f"{name} must be an integer >= 1, not {top_k!r}")
    return int(top_k)


class HybridRetriever:
    """Dense, sparse and hybrid retrieval over one :class:`rag.index.backend.IndexReader`.

    ``mode``: "dense" (cosine), "bm25" (BM25 scores) or "hybrid" (both, fused by
    ``config.fusion``: RRF with k=60 after Cormack, Clarke & Büttcher 2009, or convex combination
    of normalised scores after Bruch, Gai & Ingber 2023). Each retriever contributes
    ``config.candidate_depth`` candidates. Stateless between calls (safe to share between
    threads): everything a search produces travels in its :class:`rag.types.SearchResult`.
    """

    def __init__(self, embedder, config: RetrievalConfig, reranker: CrossEncoderReranker | None = None):
        self.embedder = embedder
        self.config = config
        self.reranker = reranker

    def search(self, reader, query: str, top_k: int | None = None, mode: str | None = None,
               filter: Filter = TRUSTED, aggregate: str = "chunk", candidate_depth: int | None = None) -> SearchResult:
        """Top ``top_k`` hits for ``query`` from ``reader`` (best first, ranks 1-based).

        ``aggregate="document"`` keeps each document's best chunk (max-pooled scores per
        retriever before fusion), as BEIR evaluation needs. Raises ConfigError on a bad mode,
        aggregate or ``top_k`` (see :func:`validate_top_k`).
        """
        cfg = self.config
        top_k = cfg.top_k if top_k is None else validate_top_k(top_k)
        mode = mode or cfg.mode
        if mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        if aggregate not in ("chunk", "document"):
            raise ConfigError(f"aggregate must be 'chunk' or 'document', not {aggregate!r}")
        depth = max(validate_top_k(candidate_depth or cfg.candidate_depth, "candidate_depth"), top_k)
        if self.reranker is not None:
            depth = max(depth, cfg.rerank_depth)
        timings: dict[str, float] = {}
        t_all = time.perf_counter()
        gen = int(reader.generation)
        if reader.counts.chunks == 0:
            return SearchResult(hits=(), timings=timings, generation=gen, query=query)
        # Per-document aggregation needs more chunk candidates to fill `depth` documents.
        chunk_depth = depth * 3 if aggregate == "document" else depth
        dense: Ranked | None = None
        sparse: Ranked | None = None
        qv = None

        def bm25() -> tuple[Ranked, float]:
            t = time.perf_counter()
            return reader.sparse_search(query, chunk_depth, filter), time.perf_counter() - t

        # hybrid: BM25 runs on a worker thread while the query is embedded and FAISS searches
        # (both release the GIL), hiding its cost; numbers are the same as sequential. A reader
        # that fetches both lists in one request (a remote engine: SearchesBoth) gets one call.
        both = mode == "hybrid" and isinstance(reader, SearchesBoth)
        pending = _pool().submit(bm25) if mode == "hybrid" and PARALLEL_HYBRID and not both else None
        if mode in ("dense", "hybrid"):
            t = time.perf_counter()
            qv = np.asarray(self.embedder.embed_query(query), dtype=np.float32).reshape(-1)
            timings["embed_s"] = time.perf_counter() - t
            t = time.perf_counter()
            if both and reader.engine_fusion:  # the engine's own fusion: one fused list
                dense, sparse = reader.fused_search(qv, query, chunk_depth, filter, depth=chunk_depth), None
            elif both:
                dense, sparse = reader.search_both(qv, query, chunk_depth, filter)
            else:
                dense = reader.dense_search(qv, chunk_depth, filter)
            timings["dense_s"] = time.perf_counter() - t
        if mode in ("bm25", "hybrid") and not both:
            sparse, timings["sparse_s"] = pending.result() if pending is not None else bm25()
        t = time.perf_counter()
        if aggregate == "document":
            # document codes come from an in-memory id -> document table, so pooling reads no
            # chunk rows (the docstore is read only for the final hits)
            dense = _max_pool(dense, reader.document_of, depth)
            sparse = _max_pool(sparse, reader.document_of, depth)
            dense, sparse = _same_representative(dense, sparse, reader.document_of)
        else:
            dense = dense.top(depth) if dense is not None else None
            sparse = sparse.top(depth) if sparse is not None else None
        engine_fused = both and reader.engine_fusion
        fused = self._fuse("dense" if engine_fused else mode, dense, sparse)
        timings["fusion_s"] = time.perf_counter() - t
        d_rank = _rank_map(None if engine_fused else dense)
        s_rank = _rank_map(sparse)
        n_out = top_k if self.reranker is None else max(top_k, cfg.rerank_depth)
        fused = fused[:n_out]
        chunk_map = {c.id: c for c in reader.chunks([cid for cid, _ in fused])}
        hits = []
        for cid, score in fused:
            ch = chunk_map.get(cid)
            if ch is None:  # cannot happen with a consistent index; never return a stale id
                log.warning("chunk %d is in a retriever but not in the docstore; skipped", cid)
                continue
            dr, ds_ = d_rank.get(cid, (None, None))
            sr, ss = s_rank.get(cid, (None, None))
            hits.append(Hit(chunk=ch, score=float(score), rank=len(hits) + 1, dense_score=ds_, dense_rank=dr,
                            sparse_score=ss, sparse_rank=sr))
        if self.reranker is not None and hits:
            t = time.perf_counter()
            rs = self.reranker.score(query, [h.chunk.text for h in hits])
            order = np.argsort(-rs, kind="stable")
            hits = [Hit(chunk=hits[i].chunk, score=float(rs[i]), rank=r + 1, dense_score=hits[i].dense_score,
                        dense_rank=hits[i].dense_rank, sparse_score=hits[i].sparse_score,
                        sparse_rank=hits[i].sparse_rank, rerank_score=float(rs[i])) for r, i in enumerate(order)]
            timings["rerank_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t_all
        return SearchResult(hits=tuple(hits[:top_k]), timings=timings, generation=gen, query_vector=qv, query=query)

    def _fuse(self, mode: str, dense: Ranked | None, sparse: Ranked | None) -> list[tuple[int, float]]:
        from .fusion import convex, rrf

        cfg = self.config
        if mode == "dense":
            return list(dense)  # type: ignore[arg-type]
        if mode == "bm25":
            return list(sparse)  # type: ignore[arg-type]
        if cfg.fusion == "rrf":
            return rrf([dense.ids.tolist(), sparse.ids.tolist()], k=cfg.rrf_k, weights=list(cfg.weights))  # type: ignore[union-attr]
        return convex([(dense.ids, dense.scores), (sparse.ids, sparse.scores)],  # type: ignore[union-attr]
                      weights=[cfg.alpha, 1.0 - cfg.alpha], norm=cfg.norm)


@runtime_checkable
class SearchesBoth(Protocol):
    """An index reader that fetches the dense and the BM25 candidate lists in one request
    (:class:`rag.index.qdrant.reader.QdrantReader`), or lets the engine fuse them itself when
    ``engine_fusion`` is true."""

    engine_fusion: bool

    def search_both(self, vectors: np.ndarray, query: str, k: int, filter: Filter) -> tuple[Ranked, Ranked]: ...

    def fused_search(self, vectors: np.ndarray, query: str, k: int, filter: Filter, depth: int = 100) -> Ranked: ...


def _rank_map(lst: Ranked | None) -> dict[int, tuple[int, float]]:
    if lst is None:
        return {}
    return {i: (r + 1, s) for r, (i, s) in enumerate(lst)}


def _same_representative(dense: Ranked | None, sparse: Ranked | None, document_of):
    """After per-document pooling each list holds its own best chunk of a document; fusion keys
    on ids, so give a document the same id in both lists (the dense list's chunk when it has
    one) or a document found by both retrievers would be fused as two different items.
    ``document_of``: chunk ids (m,) int64 -> document codes (m,) int64."""
    if dense is None or sparse is None or len(sparse) == 0:
        return dense, sparse
    rep = dict(zip(document_of(dense.ids).tolist(), dense.ids.tolist()))
    ids = np.asarray([rep.get(c, i) for c, i in zip(document_of(sparse.ids).tolist(), sparse.ids.tolist())],
                     dtype=np.int64)
    return dense, Ranked(ids, sparse.scores)


def _max_pool(lst: Ranked | None, document_of, depth: int) -> Ranked | None:
    """Keep each document's best-scoring chunk (lists are sorted best first), at most ``depth``
    documents. ``document_of``: chunk ids (m,) int64 -> document codes (m,) int64 (-1: not in
    the index, dropped)."""
    if lst is None:
        return None
    codes = document_of(lst.ids)
    _, first = np.unique(codes, return_index=True)  # first occurrence = best chunk of each document
    keep = np.sort(first[codes[first] >= 0])[:depth]
    return Ranked(lst.ids[keep], lst.scores[keep])
