"""Segments for the local backend: a commit writes what changed, not the whole index.

Layout (manifest ``format_version`` 3; see ``docs/segments.md`` for the design and figures)::

    segments/seg-000007-0/     one immutable segment, shared by every generation that lists it
        ids.npy                (n,) int64 ascending chunk ids (the rows of the files below)
        vectors.npy            (n, dim) float32 L2-normalised embeddings, rows as ids.npy
        dense.faiss            FAISS flat (or HNSW from ann_threshold rows on) over those ids
        postings.npz           BM25 term frequencies, term-major CSR: indptr int64 (V+1,),
                               indices int32 (P,) row positions, tf float32 (P,),
                               doc_lengths int32 (n,); no idf/avgdl baked in
        vocab.json, params.json  the V terms; tokenizer settings and format
    gen-000009/
        docstore.sqlite        files, documents, chunks of this generation (copied per commit)
        tombstones.npy         (t,) int64 ascending ids of rows of live segments deleted since
        segments.json          names of the segments this generation uses (garbage collection)

A commit (:func:`commit_generation`) writes one small segment for the chunks it added, the
generation's tombstones, and the manifest last; then it may merge segments
(:func:`plan_merges`, Lucene's ``LogByteSizeMergePolicy`` idea: adjacent segments of one size
level merge once ``MERGE_FACTOR`` of them exist, so every chunk is rewritten O(log n) times).
Ids only grow and merges take adjacent runs, so segments hold disjoint ascending id ranges.

Search (:mod:`rag.index.segment_search`) runs dense and BM25 over every segment: BM25 with the
*global* N, document frequencies and average length over live chunks, so scores equal those of
one index rebuilt over the same chunks. Dense search reads ``dense.faiss`` only for HNSW
segments; a flat one is searched exactly in numpy over its memory-mapped ``vectors.npy``
(:attr:`rag.index.segment.Segment.flat`), so a process searching only flat segments never
imports FAISS. Reading one segment folder is :mod:`rag.index.segment`; this module writes.

Garbage collection (:func:`collect_garbage`): a segment folder is removed only when no kept
``gen-*`` folder lists it in ``segments.json``, so older generations (``rag versions``,
``--at GEN``, rollback) stay readable while they are kept.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import IndexFormatError
from .manifest import fsync_dir, sha256_file
from .segment import (DENSE, FORMAT, FORMAT_VERSION, IDS, PARAMS, POSTINGS, SEGMENT_LIST, SEGMENTS,  # noqa: F401
                      TOMBSTONES, VECTORS, VOCAB, Segment, _load_npy, load_segment)

log = logging.getLogger("rag")

MERGE_FACTOR = 10
"""Adjacent segments of one size level merged together (Lucene's mergeFactor default, 10)."""
FLOOR_ROWS = 1_000
"""Segments below this many live rows all count as level 0 (Lucene's floor segment size), so
many tiny commits merge early instead of forming levels of 1, 10, 100 rows."""
SMALL_POSTINGS = 1_000_000
"""Up to this many postings (~20k chunks), :func:`build_postings` transposes with numpy (a
stable argsort, 0.2 s at the limit on this machine) rather than importing scipy for it."""
MAX_DELETED_RATIO = 0.5
"""A segment whose rows are more than this fraction deleted is rewritten (its tombstones purged)."""


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------- writing
@dataclass
class SegmentSpec:
    """What a manifest says about one segment (``manifest["segments"]`` entries)."""

    name: str
    rows: int
    min_id: int
    max_id: int
    dense: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rows": self.rows, "min_id": self.min_id, "max_id": self.max_id, "dense": self.dense}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SegmentSpec":
        return cls(str(d["name"]), int(d["rows"]), int(d["min_id"]), int(d["max_id"]), str(d.get("dense", "flat")))


def term_major(terms: np.ndarray, n_terms: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, indptr)`` that regroup postings listed row by row by term: ``order`` (p,) int64
    a stable argsort of ``terms`` (p,) (so each term's rows stay ascending), ``indptr``
    (n_terms + 1,) int64 where term t's postings are ``order[indptr[t]:indptr[t + 1]]``."""
    order = np.argsort(terms, kind="stable")
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=n_terms), out=indptr[1:])
    return order, indptr


