"""Dense, sparse (BM25) and hybrid retrieval over one index snapshot, with filters, access
control, optional per-document aggregation and optional cross-encoder reranking.

Filtering happens inside each retriever (an allow-list of chunk ids passed to FAISS and BM25),
so ``top_k`` hits come back whenever that many chunks match.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping, Sequence

import numpy as np

from .config import RetrievalConfig
from .errors import ConfigError, ModelError
from .types import Hit

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


class HybridRetriever:
    """Retrieves from a :class:`rag.index.store.Snapshot`.

    ``mode``: "dense" (cosine over FAISS), "bm25" (BM25 scores) or "hybrid" (both, fused by
    ``config.fusion``: RRF with k=60 after Cormack, Clarke & Büttcher 2009, or convex combination
    of normalised scores after Bruch, Gai & Ingber 2023). Each retriever contributes
    ``config.candidate_depth`` candidates.
    """

    def __init__(self, snapshot, embedder, config: RetrievalConfig, reranker: CrossEncoderReranker | None = None):
        self.snapshot = snapshot
        self.embedder = embedder
        self.config = config
        self.reranker = reranker
        self.last_timings: dict[str, float] = {}

    def search(self, query: str, top_k: int | None = None, mode: str | None = None,
               filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None,
               aggregate: str = "chunk", candidate_depth: int | None = None) -> list[Hit]:
        """Top ``top_k`` hits for ``query`` (best first, ranks 1-based).

        ``aggregate="document"`` keeps each document's best chunk (max-pooled scores per
        retriever before fusion), as BEIR evaluation needs. Raises ConfigError on a bad mode.
        """
        cfg = self.config
        top_k = int(top_k or cfg.top_k)
        mode = mode or cfg.mode
        if mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        depth = max(int(candidate_depth or cfg.candidate_depth), top_k)
        if self.reranker is not None:
            depth = max(depth, cfg.rerank_depth)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        allowed = self.snapshot.docstore.allowed_ids(filters, principals)
        timings["filter_s"] = time.perf_counter() - t0
        if allowed is not None and allowed.size == 0:
            self.last_timings = timings
            return []
        n_chunks = int(self.snapshot.manifest["counts"]["chunks"])
        if n_chunks == 0:
            self.last_timings = timings
            return []
        # Per-document aggregation needs more chunk candidates to fill `depth` documents.
        chunk_depth = depth * 3 if aggregate == "document" else depth
        dense_list: tuple[np.ndarray, np.ndarray] | None = None
        sparse_list: tuple[np.ndarray, np.ndarray] | None = None

        def bm25() -> tuple[tuple[np.ndarray, np.ndarray], float]:
            t = time.perf_counter()
            scores, ids = self.snapshot.sparse.search(query, min(chunk_depth, n_chunks), allowed_ids=allowed)
            return (np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32)), time.perf_counter() - t

        # hybrid: BM25 runs on a worker thread while the query is embedded and FAISS searches
        # (both release the GIL), hiding its cost; numbers are the same as sequential
        pending = _pool().submit(bm25) if mode == "hybrid" and PARALLEL_HYBRID else None
        if mode in ("dense", "hybrid"):
            t = time.perf_counter()
            qv = self.embedder.embed_query(query).reshape(1, -1).astype(np.float32)
            timings["embed_s"] = time.perf_counter() - t
            t = time.perf_counter()
            scores, ids = self.snapshot.dense.search(qv, min(chunk_depth, n_chunks), allowed_ids=allowed)
            keep = ids[0] >= 0
            dense_list = (ids[0][keep].astype(np.int64), scores[0][keep].astype(np.float32))
            timings["dense_s"] = time.perf_counter() - t
        if mode in ("bm25", "hybrid"):
            sparse_list, timings["sparse_s"] = pending.result() if pending is not None else bm25()
        t = time.perf_counter()
        chunk_map: dict[int, Any] = {}
        if aggregate == "document":
            # document codes come from an in-memory id -> document table, so pooling reads no
            # chunk rows (the docstore is read only for the final hits)
            dense_list = _max_pool(dense_list, self.snapshot.document_codes, depth)
            sparse_list = _max_pool(sparse_list, self.snapshot.document_codes, depth)
            dense_list, sparse_list = _same_representative(dense_list, sparse_list, self.snapshot.document_codes)
        else:
            if dense_list is not None:
                dense_list = (dense_list[0][:depth], dense_list[1][:depth])
            if sparse_list is not None:
                sparse_list = (sparse_list[0][:depth], sparse_list[1][:depth])
        fused = self._fuse(mode, dense_list, sparse_list)
        timings["fusion_s"] = time.perf_counter() - t
        d_rank = _rank_map(dense_list)
        s_rank = _rank_map(sparse_list)
        n_out = top_k if self.reranker is None else max(top_k, cfg.rerank_depth)
        fused = fused[:n_out]
        missing = [cid for cid, _ in fused if cid not in chunk_map]
        if missing:
            chunk_map.update(self.snapshot.docstore.get_chunks(missing))
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
        self.last_timings = timings
        return hits[:top_k]

    def _fuse(self, mode: str, dense_list, sparse_list) -> list[tuple[int, float]]:
        from .fusion import convex, rrf

        cfg = self.config
        if mode == "dense":
            return [(int(i), float(s)) for i, s in zip(*dense_list)]
        if mode == "bm25":
            return [(int(i), float(s)) for i, s in zip(*sparse_list)]
        if cfg.fusion == "rrf":
            return rrf([list(map(int, dense_list[0])), list(map(int, sparse_list[0]))], k=cfg.rrf_k, weights=list(cfg.weights))
        return convex([dense_list, sparse_list], weights=[cfg.alpha, 1.0 - cfg.alpha], norm=cfg.norm)


def _rank_map(lst) -> dict[int, tuple[int, float]]:
    if lst is None:
        return {}
    return {int(i): (r + 1, float(s)) for r, (i, s) in enumerate(zip(lst[0], lst[1]))}


def _same_representative(dense_list, sparse_list, document_codes):
    """After per-document pooling each list holds its own best chunk of a document; fusion keys
    on ids, so give a document the same id in both lists (the dense list's chunk when it has
    one) or a document found by both retrievers would be fused as two different items.
    ``document_codes``: chunk ids (m,) int64 -> document codes (m,) int64."""
    if dense_list is None or sparse_list is None or sparse_list[0].size == 0:
        return dense_list, sparse_list
    rep = dict(zip(document_codes(dense_list[0]).tolist(), dense_list[0].tolist()))
    ids = np.asarray([rep.get(c, i) for c, i in zip(document_codes(sparse_list[0]).tolist(), sparse_list[0].tolist())],
                     dtype=np.int64)
    return dense_list, (ids, sparse_list[1])


def _max_pool(lst, document_codes, depth: int):
    """Keep each document's best-scoring chunk (lists are sorted best first), at most ``depth``
    documents. ``document_codes``: chunk ids (m,) int64 -> document codes (m,) int64 (-1: not
    in the docstore, dropped)."""
    if lst is None:
        return None
    ids, scores = lst
    codes = document_codes(ids)
    _, first = np.unique(codes, return_index=True)  # first occurrence = best chunk of each document
    keep = np.sort(first[codes[first] >= 0])[:depth]
    return ids[keep].astype(np.int64), scores[keep].astype(np.float32)
