"""``rag verify`` (and ``--repair``) for a Qdrant collection.

Checks, for the committed generation: the collection's dense vector size equals the embedder's;
every visible chunk point has every payload field (:data:`.index.CHUNK_FIELDS`), a dense vector
of that size and a sparse vector; the number of chunk points equals the metadata's count and the
sum of the document records' ``n_chunks``; every chunk's document has a record; every id is
below ``next_chunk_id``. Leftovers of an interrupted write (invisible to readers) are reported,
not failed; ``repair`` removes them and re-weights BM25 when the avgdl drifted by more than
:data:`REWEIGHT_DRIFT`.
"""

from __future__ import annotations

import logging
from typing import Any

from ...errors import IndexFormatError
from .index import CHUNK_FIELDS, DENSE, SPARSE, QdrantIndex, visible

log = logging.getLogger("rag")

REWEIGHT_DRIFT = 0.05
"""``repair`` rewrites every chunk's BM25 weights when the average chunk length moved more than
this fraction away from the avgdl the weights were computed with."""


def _m():
    from qdrant_client import models

    return models


def leftovers(index: QdrantIndex, generation: int) -> int:
    """Points and records an interrupted write left (uncommitted, marked, or not yet deleted)."""
    m = _m()
    n = 0
    for coll in (index.name, index.records):
        n += index.count(coll, m.Filter(must=[m.FieldCondition(key="g_add", range=m.Range(gt=generation))]))
        n += index.count(coll, m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key="g_del"))]))
    return n


def reweight(index: QdrantIndex, meta: dict[str, Any]) -> dict[str, Any]:
    """Rewrite every chunk's sparse vector with the collection's current avgdl (hold the lock)."""
    from ..docstore import index_text
    from .terms import TermWeighter

    m = _m()
    bm = dict(meta.get("bm25") or {})
    if not bm.get("n_chunks"):
        return meta
    avgdl = float(bm["total_terms"]) / int(bm["n_chunks"])
    w = TermWeighter.from_settings((meta.get("config") or {}).get("bm25"), avgdl)
    offset, batch = None, []
    while True:
        pts, offset = index.client("scroll", index.name, limit=512, offset=offset, with_payload=["text", "title"])
        for p in pts:
            idx, val = w.document(index_text(p.payload.get("title"), p.payload.get("text") or ""))
            batch.append(m.PointVectors(id=p.id, vector={SPARSE: m.SparseVector(indices=idx, values=val)}))
        if batch:
            index.client("update_vectors", index.name, points=batch, wait=True)
            batch = []
        if offset is None:
            break
    log.info("%s: BM25 weights rewritten with avgdl %.2f (was %.2f)", index.loc, avgdl, float(bm.get("avgdl") or 0))
    new = {**meta, "bm25": {**bm, "avgdl": avgdl}}
    index.write_meta(new)
    return new


def verify(index: QdrantIndex, repair: bool = False, wait_s: float = 0.0) -> dict[str, Any]:
    """See the module docstring. Returns ``{"index", "generation", counts..., "leftovers",
    "repaired"}``; raises IndexFormatError naming the collection and the first problem."""
    from .reader import QdrantReader

    m = _m()
    repaired: dict[str, Any] = {}
    if repair:
        with index.lock(wait_s):
            meta = index.read_meta(required=True)
            repaired = index.cleanup({**meta, "dirty": True})
            meta = index.read_meta(required=True)
            bm = meta.get("bm25") or {}
            if bm.get("n_chunks") and bm.get("avgdl"):
                drift = float(bm["total_terms"]) / int(bm["n_chunks"]) / float(bm["avgdl"]) - 1.0
                if abs(drift) > REWEIGHT_DRIFT:
                    reweight(index, meta)
                    repaired["reweighted_drift"] = round(drift, 4)
    meta = index.read_meta(required=True)
    g = int(meta["generation"])
    where = f"{index.loc}"
    dim = int(meta["embedder"]["dim"])
    index.check_dim(dim)
    r = QdrantReader(index, {**meta, "dirty": True})  # always filter by generation here
    problems: list[str] = []
    per_doc: dict[str, int] = {}
    n = 0
    next_id = int(meta.get("next_chunk_id", 0))
    vm, vn = visible(g)
    offset = None
    while True:
        pts, offset = index.client("scroll", index.name, scroll_filter=m.Filter(must=vm, must_not=vn), limit=512,
                                   offset=offset, with_payload=True, with_vectors=True)
        for p in pts:
            n += 1
            pl = p.payload or {}
            missing = [f for f in CHUNK_FIELDS if f not in pl]
            vec = p.vector if isinstance(p.vector, dict) else {}
            if missing:
                problems.append(f"chunk {p.id}: payload lacks {', '.join(missing)}")
            elif DENSE not in vec or len(vec[DENSE]) != dim:
                problems.append(f"chunk {p.id}: no {dim}-dimensional dense vector")
            elif SPARSE not in vec:
                problems.append(f"chunk {p.id}: no BM25 sparse vector")
            elif int(p.id) >= next_id:
                problems.append(f"chunk {p.id}: id not below next_chunk_id {next_id}")
            else:
                per_doc[pl["doc"]] = per_doc.get(pl["doc"], 0) + 1
            if problems:
                break
        if offset is None or problems:
            break
    if not problems:
        docs = {d.key: d for d in r.documents()}
        for key, c in sorted(per_doc.items()):
            d = docs.get(key)
            if d is None:
                problems.append(f"chunks of document {key!r} have no document record")
            elif d.n_chunks != c:
                problems.append(f"document {key!r}: record says {d.n_chunks} chunks, the collection holds {c}")
            if problems:
                break
        want = int((meta.get("counts") or {}).get("chunks", -1))
        if not problems and n != want:
            problems.append(f"{n} chunk points but the metadata says {want}")
        if not problems:
            short = [k for k, d in docs.items() if d.alias_of is None and d.n_chunks and k not in per_doc]
            if short:
                problems.append(f"document {short[0]!r}: record says {docs[short[0]].n_chunks} chunks, the collection holds 0")
    if problems:
        raise IndexFormatError(where, problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    left = leftovers(index, g)
    return {"index": where, "generation": g, **r.counts.to_dict(), "points_checked": n, "leftovers": left,
            **({"repaired": repaired} if repair else {})}
