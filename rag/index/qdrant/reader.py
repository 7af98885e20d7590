"""One committed generation of a Qdrant collection, read-only (implements
:class:`rag.index.backend.IndexReader`).

Searches send the compiled :class:`~rag.index.backend.Filter` with every query (access control
included), plus the generation filter while the collection is ``dirty`` (see :mod:`.index`).
:meth:`QdrantReader.search_both` fetches the dense and the BM25 candidate lists in ONE round
trip (``query_batch_points``); :meth:`QdrantReader.fused_search` lets Qdrant fuse them with its
own RRF (``prefetch`` + ``FusionQuery``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Mapping, Sequence

import numpy as np

from ...types import Chunk, Document
from ..backend import Counts, DocumentRecord, Duplicate, FileRecord, Filter, Ranked
from .filters import compile_chunk_only, compile_view
from .index import DENSE, SPARSE, QdrantIndex, visible
from .terms import TermWeighter

FILTER_CACHE_SIZE = 64
SCROLL_PAGE = 1024


def _m():
    from qdrant_client import models

    return models


def record_to_document(p: Mapping[str, Any]) -> DocumentRecord:
    """A document record's payload -> :class:`DocumentRecord`."""
    body = p.get("body")
    return DocumentRecord(
        key=p["key"], source=p["source"], content_hash=p.get("content_hash") or "", text_hash=p.get("text_hash") or "",
        title=p.get("title"), metadata=dict(p.get("meta") or {}), acl=tuple(p.get("acl") or ()), alias_of=p.get("alias_of"),
        n_chunks=int(p.get("n_chunks") or 0), mtime=float(p.get("mtime") or 0.0),
        duplicates=tuple(Duplicate(**d) for d in p.get("duplicates") or ()),
        body=Document.from_dict(json.loads(body)) if body else None)


def payload_to_chunk(cid: int, p: Mapping[str, Any]) -> Chunk:
    return Chunk(id=int(cid), doc_id=p["doc"], ordinal=int(p["ord"]), start=int(p["start"]), end=int(p["end"]),
                 text=p["text"], source=p.get("source") or "", title=p.get("title"), page=p.get("page"),
                 heading_path=tuple(p.get("heading") or ()), metadata=dict(p.get("cmeta") or {}))


