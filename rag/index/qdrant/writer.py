"""Builds generation G+1 of a Qdrant collection (implements :class:`rag.index.backend.IndexWriter`).

Protocol (see :mod:`.index`): mark the collection dirty; buffer chunk points (``g_add = G+1``)
and document/file records, flushing them in batches; mark replaced or deleted points and records
``g_del = G+1``; on :meth:`QdrantWriter.commit` flush, count, write the metadata point (the commit
point), then delete what is gone. Nothing is visible to readers before the metadata point says
``generation = G+1``. Chunk ids come from the metadata's ``next_chunk_id``, which only a commit
advances: like the local index, an interrupted write's ids were never visible and are handed out
again by the next writer (after :meth:`QdrantIndex.cleanup` deleted its points), so a re-run after
a crash gives the same chunk ids as a run that was never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Mapping, Sequence

import numpy as np

from ...types import Chunk
from ..backend import DocumentRecord, FileRecord
from .filters import view_payload
from .index import DENSE, FORMAT, FORMAT_VERSION, SPARSE, QdrantIndex, now_iso, visible
from .reader import QdrantReader
from .terms import TERM_HASH, TermWeighter

log = logging.getLogger("rag")

AVGDL_SAMPLE_CHUNKS = 4096
"""A new collection's BM25 avgdl is measured on its first this-many chunks (or set by the caller)."""


def _m():
    from qdrant_client import models

    return models