def build_postings(texts: Sequence[str], bm25_config: Any) -> tuple[dict[str, np.ndarray], list[str], dict[str, Any]]:
    """Term-major tf postings of ``texts`` (rows in order): ``(arrays, vocab, tokenizer dict)``.
    Tokenised exactly as :meth:`rag.index.sparse.BM25Index.build` does (shared
    :func:`~rag.index.analysis.count_terms`). Chunk-major -> term-major: a stable numpy argsort
    by term up to :data:`SMALL_POSTINGS` postings (a small commit then never imports scipy,
    0.35-0.55 s of a one-file ingest here), scipy's linear-time CSR -> CSC conversion above;
    both keep each term's rows ascending, so the arrays are identical."""
    from .analysis import BM25Tokenizer, count_terms

    tok = BM25Tokenizer(bm25_config.language, bm25_config.stopwords, bm25_config.stemming)
    vocab, terms, tf, per_doc, doc_lengths = count_terms(list(texts), tok)
    n = len(texts)
    if terms.size <= SMALL_POSTINGS:
        order, term_indptr = term_major(terms, len(vocab))
        rows = np.repeat(np.arange(n, dtype=np.int32), per_doc)
        arrays = {"indptr": term_indptr, "indices": rows[order], "tf": tf[order].astype(np.float32),
                  "doc_lengths": doc_lengths.astype(np.int32)}
        return arrays, vocab, tok.to_dict()
    from scipy.sparse import csr_matrix

    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_doc, out=indptr[1:])
    csc = csr_matrix((tf, terms.astype(np.int64), indptr), shape=(n, max(len(vocab), 0))).tocsc()
    arrays = {"indptr": csc.indptr.astype(np.int64), "indices": csc.indices.astype(np.int32),
              "tf": csc.data.astype(np.float32), "doc_lengths": doc_lengths.astype(np.int32)}
    return arrays, vocab, tok.to_dict()


def write_segment(index_dir: Path, name: str, ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str], *,
                  bm25_config: Any, ann_threshold: int, link_dense: Path | None = None,
                  link_vectors: Path | None = None, dense_kind: str = "flat") -> tuple[SegmentSpec, dict[str, dict[str, Any]]]:
    """Write ``segments/NAME/`` atomically (temp folder, fsync, rename). ``ids`` (n,) int64
    ascending, ``vectors`` (n, dim) float32 rows as ``ids``, ``texts`` the index texts (title +
    chunk text). ``link_dense``/``link_vectors``: existing files with exactly these rows to
    hard-link instead of rebuilding (migration of a format-2 generation; ``dense_kind`` then
    names the linked index's kind, from its manifest). Returns the spec and
    ``{relative path: {size, sha256}}`` for the manifest."""
    from .dense import DenseIndex

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.size > 1 and np.any(np.diff(ids) <= 0):
        raise ValueError("segment ids must be ascending and unique")
    root = Path(index_dir) / SEGMENTS
    root.mkdir(exist_ok=True)
    final = root / name
    tmp = root / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    np.save(tmp / IDS, ids, allow_pickle=False)
    if link_vectors is not None:
        _link_or_copy(link_vectors, tmp / VECTORS)
    else:
        np.save(tmp / VECTORS, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
    kind = "hnsw" if ids.shape[0] >= ann_threshold else "flat"
    if link_dense is not None:
        _link_or_copy(link_dense, tmp / DENSE)
        kind = dense_kind
    else:
        DenseIndex.build(np.asarray(vectors, dtype=np.float32), ids, ann_threshold=ann_threshold).save(tmp / DENSE)
    arrays, vocab, tok = build_postings(texts, bm25_config)
    np.savez(tmp / POSTINGS, **arrays)
    (tmp / VOCAB).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp / PARAMS).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "rows": int(ids.shape[0]),
                                          "tokenizer": tok}, indent=1), encoding="utf-8")
    files: dict[str, dict[str, Any]] = {}
    for p in sorted(tmp.iterdir()):
        _fsync(p)
        files[f"{SEGMENTS}/{name}/{p.name}"] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    fsync_dir(tmp)
    if final.exists():  # debris of a commit that never reached its manifest
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    spec = SegmentSpec(name, int(ids.shape[0]), int(ids[0]) if ids.size else -1, int(ids[-1]) if ids.size else -1, kind)
    return spec, files


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def index_texts(docstore: Any, ids: np.ndarray) -> list[str]:
    """The BM25 texts (title + chunk text, :func:`rag.index.docstore.index_text`) of ``ids``
    ((n,) int64 ascending, all present in ``docstore``), in that order. Raises
    IndexFormatError when one is missing."""
    from .docstore import index_text

    ids = np.asarray(ids, dtype=np.int64)
    if ids.size > 50_000:  # one ordered scan beats many IN (...) lookups
        lo, hi = int(ids[0]), int(ids[-1])
        got = {cid: t for cid, t in docstore.iter_index_texts() if lo <= cid <= hi}
    else:
        got = {cid: index_text(c.title, c.text) for cid, c in docstore.get_chunks(ids.tolist()).items()}
    try:
        return [got[int(i)] for i in ids]
    except KeyError as e:
        raise IndexFormatError(str(docstore.path), f"chunk {e.args[0]} is missing") from None