class QdrantReader:
    """Reads of committed generation ``meta["generation"]`` (see the module docstring)."""

    def __init__(self, index: QdrantIndex, meta: Mapping[str, Any]):
        self.index = index
        self.meta = dict(meta)
        self.client = index.client
        self.G = int(meta["generation"])
        self.dirty = bool(meta.get("dirty"))
        bm = meta.get("bm25") or {}
        self.weighter = TermWeighter.from_settings((meta.get("config") or {}).get("bm25"), float(bm.get("avgdl") or 1.0))
        self._filters: OrderedDict[Filter, Any] = OrderedDict()
        self._doc_of: dict[int, str] = {}
        self._codes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.engine_fusion = getattr(index.store, "fusion", "rag") == "qdrant-rrf"
        """True when ``[store] fusion = "qdrant-rrf"``: hybrid search uses :meth:`fused_search`."""

    # ---- description ------------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.G

    @property
    def manifest(self) -> Mapping[str, Any]:
        return self.meta

    @property
    def counts(self) -> Counts:
        c = self.meta.get("counts") or {}
        return Counts(files=int(c.get("files", 0)), documents=int(c.get("documents", 0)), chunks=int(c.get("chunks", 0)),
                      duplicate_documents=int(c.get("duplicate_documents", 0)))

    @property
    def dim(self) -> int:
        return int(self.meta["embedder"]["dim"])

    @property
    def embedder(self) -> Mapping[str, Any]:
        return self.meta["embedder"]

    def info(self) -> dict[str, Any]:
        ix = self.index
        coll = self.client("get_collection", ix.name)
        p = coll.config.params
        bm = dict(self.meta.get("bm25") or {})
        n, total = int(bm.get("n_chunks") or 0), float(bm.get("total_terms") or 0.0)
        current = total / n if n else None
        return {"index": ix.loc.text, "backend": "qdrant", "location": ix.loc.text, "collection": ix.name, "format_version": self.meta["format_version"],
                "generation": self.G, "created": self.meta.get("created"), "updated": self.meta.get("updated"),
                "embedder": self.meta["embedder"], **self.counts.to_dict(),
                "documents_by_type": self.meta.get("documents_by_type", {}),
                "points": int(coll.points_count or 0), "status": str(getattr(coll.status, "value", coll.status)),
                "shards": int(getattr(p, "shard_number", 1) or 1), "replicas": int(getattr(p, "replication_factor", 1) or 1),
                "write_consistency_factor": int(getattr(p, "write_consistency_factor", 1) or 1),
                "bm25": {"avgdl_weights": bm.get("avgdl"), "avgdl_now": current,
                         "drift": (current / bm["avgdl"] - 1.0) if current and bm.get("avgdl") else None,
                         "term_hash": bm.get("term_hash")},
                "pending_cleanup": self.dirty, "dense_index": "qdrant (exact scan in embedded mode, HNSW on a server)",
                **self._sizes()}

    def _sizes(self) -> dict[str, Any]:
        """Bytes on disk: the embedded folder's files; a server's are not visible from here."""
        import os

        loc = self.index.loc
        sizes: dict[str, int] = {}
        if loc.kind == "local" and loc.path and os.path.isdir(loc.path):
            for dirpath, _, names in os.walk(loc.path):
                for n in names:
                    top = os.path.relpath(os.path.join(dirpath, n), loc.path).split(os.sep)[0]
                    sizes[top] = sizes.get(top, 0) + os.path.getsize(os.path.join(dirpath, n))
        return {"sizes_bytes": sizes, "total_bytes": sum(sizes.values())}

    # ---- filters ----------------------------------------------------------------------------
    def _vis(self) -> tuple[list, list]:
        return visible(self.G) if self.dirty else ([], [])

    def qfilter(self, flt: Filter):
        """The Qdrant filter for ``flt`` at this generation (None: no condition). Cached.
        Raises ConfigError when ``flt`` cannot be compiled (see :mod:`.filters`)."""
        with self._lock:
            if flt in self._filters:
                self._filters.move_to_end(flt)
                return self._filters[flt]
        m = _m()
        vis_must, vis_not = self._vis()
        view = compile_view(flt)
        chunk_only = compile_chunk_only(flt)
        if view and self._has_aliases():
            kept_keys, kept_chunks = self._alias_targets(view)
            branches = [m.Filter(must=view)]
            if kept_keys:
                branches.append(m.FieldCondition(key="doc", match=m.MatchAny(any=sorted(kept_keys))))
            if kept_chunks:
                branches.append(m.HasIdCondition(has_id=sorted(kept_chunks)))
            view = [m.Filter(should=branches)] if len(branches) > 1 else view
        must = vis_must + view + chunk_only
        out = m.Filter(must=must or None, must_not=vis_not or None) if (must or vis_not) else None
        with self._lock:
            self._filters[flt] = out
            while len(self._filters) > FILTER_CACHE_SIZE:
                self._filters.popitem(last=False)
        return out

    def _has_aliases(self) -> bool:
        c = self.meta.get("counts") or {}
        return int(c.get("duplicate_documents", 0)) > 0 or int(c.get("chunk_links", 0)) > 0

    def _alias_targets(self, view: list) -> tuple[set[str], set[int]]:
        """Kept documents and kept chunks of alias records that pass ``view`` (a chunk of the
        kept copy passes when one of its aliases does, with the alias's own fields)."""
        m = _m()
        vm, vn = self._vis()
        has_link = m.Filter(should=[m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key="alias_of"))]),
                                    m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key="kept_chunks"))])])
        f = m.Filter(must=[m.FieldCondition(key="kind", match=m.MatchValue(value="doc")), has_link, *vm, *view],
                     must_not=vn or None)
        keys: set[str] = set()
        chunks: set[int] = set()
        for p in self._scroll(self.index.records, f, ["alias_of", "kept_chunks"]):
            if p.payload.get("alias_of"):
                keys.add(p.payload["alias_of"])
            chunks.update(int(i) for i in p.payload.get("kept_chunks") or ())
        return keys, chunks

    def _scroll(self, coll: str, flt: Any, payload: Any = True, vectors: Any = False):
        offset = None
        while True:
            pts, offset = self.client("scroll", coll, scroll_filter=flt, limit=SCROLL_PAGE, offset=offset,
                                      with_payload=payload, with_vectors=vectors)
            yield from pts
            if offset is None:
                return

    # ---- search -------------------------------------------------------------------------------
    def _ranked(self, points) -> Ranked:
        ids, scores = [], []
        for p in points:
            pl = p.payload or {}
            if int(pl.get("g_add", 0)) > self.G:  # written by a writer that began after this lease
                continue
            ids.append(int(p.id))
            scores.append(float(p.score))
            if "doc" in pl:
                self._doc_of[int(p.id)] = pl["doc"]
        return Ranked(ids, scores)

    def _dense_request(self, vectors: np.ndarray, k: int, flt: Filter):
        m = _m()
        q = np.asarray(vectors, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise ValueError(f"query vector has {q.shape[0]} dimensions, the index {self.dim}")
        return m.QueryRequest(query=q.tolist(), using=DENSE, filter=self.qfilter(flt), limit=int(k),
                              with_payload=["doc", "g_add"])

    def _sparse_request(self, query: str, k: int, flt: Filter):
        m = _m()
        ids, weights = self.weighter.query(query)
        if not ids:
            return None
        params = None
        if self.dirty:  # uncommitted points must not move IDF either: scope it to this generation
            vm, vn = visible(self.G)
            params = m.SearchParams(idf=m.IdfCorpusParams(corpus=m.Filter(must=vm, must_not=vn)))
        return m.QueryRequest(query=m.SparseVector(indices=ids, values=weights), using=SPARSE, filter=self.qfilter(flt),
                              limit=int(k), params=params, with_payload=["doc", "g_add"])

    def dense_search(self, vectors: np.ndarray, k: int, filter: Filter) -> Ranked:
        if k < 1 or self.counts.chunks == 0:
            return Ranked.empty()
        r = self._dense_request(vectors, k, filter)
        res = self.client("query_points", self.index.name, query=r.query, using=r.using, query_filter=r.filter,
                          limit=r.limit, with_payload=r.with_payload)
        return self._ranked(res.points)

    def sparse_search(self, query: str, k: int, filter: Filter) -> Ranked:
        if k < 1 or self.counts.chunks == 0:
            return Ranked.empty()
        r = self._sparse_request(query, k, filter)
        if r is None:
            return Ranked.empty()
        res = self.client("query_points", self.index.name, query=r.query, using=r.using, query_filter=r.filter,
                          limit=r.limit, search_params=r.params, with_payload=r.with_payload)
        return self._ranked(res.points)

    def search_both(self, vectors: np.ndarray, query: str, k: int, filter: Filter) -> tuple[Ranked, Ranked]:
        """``(dense, sparse)`` candidate lists, both in one ``query_batch_points`` round trip."""
        if k < 1 or self.counts.chunks == 0:
            return Ranked.empty(), Ranked.empty()
        reqs = [self._dense_request(vectors, k, filter)]
        sparse = self._sparse_request(query, k, filter)
        if sparse is not None:
            reqs.append(sparse)
        res = self.client("query_batch_points", self.index.name, requests=reqs)
        dense = self._ranked(res[0].points)
        return dense, (self._ranked(res[1].points) if sparse is not None else Ranked.empty())

    def fused_search(self, vectors: np.ndarray, query: str, k: int, filter: Filter, depth: int = 100) -> Ranked:
        """Qdrant's own reciprocal rank fusion of ``depth`` dense and ``depth`` BM25 candidates
        (``prefetch`` + ``RrfQuery``, one query). Qdrant scores ``w / (k' + rank - 1)``; it is sent
        ``k' = retrieval.rrf_k + 1`` and ``retrieval.weights``, so its scores equal
        :func:`rag.fusion.rrf`'s ``w / (k + rank)`` (Qdrant's own default is k' = 2)."""
        m = _m()
        if k < 1 or self.counts.chunks == 0:
            return Ranked.empty()
        d = self._dense_request(vectors, depth, filter)
        pre = [m.Prefetch(query=d.query, using=DENSE, filter=d.filter, limit=depth)]
        s = self._sparse_request(query, depth, filter)
        if s is not None:
            pre.append(m.Prefetch(query=s.query, using=SPARSE, filter=s.filter, limit=depth, params=s.params))
        rc = getattr(self.index.config, "retrieval", None)
        k_rrf = int(getattr(rc, "rrf_k", 60)) + 1
        weights = [float(w) for w in getattr(rc, "weights", (1.0, 1.0))][:len(pre)]
        res = self.client("query_points", self.index.name, prefetch=pre, query=m.RrfQuery(rrf=m.Rrf(k=k_rrf, weights=weights)),
                          query_filter=d.filter, limit=int(k), with_payload=["doc", "g_add"])
        return self._ranked(res.points)

    # ---- chunks ---------------------------------------------------------------------------------
    def _visible_payload(self, p: Mapping[str, Any]) -> bool:
        return int(p.get("g_add", 0)) <= self.G and not (p.get("g_del") is not None and int(p["g_del"]) <= self.G)

    def chunks(self, ids: Sequence[int]) -> list[Chunk]:
        ids = [int(i) for i in ids]
        if not ids:
            return []
        pts = self.client("retrieve", self.index.name, ids=ids, with_payload=True)
        found = {int(p.id): payload_to_chunk(p.id, p.payload) for p in pts if self._visible_payload(p.payload or {})}
        return [found[i] for i in ids if i in found]

    def document_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        q = [int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1)]
        missing = [i for i in q if i not in self._doc_of]
        if missing:
            for p in self.client("retrieve", self.index.name, ids=missing, with_payload=["doc", "g_add", "g_del"]):
                if self._visible_payload(p.payload or {}):
                    self._doc_of[int(p.id)] = p.payload["doc"]
        out = np.full(len(q), -1, dtype=np.int64)
        with self._lock:
            for j, i in enumerate(q):
                key = self._doc_of.get(i)
                if key is not None:
                    out[j] = self._codes.setdefault(key, len(self._codes))
        return out

    # ---- bookkeeping ------------------------------------------------------------------------------
    def _records(self, kind: str, extra: Sequence[Any] = ()):
        m = _m()
        vm, vn = visible(self.G)
        f = m.Filter(must=[m.FieldCondition(key="kind", match=m.MatchValue(value=kind)), *vm, *extra], must_not=vn)
        return (p.payload for p in self._scroll(self.index.records, f))

    def files(self) -> dict[str, FileRecord]:
        return {p["source"]: FileRecord(source=p["source"], content_hash=p.get("content_hash") or "",
                                        mtime=float(p.get("mtime") or 0.0), size_bytes=int(p.get("size_bytes") or 0),
                                        n_documents=int(p.get("n_documents") or 0))
                for p in self._records("file")}

    def documents(self, sources: Sequence[str] | None = None) -> list[DocumentRecord]:
        m = _m()
        if sources is not None and not sources:
            return []
        extra = [m.FieldCondition(key="source", match=m.MatchAny(any=list(sources)))] if sources is not None else []
        return sorted((record_to_document(p) for p in self._records("doc", extra)), key=lambda d: d.key)

    def documents_by_key(self, keys: Sequence[str]) -> list[DocumentRecord]:
        m = _m()
        if not keys:
            return []
        extra = [m.FieldCondition(key="key", match=m.MatchAny(any=list(keys)))]
        return sorted((record_to_document(p) for p in self._records("doc", extra)), key=lambda d: d.key)

    def linked_to(self, kept_keys: Sequence[str]) -> list[str]:
        """Keys of documents holding an alias link to any of ``kept_keys``."""
        m = _m()
        if not kept_keys:
            return []
        extra = [m.FieldCondition(key="links", match=m.MatchAny(any=list(kept_keys)))]
        return sorted({p["key"] for p in self._records("doc", extra)})

    def chunk_hashes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        m = _m()
        vm, vn = self._vis()
        f = m.Filter(must=vm, must_not=vn) if vm else None
        for p in self._scroll(self.index.name, f, ["hash", "g_add"]):
            if int(p.payload.get("g_add", 0)) > self.G:
                continue
            h, i = p.payload.get("hash"), int(p.id)
            if h is not None and (h not in out or i < out[h]):
                out[h] = i
        return out

    def chunk_ids(self) -> np.ndarray:
        """(n,) int64 ascending: every chunk id of this state."""
        ids = [int(p.id) for p in self._iter_visible(["g_add"], False)]
        return np.asarray(sorted(ids), dtype=np.int64)

    def _iter_visible(self, payload: Any, vectors: Any):
        m = _m()
        vm, vn = self._vis()
        f = m.Filter(must=vm, must_not=vn) if vm else None
        for p in self._scroll(self.index.name, f, payload, vectors):
            if int((p.payload or {}).get("g_add", 0)) <= self.G:
                yield p

    def iter_points(self, vectors: bool = True):
        """Every visible chunk point (payload, and the dense vector when ``vectors``), for
        ``rag migrate`` and ``rag verify``."""
        yield from self._iter_visible(True, [DENSE] if vectors else False)

    def vectors(self) -> np.ndarray:
        """(n, dim) float32 stored embeddings, rows in ascending chunk id order."""
        pts = sorted(self._iter_visible(["g_add"], [DENSE]), key=lambda p: int(p.id))
        if not pts:
            return np.zeros((0, self.dim), np.float32)
        return np.asarray([p.vector[DENSE] for p in pts], dtype=np.float32)