def record_id(kind: str, key: str, generation: int) -> int:
    """Point id of one record version: 63-bit BLAKE2b of (kind, key, generation), >= 16."""
    h = hashlib.blake2b(f"{kind}\0{key}\0{generation}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(h, "big") >> 1) | 16


class QdrantWriter:
    """One write transaction (module docstring). Not thread-safe; one per lock holder."""

    def __init__(self, index: QdrantIndex, meta: Mapping[str, Any] | None, *, embedder: Mapping[str, Any] | None = None,
                 settings: Mapping[str, Any] | None = None, avgdl: float | None = None):
        self.index = index
        self.client = index.client
        self.base = QdrantReader(index, meta) if meta is not None and int(meta["generation"]) >= 1 else None
        self.G = int(meta["generation"]) if meta is not None else 0
        self.gen = self.G + 1
        self.meta: dict[str, Any] = dict(meta) if meta is not None else {
            "format": FORMAT, "format_version": FORMAT_VERSION, "generation": 0, "created": now_iso(),
            "counts": {"files": 0, "documents": 0, "chunks": 0, "duplicate_documents": 0, "chunk_links": 0},
            "next_chunk_id": 0, "bm25": {"avgdl": None, "total_terms": 0, "n_chunks": 0, "term_hash": TERM_HASH}}
        if self.meta.get("bm25", {}).get("term_hash", TERM_HASH) != TERM_HASH:
            raise ValueError(f"collection uses term hash {self.meta['bm25']['term_hash']!r}, this rag {TERM_HASH!r}")
        self.embedder = dict(embedder) if embedder is not None else dict(self.meta["embedder"])
        if meta is not None and embedder is not None and int(embedder.get("dim", self.dim)) != int(meta["embedder"]["dim"]):
            index.check_dim(int(embedder["dim"]))
        self.settings = dict(settings) if settings is not None else dict(self.meta.get("config") or {})
        self.fixed_avgdl = avgdl
        self.next_id = int(self.meta.get("next_chunk_id", 0))
        self.bm25 = dict(self.meta.get("bm25") or {})
        self.weighter: TermWeighter | None = None
        if self.bm25.get("avgdl"):
            self.weighter = TermWeighter.from_settings(self.settings.get("bm25"), float(self.bm25["avgdl"]))
        self._points: list[tuple[int, dict[str, Any], np.ndarray, str]] = []  # id, payload, vector, index text
        self._records: list[Any] = []
        self._remove_docs: set[str] = set()      # committed documents to mark g_del
        self._remove_files: set[str] = set()
        self._new: dict[str, list[int]] = {}     # document key -> chunk ids written in this transaction
        self._new_records: dict[tuple[str, str], int] = {}
        self._new_source: dict[str, str] = {}   # document key -> file key, this transaction's documents
        self._added_terms = 0
        self._added_chunks = 0
        self._final = False
        self.committed = False
        self._done = False
        self.index.write_meta({**self.meta, "dirty": True, "writing": self.gen, "embedder": self.embedder,
                               "config": self.settings})

    @property
    def dim(self) -> int:
        return int(self.embedder["dim"])

    # ---- the seam -----------------------------------------------------------------------------
    def upsert(self, document: DocumentRecord, chunks: Sequence[Chunk], vectors: np.ndarray,
               ids: Sequence[int] | None = None) -> np.ndarray:
        """See :meth:`rag.index.backend.IndexWriter.upsert`. ``ids``: keep these chunk ids
        (``rag migrate`` only; they must be unused and below no id handed out later)."""
        from ...dedup import text_hash
        from ..docstore import index_text

        vecs = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim) if len(chunks) else np.zeros((0, self.dim), np.float32)
        if vecs.shape[0] != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {vecs.shape[0]} vectors")
        self._forget([document.key])
        if ids is None:
            new_ids = np.arange(self.next_id, self.next_id + len(chunks), dtype=np.int64)
        else:
            new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
            if new_ids.shape[0] != len(chunks):
                raise ValueError(f"{len(chunks)} chunks but {new_ids.shape[0]} ids")
        if new_ids.size:
            self.next_id = max(self.next_id, int(new_ids.max()) + 1)
        doc_meta = dict(document.metadata)
        for cid, c, v in zip(new_ids.tolist(), chunks, vecs):
            meta = {**doc_meta, **dict(c.metadata)}
            payload = {**view_payload(source=document.source, doc_key=document.key, title=c.title if c.title is not None else document.title,
                                      metadata=meta, acl=document.acl),
                       "g_add": self.gen, "ord": int(c.ordinal), "start": int(c.start), "end": int(c.end), "page": c.page,
                       "heading": list(c.heading_path), "text": c.text, "hash": text_hash(c.text),
                       "cmeta": json.loads(json.dumps(dict(c.metadata), default=str))}
            self._points.append((cid, payload, v, index_text(payload["title"], c.text)))
        self._new[document.key] = new_ids.tolist()
        self._put_record("doc", document.key, self._doc_payload(document, len(chunks)))
        if len(self._points) >= (self.index.store.upsert_batch if self.weighter or self.fixed_avgdl else AVGDL_SAMPLE_CHUNKS):
            self._flush()
        return new_ids

    def put_file(self, file: FileRecord) -> None:
        self._remove_files.add(file.source)
        self._put_record("file", file.source, {"kind": "file", "key": file.source, "source": file.source,
                                               "content_hash": file.content_hash, "mtime": float(file.mtime),
                                               "size_bytes": int(file.size_bytes), "n_documents": int(file.n_documents)})

    def delete(self, document_keys: Sequence[str]) -> int:
        m = _m()
        keys = [k for k in dict.fromkeys(document_keys)]
        if not keys:
            return 0
        n = self._committed_chunks(m.FieldCondition(key="doc", match=m.MatchAny(any=keys)))
        return n + self._forget(keys)

    def delete_files(self, sources: Sequence[str]) -> int:
        m = _m()
        sources = list(dict.fromkeys(sources))
        if not sources:
            return 0
        keys = set()
        if self.base is not None:
            keys = {d.key for d in self.base.documents(sources)}
        keys.update(k for (kind, k), _ in self._new_records.items() if kind == "doc" and self._new_source.get(k) in sources)
        n = self.delete(sorted(keys))
        self._remove_files.update(sources)
        for s in sources:
            rid = self._new_records.pop(("file", s), None)
            if rid is not None:
                self._records = [r for r in self._records if r.id != rid]
                self._delete_ids(self.index.records, [rid])
        return n

    # ---- internals --------------------------------------------------------------------------------
    def _doc_payload(self, d: DocumentRecord, n_chunks: int) -> dict[str, Any]:
        self._new_source[d.key] = d.source
        return {**view_payload(source=d.source, doc_key=d.key, title=d.title, metadata=d.metadata, acl=d.acl),
                "kind": "doc", "key": d.key, "content_hash": d.content_hash, "text_hash": d.text_hash,
                "alias_of": d.alias_of, "n_chunks": int(n_chunks), "mtime": float(d.mtime),
                "duplicates": [x.to_dict() for x in d.duplicates], "links": sorted({x.kept_key for x in d.duplicates}),
                "kept_chunks": sorted({int(x.kept_chunk) for x in d.duplicates if x.level == "chunk" and x.kept_chunk is not None}),
                "body": json.dumps(d.body.to_dict(), ensure_ascii=False) if d.body is not None else None}

    def _put_record(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        m = _m()
        if kind == "doc":
            self._remove_docs.add(key)
        old = self._new_records.pop((kind, key), None)
        if old is not None:
            self._records = [r for r in self._records if r.id != old]
            self._delete_ids(self.index.records, [old])
        rid = record_id(kind, key, self.gen)
        self._new_records[(kind, key)] = rid
        self._records.append(m.PointStruct(id=rid, vector={}, payload={**payload, "g_add": self.gen}))

    def _forget(self, keys: Sequence[str]) -> int:
        """Drop documents: committed ones are marked at flush, this transaction's are removed.
        Returns how many of THIS transaction's chunks went."""
        n = 0
        gone: list[int] = []
        for k in keys:
            self._remove_docs.add(k)
            ids = self._new.pop(k, None)
            if ids:
                gone += ids
            rid = self._new_records.pop(("doc", k), None)
            if rid is not None:
                self._records = [r for r in self._records if r.id != rid]
                self._delete_ids(self.index.records, [rid])
        if gone:
            s = set(gone)
            before = len(self._points)
            self._points = [p for p in self._points if p[0] not in s]
            n = len(gone)
            flushed = len(gone) - (before - len(self._points))
            if flushed:
                self._delete_ids(self.index.name, gone)
        return n

    def base_scroll(self, coll: str, flt: Any, payload: Any = True):
        offset = None
        while True:
            pts, offset = self.client("scroll", coll, scroll_filter=flt, limit=1024, offset=offset, with_payload=payload)
            yield from pts
            if offset is None:
                return

    def _delete_ids(self, coll: str, ids: Sequence[int]) -> None:
        m = _m()
        self.client("delete", coll, points_selector=m.PointIdsList(points=[int(i) for i in ids]), wait=True)

    def _committed_chunks(self, cond: Any) -> int:
        if self.base is None:
            return 0
        m = _m()
        vm, vn = visible(self.G)
        return self.index.count(self.index.name, m.Filter(must=[cond, *vm], must_not=vn))

    def _ensure_weighter(self) -> TermWeighter:
        if self.weighter is None:
            avgdl = self.fixed_avgdl
            if not avgdl:
                w = TermWeighter.from_settings(self.settings.get("bm25"), 1.0)
                lengths = [w.length(t) for _, _, _, t in self._points[:AVGDL_SAMPLE_CHUNKS]]
                avgdl = (sum(lengths) / len(lengths)) if lengths and sum(lengths) else 1.0
            self.bm25["avgdl"] = float(avgdl)
            self.weighter = TermWeighter.from_settings(self.settings.get("bm25"), float(avgdl))
        return self.weighter

    def _flush(self) -> None:
        """Write buffered points and records."""
        m = _m()
        self.index.refresh_lock()
        if self._points:
            w = self._ensure_weighter()
            batch = self.index.store.upsert_batch
            for s in range(0, len(self._points), batch):
                pts = []
                for cid, payload, vec, text in self._points[s:s + batch]:
                    idx, val = w.document(text)
                    payload["dl"] = w.length(text)
                    self._added_terms += payload["dl"]
                    self._added_chunks += 1
                    pts.append(m.PointStruct(id=int(cid), payload=payload,
                                             vector={DENSE: vec.tolist(), SPARSE: m.SparseVector(indices=idx, values=val)}))
                self.client("upsert", self.index.name, points=pts, wait=True)
            self._points = []
        if self._records:
            for s in range(0, len(self._records), 256):
                self.client("upsert", self.index.records, points=self._records[s:s + 256], wait=True)
            self._records = []

    def _mark_removed(self) -> tuple[int, float]:
        """Mark committed chunks and records this transaction replaces or deletes; returns the
        number and total BM25 length of the chunks marked."""
        if self.base is None:
            return 0, 0.0
        m = _m()
        vm, vn = visible(self.G)
        n, terms = 0, 0.0
        keys = sorted(self._remove_docs)
        for s in range(0, len(keys), 512):
            part = keys[s:s + 512]
            cond = m.FieldCondition(key="doc", match=m.MatchAny(any=part))
            f = m.Filter(must=[cond, *vm], must_not=vn)
            for p in self.base_scroll(self.index.name, f, ["dl"]):
                n += 1
                terms += float((p.payload or {}).get("dl") or 0)
            self.client("set_payload", self.index.name, payload={"g_del": self.gen}, points=f, wait=True)
            rf = m.Filter(must=[m.FieldCondition(key="kind", match=m.MatchValue(value="doc")),
                                m.FieldCondition(key="key", match=m.MatchAny(any=part)), *vm], must_not=vn)
            self.client("set_payload", self.index.records, payload={"g_del": self.gen}, points=rf, wait=True)
        files = sorted(self._remove_files)
        for s in range(0, len(files), 512):
            rf = m.Filter(must=[m.FieldCondition(key="kind", match=m.MatchValue(value="file")),
                                m.FieldCondition(key="key", match=m.MatchAny(any=files[s:s + 512])), *vm], must_not=vn)
            self.client("set_payload", self.index.records, payload={"g_del": self.gen}, points=rf, wait=True)
        return n, terms

    def commit(self) -> dict[str, Any]:
        """Flush, mark removals, count, write the metadata point (the commit), delete what is
        gone. Returns the new metadata (``generation``, ``counts``, ...)."""
        m = _m()
        if self._done:
            raise RuntimeError("this writer is finished")
        self._final = True
        self._flush()
        removed_n, removed_terms = self._mark_removed()
        ix = self.index
        vm, vn = visible(self.gen)
        kind = lambda k: m.FieldCondition(key="kind", match=m.MatchValue(value=k))  # noqa: E731
        no_alias = m.IsEmptyCondition(is_empty=m.PayloadField(key="alias_of"))
        counts = {"chunks": ix.count(ix.name, m.Filter(must=vm, must_not=vn)),
                  "files": ix.count(ix.records, m.Filter(must=[kind("file"), *vm], must_not=vn)),
                  "documents": ix.count(ix.records, m.Filter(must=[kind("doc"), no_alias, *vm], must_not=vn)),
                  "duplicate_documents": ix.count(ix.records, m.Filter(must=[kind("doc"), *vm], must_not=[*vn, no_alias])),
                  "chunk_links": ix.count(ix.records, m.Filter(
                      must=[kind("doc"), *vm], must_not=[*vn, m.IsEmptyCondition(is_empty=m.PayloadField(key="kept_chunks"))]))}
        bm = dict(self.bm25)
        bm["total_terms"] = float(bm.get("total_terms") or 0) + self._added_terms - removed_terms
        bm["n_chunks"] = int(bm.get("n_chunks") or 0) + self._added_chunks - removed_n
        if not bm.get("avgdl"):
            bm["avgdl"] = (bm["total_terms"] / bm["n_chunks"]) if bm["n_chunks"] else None
        types: dict[str, int] = {}
        for p in self.base_scroll(ix.records, m.Filter(must=[kind("doc"), no_alias, *vm], must_not=vn), ["meta"]):
            t = str(((p.payload or {}).get("meta") or {}).get("type", "unknown"))
            types[t] = types.get(t, 0) + 1
        new_meta = {**self.meta, "generation": self.gen, "updated": now_iso(), "embedder": self.embedder,
                    "config": self.settings, "counts": counts, "next_chunk_id": self.next_id,
                    "bm25": bm, "dirty": True, "writing": None, "documents_by_type": dict(sorted(types.items()))}
        ix.write_meta(new_meta)  # <- the commit point
        self.committed = self._done = True
        ix.cleanup(new_meta)
        out = ix.read_meta(required=True)
        return dict(out or new_meta)

    def abort(self) -> None:
        """Throw this transaction away: delete what it wrote, clear its marks (idempotent)."""
        if self._done:
            return
        self._done = True
        self._points, self._records = [], []
        meta = self.index.read_meta(required=False)
        if meta is not None:
            self.index.cleanup({**meta, "dirty": True})