# ---------------------------------------------------------------------------- merge policy
def level(live_rows: int) -> int:
    """Size level of a segment: floor(log10(max(live, FLOOR_ROWS) / FLOOR_ROWS))."""
    return int(math.floor(math.log10(max(int(live_rows), FLOOR_ROWS) / FLOOR_ROWS) + 1e-9))


def plan_merges(live: Sequence[int], rows: Sequence[int]) -> list[tuple[int, int]]:
    """Which adjacent runs of segments to merge, as ``[(start, end), ...]`` (end exclusive,
    ascending, disjoint), given each segment's live and total rows in id order.

    A run of >= MERGE_FACTOR adjacent segments of one level merges into one (it then sits a level
    higher, where it may complete another run: the caller applies plans until none is left); a
    segment more than MAX_DELETED_RATIO deleted is rewritten alone. Segments of other levels are
    never merged in, so a commit's work is bounded by the size of the run it completes."""
    out: list[tuple[int, int]] = []
    i, n = 0, len(live)
    while i < n:
        j = i
        while j < n and level(live[j]) == level(live[i]):
            j += 1
        if j - i >= MERGE_FACTOR:
            out.append((i, j))
        else:
            for k in range(i, j):
                if rows[k] and (rows[k] - live[k]) > MAX_DELETED_RATIO * rows[k]:
                    out.append((k, k + 1))
        i = j
    return out


# ---------------------------------------------------------------------------- commit
def segment_specs(manifest: Mapping[str, Any]) -> list[SegmentSpec] | None:
    """The segments a manifest lists (None: a format-2 generation without segments)."""
    segs = manifest.get("segments")
    return None if segs is None else [SegmentSpec.from_dict(s) for s in segs]


