"""``rag migrate --from A --to B``: move an index between backends (local folder <-> Qdrant)
with its stored vectors, so nothing is re-embedded.

What moves: every document record (kept documents and aliases, with their bodies, content
hashes and alias links), every file record, every chunk with its exact offsets, page, heading
path and metadata, and its stored embedding. Chunk ids are kept (they are the point ids in
Qdrant), so citations and chunk-level alias links stay valid; the target's next chunk id
continues after the source's. BM25 is rebuilt by the target from the chunk texts with the
source's settings; into Qdrant the source's average chunk length is used, so the BM25 scores
equal the local index's. The target must not hold an index yet. The source is only read.

Memory: a Qdrant source's vectors are read into memory (n x dim float32); a local source's are
memory-mapped.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from .errors import ConfigError

log = logging.getLogger("rag")


def _source_avgdl(reader: Any) -> float | None:
    """The source's BM25 average chunk length (terms), when it has one."""
    from .index.local import LocalReader

    if isinstance(reader, LocalReader):
        return float(reader.snapshot.sparse.avgdl) or None
    bm = (getattr(reader, "manifest", None) or {}).get("bm25") or {}
    return float(bm["avgdl"]) if bm.get("avgdl") else None


def _next_chunk_id(reader: Any, ids: np.ndarray) -> int:
    nxt = int((getattr(reader, "manifest", None) or {}).get("next_chunk_id", 0) or 0)
    return max(nxt, int(ids.max()) + 1 if ids.size else 0)


def migrate(src: str, dst: str, config: Any = None, *, progress: Callable[[int, int], None] | None = None,
            wait_s: float = 0.0) -> dict[str, Any]:
    """Copy the index at ``src`` to the empty location ``dst`` (either may be a folder or a
    Qdrant location, :func:`rag.index.open_index`). Returns what moved: ``{"from", "to",
    "documents", "aliases", "files", "chunks", "vectors", "dim", "ids_kept", "generation",
    "seconds"}``. Raises ConfigError when ``dst`` already holds an index or names ``src``,
    IndexNotFoundError when ``src`` holds none. ``progress(done, total)`` counts documents."""
    from .config import RagConfig
    from .index import is_remote_location, open_index
    from .index.local import LocalWriter

    t0 = time.perf_counter()
    cfg = config or RagConfig()
    if str(src) == str(dst):
        raise ConfigError(f"--to {dst}: the same location as --from")
    source = open_index(str(src), cfg)
    target = open_index(str(dst), cfg)
    if target.exists():
        raise ConfigError(f"--to {dst}: already holds an index; migrate writes into an empty location only")
    out: dict[str, Any] = {"from": str(src), "to": str(dst)}
    with source.lease() as r:
        settings = dict(source.stored_settings())
        embedder = dict(r.embedder)
        ids = np.asarray(r.chunk_ids(), dtype=np.int64)
        vectors = np.asarray(r.vectors(), dtype=np.float32)
        if vectors.shape[0] != ids.shape[0]:
            raise ConfigError(f"--from {src}: {ids.shape[0]} chunks but {vectors.shape[0]} stored vectors")
        docs = r.documents()
        files = list(r.files().values())
        avgdl = _source_avgdl(r)
        next_id = _next_chunk_id(r, ids)
        by_doc: dict[str, list[int]] = {}
        chunk_of: dict[int, Any] = {}
        for s in range(0, ids.size, 2048):
            for c in r.chunks(ids[s:s + 2048].tolist()):
                chunk_of[c.id] = c
                by_doc.setdefault(c.doc_id, []).append(c.id)
        if len(chunk_of) != ids.size:
            raise ConfigError(f"--from {src}: {ids.size - len(chunk_of)} chunk(s) could not be read")
        row = {int(i): j for j, i in enumerate(ids.tolist())}
        known = {d.key for d in docs}
        orphans = sorted(set(by_doc) - known)
        if orphans:
            raise ConfigError(f"--from {src}: chunks of document {orphans[0]!r} have no document record (run rag verify)")
        order = sorted(docs, key=lambda d: (min(by_doc[d.key]) if by_doc.get(d.key) else -1, d.key))
        opts: dict[str, Any] = {"embedder": embedder, "settings": settings}
        if avgdl and is_remote_location(str(dst)):
            opts["avgdl"] = avgdl
        kept = True
        with target.writer(wait_s, **opts) as w:
            local = isinstance(w, LocalWriter)
            for n, d in enumerate(order, 1):
                cids = sorted(by_doc.get(d.key, []))
                chunks = [chunk_of[i] for i in cids]
                vec = vectors[[row[i] for i in cids]] if cids else np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else int(embedder["dim"])), np.float32)
                if local:
                    contiguous = cids == list(range(cids[0], cids[0] + len(cids))) if cids else True
                    if cids and contiguous and cids[0] >= w.tx.next_chunk_id:
                        w.tx.next_chunk_id = cids[0]
                    got = w.upsert(d, chunks, vec)
                else:
                    got = w.upsert(d, chunks, vec, ids=cids)
                kept = kept and got.tolist() == cids
                if progress:
                    progress(n, len(order))
            for f in files:
                w.put_file(f)
            if local:
                w.tx.next_chunk_id = max(w.tx.next_chunk_id, next_id)
            else:
                w.next_id = max(w.next_id, next_id)
            manifest = w.commit()
    aliases = sum(1 for d in docs if d.alias_of)
    out.update({"documents": len(docs) - aliases, "aliases": aliases, "files": len(files), "chunks": int(ids.size),
                "vectors": int(vectors.shape[0]), "dim": int(embedder["dim"]), "ids_kept": bool(kept),
                "generation": int(manifest["generation"]), "seconds": round(time.perf_counter() - t0, 2)})
    log.info("migrated %s -> %s: %s", src, dst, out)
    return out