def commit_generation(tx: Any, new_ids: np.ndarray, new_vectors: np.ndarray, *, dim: int, embedder: dict[str, Any],
                      config: dict[str, Any], bm25_config: Any, ann_threshold: int,
                      keep_generations: Sequence[str] = (), rebuild: np.ndarray | None = None,
                      merge: bool = True) -> dict[str, Any]:
    """Commit ``tx`` (a :class:`rag.index.store.Transaction` whose docstore holds the new
    state) as a generation of segments and return the new manifest.

    ``new_ids`` (m,) int64 / ``new_vectors`` (m, dim) float32: chunks added in this transaction
    (they become one new segment). Rows of the base's segments that the docstore no longer has
    become tombstones. A format-2 base becomes segment 0 first (its vectors and FAISS file hard-
    linked, BM25 postings built once from its docstore). ``rebuild`` (n, dim) float32 vectors of
    every chunk in ascending id order: write the whole state as ONE new segment (``rag repair``,
    ``rag optimize``). ``merge``: apply :func:`plan_merges`. Crash safety: segments are written
    first, then the generation folder, then ``manifest.json`` (the switch); debris of a crash
    is removed by the next writer (:func:`collect_garbage`).
    """
    from .manifest import FORMAT as INDEX_FORMAT, FORMAT_VERSION as INDEX_VERSION, MANIFEST, write_json_atomic
    from .store import _now

    t0 = time.perf_counter()
    ds = tx.docstore
    store_dir: Path = tx.store.dir
    gen = int(tx.generation)
    live_ids = ds.chunk_ids()
    base = tx.base
    files: dict[str, dict[str, Any]] = {}
    specs: list[SegmentSpec] = []
    counter = [0]

    def next_name() -> str:
        counter[0] += 1
        return f"seg-{gen:06d}-{counter[0] - 1}"

    if rebuild is not None:
        vecs = np.asarray(rebuild, dtype=np.float32)
        if vecs.shape[0] != live_ids.shape[0]:
            raise IndexFormatError(str(tx.tmp_dir), f"{vecs.shape[0]} vectors for {live_ids.shape[0]} chunks")
        if live_ids.size:
            spec, f = write_segment(store_dir, next_name(), live_ids, vecs, index_texts(ds, live_ids),
                                    bm25_config=bm25_config, ann_threshold=ann_threshold)
            specs, files = [spec], dict(f)
    else:
        if base is not None:
            base_specs = segment_specs(base.manifest)
            if base_specs is None:  # format 2: the whole base generation becomes segment 0
                specs, files = _migrate(tx, next_name(), bm25_config, ann_threshold)
            else:
                specs = base_specs
                prefix = tuple(f"{SEGMENTS}/{s.name}/" for s in specs)
                files = {k: v for k, v in base.manifest["files"].items() if k.startswith(prefix)}
        add_ids = np.asarray(new_ids, dtype=np.int64).reshape(-1)
        if add_ids.size:
            order = np.argsort(add_ids, kind="stable")
            add_ids = add_ids[order]
            add_vecs = np.asarray(new_vectors, dtype=np.float32).reshape(-1, dim)[order]
            spec, f = write_segment(store_dir, next_name(), add_ids, add_vecs, index_texts(ds, add_ids),
                                    bm25_config=bm25_config, ann_threshold=ann_threshold)
            if specs and spec.min_id <= specs[-1].max_id:
                raise IndexFormatError(str(store_dir / SEGMENTS / spec.name), "new chunk ids are not above the older ones")
            specs.append(spec)
            files.update(f)
    t_write = time.perf_counter() - t0
    # tombstones: rows of the listed segments that the new docstore no longer holds
    dead_parts, live_counts = [], []
    for s in specs:
        ids = _load_npy(store_dir / SEGMENTS / s.name / IDS, np.int64, mmap=True)
        alive = _member(ids, live_ids)
        dead_parts.append(np.asarray(ids[~alive]))
        live_counts.append(int(alive.sum()))
    merged_rows = 0
    if merge and rebuild is None:
        while True:
            plan = plan_merges(live_counts, [s.rows for s in specs])
            if not plan:
                break
            for start, end in reversed(plan):
                run = specs[start:end]
                keep_ids, keep_vecs = [], []
                for s, dead in zip(run, dead_parts[start:end]):
                    seg_dir = store_dir / SEGMENTS / s.name
                    ids = _load_npy(seg_dir / IDS, np.int64, mmap=True)
                    alive = ~_member(ids, dead)
                    keep_ids.append(np.asarray(ids[alive]))
                    keep_vecs.append(np.asarray(_load_npy(seg_dir / VECTORS, np.float32, ndim=2, mmap=True)[alive]))
                    for rel in [k for k in files if k.startswith(f"{SEGMENTS}/{s.name}/")]:
                        del files[rel]
                ids = np.concatenate(keep_ids)
                new_specs: list[SegmentSpec] = []
                if ids.size:
                    spec, f = write_segment(store_dir, next_name(), ids, np.concatenate(keep_vecs), index_texts(ds, ids),
                                            bm25_config=bm25_config, ann_threshold=ann_threshold)
                    files.update(f)
                    new_specs = [spec]
                    merged_rows += int(ids.size)
                specs[start:end] = new_specs
                dead_parts[start:end] = [np.zeros(0, np.int64)] * len(new_specs)
                live_counts[start:end] = [int(ids.size)] * len(new_specs)
    tombstones = np.sort(np.concatenate(dead_parts)) if dead_parts else np.zeros(0, np.int64)
    np.save(tx.tmp_dir / TOMBSTONES, tombstones.astype(np.int64), allow_pickle=False)
    (tx.tmp_dir / SEGMENT_LIST).write_text(json.dumps([s.name for s in specs]), encoding="utf-8")
    stats = ds.stats()
    ds.close()
    gen_name = f"gen-{gen:06d}"
    for p in sorted(tx.tmp_dir.iterdir()):
        if p.is_file():
            _fsync(p)
            files[f"{gen_name}/{p.name}"] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    fsync_dir(tx.tmp_dir)
    final = store_dir / gen_name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tx.tmp_dir, final)
    fsync_dir(store_dir)
    n = int(live_ids.shape[0])
    biggest = max(specs, key=lambda s: s.rows).dense if specs else "flat"
    manifest = {
        "format": INDEX_FORMAT, "format_version": INDEX_VERSION, "generation": gen, "gen_dir": gen_name,
        "created": base.manifest.get("created") if base is not None else _now(), "updated": _now(),
        "embedder": dict(embedder, dim=dim, normalised=True, metric="inner_product"), "config": config,
        "counts": {"files": stats["files"], "documents": stats["documents"], "chunks": n,
                   "duplicate_documents": stats["duplicate_documents"]},
        "dense": {"kind": biggest, "ann_threshold": ann_threshold},
        "bm25": {"k1": float(bm25_config.k1), "b": float(bm25_config.b), "idf": "lucene"},
        "segments": [s.to_dict() for s in specs], "tombstones": int(tombstones.size),
        "next_chunk_id": int(max(tx.next_chunk_id, int(live_ids.max()) + 1 if live_ids.size else 0)),
        "files": dict(sorted(files.items())),
    }
    write_json_atomic(store_dir / MANIFEST, manifest)
    keep = [gen_name, *keep_generations]
    if base is not None:
        keep.append(base.manifest["gen_dir"])
    tx.store.remove_old_generations(keep)
    log.info("%s: generation %d: %d segment(s), %d tombstone(s), %d row(s) merged; segments written in %.2f s, "
             "commit %.2f s", store_dir, gen, len(specs), tombstones.size, merged_rows, t_write, time.perf_counter() - t0)
    return manifest


def _migrate(tx: Any, name: str, bm25_config: Any, ann_threshold: int) -> tuple[list[SegmentSpec], dict[str, Any]]:
    """A format-2 base generation as segment 0: vectors and FAISS hard-linked, postings built."""
    base = tx.base
    gen_dir = base.gen_dir
    ids = base.docstore.chunk_ids()
    if ids.size == 0:
        return [], {}
    log.info("%s: converting generation %d to segments (one-time BM25 postings for %d chunks)",
             tx.store.dir, base.generation, ids.size)
    spec, files = write_segment(tx.store.dir, name, ids, None, index_texts(base.docstore, ids), bm25_config=bm25_config,
                                ann_threshold=ann_threshold, link_dense=gen_dir / "dense.faiss",
                                link_vectors=gen_dir / "vectors.npy",
                                dense_kind=str((base.manifest.get("dense") or {}).get("kind", "flat")))
    return [spec], files


def _member(ids: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """(n,) bool: which of ``ids`` are in ``sorted_set`` ((m,) int64 ascending)."""
    ids = np.asarray(ids, dtype=np.int64)
    if sorted_set.size == 0 or ids.size == 0:
        return np.zeros(ids.shape, dtype=bool)
    j = np.minimum(np.searchsorted(sorted_set, ids), sorted_set.size - 1)
    return sorted_set[j] == ids


def stored_vectors(index_dir: Path, manifest: Mapping[str, Any], live_ids: np.ndarray) -> np.ndarray:
    """(n, dim) float32 stored vectors of ``live_ids`` ((n,) int64 ascending: the docstore's
    chunks) gathered from the segments' primary files (``ids.npy``, ``vectors.npy``), whose
    size and sha256 are checked against the manifest first; FAISS files, postings and
    tombstones are not read (``rag repair`` rebuilds them). Raises IndexFormatError naming a
    damaged primary file, or when a chunk has no stored vector."""
    index_dir = Path(index_dir)
    dim = int(manifest["embedder"]["dim"])
    out = np.zeros((live_ids.shape[0], dim), dtype=np.float32)
    found = np.zeros(live_ids.shape[0], dtype=bool)
    for spec in segment_specs(manifest) or []:
        for name in (IDS, VECTORS):
            rel = f"{SEGMENTS}/{spec.name}/{name}"
            p, info = index_dir / rel, manifest["files"].get(rel, {})
            if not p.exists() or p.stat().st_size != info.get("size") or sha256_file(p) != info.get("sha256"):
                raise IndexFormatError(str(p), "cannot repair: this primary file is damaged; re-ingest the documents")
        seg_dir = index_dir / SEGMENTS / spec.name
        ids = _load_npy(seg_dir / IDS, np.int64)
        vecs = _load_npy(seg_dir / VECTORS, np.float32, ndim=2, mmap=True)
        if vecs.shape != (ids.shape[0], dim):
            raise IndexFormatError(str(seg_dir / VECTORS), f"shape {vecs.shape} does not fit {ids.shape[0]} rows of dim {dim}")
        hit = _member(ids, live_ids)
        rows = np.searchsorted(live_ids, ids[hit])
        out[rows] = vecs[np.flatnonzero(hit)]
        found[rows] = True
    if not found.all():
        missing = int(live_ids[~found][0])
        raise IndexFormatError(str(index_dir / manifest["gen_dir"]), f"chunk {missing} has no stored vector; re-ingest the documents")
    return out


# ---------------------------------------------------------------------------- garbage
def referenced_segments(index_dir: Path) -> set[str] | None:
    """Names listed by every committed-looking ``gen-*`` folder's ``segments.json``; None when
    one of them cannot be read (then nothing is collected)."""
    names: set[str] = set()
    for g in Path(index_dir).glob("gen-*"):
        if ".tmp-" in g.name or not g.is_dir():
            continue
        p = g / SEGMENT_LIST
        if not p.exists():
            continue  # a format-2 generation: no segments
        try:
            names.update(str(x) for x in json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None
    return names


def collect_garbage(index_dir: Path) -> list[str]:
    """Remove segment folders no kept generation lists and temp folders of interrupted writes.
    Only call while holding the writer lock. Returns the names removed."""
    root = Path(index_dir) / SEGMENTS
    if not root.is_dir():
        return []
    used = referenced_segments(index_dir)
    if used is None:
        return []
    removed = []
    for p in root.iterdir():
        if ".tmp-" in p.name or p.name not in used:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        log.debug("%s: removed unused segments %s", index_dir, ", ".join(sorted(removed)))
    return removed


__all__ = ["Segment", "SegmentSpec", "collect_garbage", "commit_generation", "load_segment", "plan_merges",
           "segment_specs", "stored_vectors", "write_segment"]
