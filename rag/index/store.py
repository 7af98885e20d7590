"""Atomic, crash-safe index folders.

Layout of an index folder (``format_version`` 2; format 1 folders open and are upgraded by
their next write, see :mod:`rag.index.docstore`)::

    manifest.json            current generation, counts, embedder, config, sha256 + size per file
    gen-000007/              one immutable generation
        docstore.sqlite      files, documents, chunks (SQLite)
        vectors.npy          (n, dim) float32 L2-normalised, rows in ascending chunk id order
        dense.faiss          FAISS index over the same ids (flat or HNSW)
        sparse/bm25.npz ...  BM25 term-by-chunk matrix, vocab.json, params.json
    embcache.sqlite          embedding cache keyed by (model, text hash): a cache, not state
    .lock, .writer.json      writer lock (filelock) and the holder's pid

Why generations instead of swapping the whole folder with ``os.replace`` (as DESIGN.md first
said): on POSIX ``rename(2)`` cannot replace a non-empty directory, so a folder swap needs two
renames and has a window with no index. Writing ``gen-N+1/`` beside the current one and then
atomically replacing ``manifest.json`` gives the same all-or-nothing switch with no window, and
readers that still hold the previous generation keep working (it is kept until the next commit).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import IndexFormatError, IndexLockedError, IndexNotFoundError
from .docstore import DocStore
from .manifest import (FORMAT, FORMAT_VERSION, MANIFEST, check_files, fsync_dir, read_manifest,
                       sha256_file, write_json_atomic)

log = logging.getLogger("rag")

DOCSTORE = "docstore.sqlite"
VECTORS = "vectors.npy"
DENSE = "dense.faiss"
SPARSE = "sparse"
LOCK = ".lock"
WRITER = ".writer.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


@dataclass
class Snapshot:
    """A committed generation opened read-only. Its files never change while it is open."""

    index_dir: Path
    manifest: dict[str, Any]
    docstore: DocStore
    _dense: Any = None
    _sparse: Any = None
    _doc_codes: Any = None
    _segments: Any = None

    @property
    def segmented(self) -> bool:
        """True for a generation of segments (format 3, :mod:`rag.index.segments`)."""
        return "segments" in self.manifest

    @property
    def segment_set(self):
        """The :class:`~rag.index.segment_search.SegmentSet` of a segmented generation."""
        if self._segments is None:
            from .segment_search import open_segments

            self._segments = open_segments(self.index_dir, self.manifest)
        return self._segments

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    @property
    def gen_dir(self) -> Path:
        return self.index_dir / self.manifest["gen_dir"]

    @property
    def dense(self):
        """The FAISS :class:`~rag.index.dense.DenseIndex` (loaded on first use)."""
        if self._dense is None and self.segmented:
            from .segment_search import DenseView

            self._dense = DenseView(self.segment_set)
        if self._dense is None:
            from .dense import DenseIndex

            self._dense = DenseIndex.load(self.gen_dir / DENSE)
            n = self.manifest["counts"]["chunks"]
            if self._dense.ntotal != n:
                raise IndexFormatError(str(self.gen_dir / DENSE), f"holds {self._dense.ntotal} vectors but the docstore has {n} chunks")
        return self._dense

    @property
    def sparse(self):
        """The :class:`~rag.index.sparse.BM25Index` (loaded on first use)."""
        if self._sparse is None and self.segmented:
            from .segment_search import SparseView

            self._sparse = SparseView(self.segment_set)
        if self._sparse is None:
            from .sparse import BM25Index

            self._sparse = BM25Index.load(self.gen_dir / SPARSE)
            n = self.manifest["counts"]["chunks"]
            if self._sparse.n_docs != n:
                raise IndexFormatError(str(self.gen_dir / SPARSE), f"holds {self._sparse.n_docs} chunks but the docstore has {n}")
        return self._sparse

    def document_codes(self, chunk_ids: np.ndarray) -> np.ndarray:
        """(m,) int64 document code of each chunk id (see
        :meth:`DocStore.chunk_documents`); the id -> code table (16 bytes per chunk) is read
        once per snapshot. Ids not in the docstore get -1."""
        if self._doc_codes is None:
            self._doc_codes = self.docstore.chunk_documents()
        ids, codes = self._doc_codes
        q = np.asarray(chunk_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            return np.full(q.shape, -1, dtype=np.int64)
        j = np.minimum(np.searchsorted(ids, q), ids.size - 1)
        return np.where(ids[j] == q, codes[j], -1)

    def vectors(self, mmap: bool = True) -> np.ndarray:
        """(n, dim) float32 stored embeddings, rows in ascending chunk id order (a segmented
        generation gathers its segments' live rows: a copy)."""
        if self.segmented:
            return self.segment_set.vectors()
        path = self.gen_dir / VECTORS
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise IndexFormatError(str(path), f"not a readable vector file ({e})") from None

    def close(self) -> None:
        self.docstore.close()


class IndexStore:
    """One index folder: open snapshots, take the writer lock, write generations."""

    def __init__(self, index_dir: str | Path):
        self.dir = Path(index_dir)

    def exists(self) -> bool:
        return (self.dir / MANIFEST).exists()

    # ---- reading ---------------------------------------------------------------------------
    def open(self, full_check: bool = False, load_all: bool = True) -> Snapshot:
        """Open the current generation.

        Checks format and version, that every file is present with its size and (cheap)
        checksum, and that docstore, FAISS and BM25 counts agree (a segmented generation's flat
        segments, searched over ``vectors.npy``, have their FAISS files read only with
        ``full_check``). ``full_check`` hashes every file and cross-checks ids. Raises
        IndexNotFoundError or IndexFormatError (one line, naming the file).
        """
        if not self.dir.is_dir() or not self.exists():
            if self.dir.is_dir() and any(self.dir.glob("gen-*")):
                raise IndexFormatError(str(self.dir / MANIFEST), "missing manifest")
            raise IndexNotFoundError(f"{self.dir}: no index here (run `rag ingest PATH --index {self.dir}` first)")
        for attempt in range(3):
            manifest = read_manifest(self.dir)
            try:
                check_files(self.dir, manifest, full=full_check)
                break
            except IndexFormatError:
                # A writer may have committed (and removed our generation) between reading the
                # manifest and checking files: re-read once the manifest changed.
                if attempt < 2 and read_manifest(self.dir)["generation"] != manifest["generation"]:
                    continue
                raise
        gen_dir = self.dir / manifest["gen_dir"]
        ds = DocStore.open_readonly(gen_dir / DOCSTORE)
        n = ds.count_chunks()
        if n != manifest["counts"]["chunks"]:
            ds.close()
            raise IndexFormatError(str(gen_dir / DOCSTORE), f"has {n} chunks but the manifest says {manifest['counts']['chunks']}")
        snap = Snapshot(self.dir, manifest, ds)
        if load_all:
            try:
                snap.dense
                snap.sparse
                if snap.segmented:  # load every segment now: a later commit may collect its folder
                    segs = snap.segment_set
                    segs.check(n, gen_dir / DOCSTORE)
                    for spec, seg in zip(segs.specs, segs.segments):
                        # flat: vectors.npy memory-mapped (readable after collection), no FAISS;
                        # HNSW, and every segment for a full check: dense.faiss read and counted
                        seg.searcher(spec.dense)
                        if full_check:
                            seg.dense  # noqa: B018
                        seg.vectors()
                else:
                    vec = snap.vectors()
                    if vec.shape[0] != n:
                        raise IndexFormatError(str(gen_dir / VECTORS), f"holds {vec.shape[0]} vectors but the docstore has {n} chunks")
                if full_check:
                    self._check_ids(snap)
            except Exception:
                ds.close()
                raise
        return snap

    def _check_ids(self, snap: Snapshot) -> None:
        ids = snap.docstore.chunk_ids()
        if not np.array_equal(np.sort(snap.sparse.ids), ids):
            raise IndexFormatError(str(snap.gen_dir / SPARSE), "BM25 chunk ids differ from the docstore's")
        dense_ids = snap.dense.ids
        if dense_ids is not None and not np.array_equal(np.sort(dense_ids), ids):
            raise IndexFormatError(str(snap.gen_dir / DENSE), "FAISS ids differ from the docstore's")

    # ---- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the single-writer lock (``.lock`` via filelock).

        Waits up to ``wait_s`` seconds, then raises IndexLockedError naming the holder's pid.
        The lock is released by the OS when the holder dies, so ``kill -9`` never leaves it stuck.
        """
        from filelock import FileLock, Timeout

        self.dir.mkdir(parents=True, exist_ok=True)
        lk = FileLock(str(self.dir / LOCK))
        try:
            lk.acquire(timeout=max(wait_s, 0.0))
        except Timeout:
            holder = "unknown"
            try:
                holder = str(json.loads((self.dir / WRITER).read_text())["pid"])
            except (OSError, ValueError, KeyError):
                pass
            raise IndexLockedError(f"{self.dir}: another ingest (pid {holder}) is writing this index; "
                                   f"waited {wait_s:g} s (use --wait SECONDS to wait longer)") from None
        try:
            write_json_atomic(self.dir / WRITER, {"pid": os.getpid(), "since": _now()})
            self.cleanup_stale()
            yield
        finally:
            with contextlib.suppress(OSError):
                (self.dir / WRITER).unlink()
            lk.release()

    def cleanup_stale(self) -> list[str]:
        """Remove what a killed writer left: temp generations and generations newer than the
        manifest (written but never committed). Only call while holding the lock."""
        removed = []
        current = None
        if self.exists():
            with contextlib.suppress(IndexFormatError):
                current = int(read_manifest(self.dir)["generation"])
        for p in self.dir.iterdir():
            name = p.name
            stale = ".tmp-" in name and (name.startswith("gen-") or name.startswith(".manifest"))
            if name.startswith("gen-") and ".tmp-" not in name:
                with contextlib.suppress(ValueError):
                    g = int(name[4:])
                    stale = current is None or g > current
            if stale:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        p.unlink()
                removed.append(name)
        from .segments import collect_garbage

        removed += collect_garbage(self.dir)
        if removed:
            log.info("removed stale files of an interrupted write: %s", ", ".join(sorted(removed)))
        return removed

    def begin(self, base: Snapshot | None) -> "Transaction":
        """Start a new generation based on ``base`` (None: an empty index). Hold the lock."""
        return Transaction(self, base)

    def remove_old_generations(self, keep: Sequence[str]) -> None:
        for p in self.dir.glob("gen-*"):
            if p.name not in keep and ".tmp-" not in p.name:
                shutil.rmtree(p, ignore_errors=True)
        from .segments import collect_garbage  # segments no kept generation lists any more

        collect_garbage(self.dir)


class Transaction:
    """Builds generation N+1 in ``gen-N+1.tmp-PID/`` and commits it by writing the manifest."""

    def __init__(self, store: IndexStore, base: Snapshot | None):
        self.store = store
        self.base = base
        self.generation = (base.generation + 1) if base else 1
        self.tmp_dir = store.dir / f"gen-{self.generation:06d}.tmp-{os.getpid()}"
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        path = self.tmp_dir / DOCSTORE
        self.docstore = base.docstore.copy_to(path) if base else DocStore.create(path)
        self.next_chunk_id = int(base.manifest.get("next_chunk_id", 0)) if base else 0

    def new_chunk_ids(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh int64 ids; ids are never reused, so nothing ever shifts."""
        ids = np.arange(self.next_chunk_id, self.next_chunk_id + n, dtype=np.int64)
        self.next_chunk_id += n
        return ids

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.docstore.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def commit(self, new_ids: np.ndarray, new_vectors: np.ndarray, *, dim: int, embedder: dict[str, Any],
               config: dict[str, Any], bm25_config: Any, ann_threshold: int, extra: dict[str, Any] | None = None,
               rebuild_vectors: np.ndarray | None = None, keep_generations: Sequence[str] = ()) -> dict[str, Any]:
        """Write vectors, FAISS and BM25 for the docstore's current chunks, then the manifest.

        ``new_ids`` (m,) int64 / ``new_vectors`` (m, dim) float32: chunks added in this
        transaction (ids larger than every older id). Rows of the base generation whose ids are
        gone from the docstore are dropped. ``keep_generations``: folder names kept on disk
        besides the new and the base generation (those leased in this process). Returns the
        new manifest.
        """
        from .dense import DenseIndex
        from .sparse import BM25Index

        ds = self.docstore
        ids = ds.chunk_ids()
        if rebuild_vectors is not None:
            vectors = rebuild_vectors
        else:
            if self.base is not None and self.base.manifest["counts"]["chunks"] > 0:
                old_ids = self.base.docstore.chunk_ids()
                old_vec = self.base.vectors(mmap=True)
                keep = np.isin(old_ids, ids, assume_unique=True)
                parts = [np.asarray(old_vec[keep], dtype=np.float32)]
            else:
                parts = [np.zeros((0, dim), dtype=np.float32)]
            parts.append(np.asarray(new_vectors, dtype=np.float32).reshape(-1, dim))
            vectors = np.ascontiguousarray(np.concatenate(parts, axis=0))
            if new_ids.size and not np.array_equal(np.asarray(new_ids, dtype=np.int64), ids[ids.shape[0] - new_ids.size:]):
                # rows must follow ascending chunk id order: sort the new rows by id
                order = np.argsort(np.asarray(new_ids, dtype=np.int64), kind="stable")
                vectors[vectors.shape[0] - new_ids.size:] = np.asarray(new_vectors, dtype=np.float32).reshape(-1, dim)[order]
        if vectors.shape[0] != ids.shape[0]:
            raise IndexFormatError(str(self.tmp_dir / VECTORS), f"{vectors.shape[0]} vectors for {ids.shape[0]} chunks")
        np.save(self.tmp_dir / VECTORS, vectors, allow_pickle=False)
        DenseIndex.build(vectors, ids, ann_threshold=ann_threshold).save(self.tmp_dir / DENSE)
        texts_ids = list(ds.iter_index_texts())
        sparse = BM25Index.build([t for _, t in texts_ids], np.asarray([i for i, _ in texts_ids], dtype=np.int64), bm25_config)
        (self.tmp_dir / SPARSE).mkdir(exist_ok=True)
        sparse.save(self.tmp_dir / SPARSE)
        stats = ds.stats()
        ds.close()
        gen_name = f"gen-{self.generation:06d}"
        files: dict[str, dict[str, Any]] = {}
        for p in sorted(self.tmp_dir.rglob("*")):
            if p.is_file():
                _fsync_file(p)
                rel = f"{gen_name}/{p.relative_to(self.tmp_dir).as_posix()}"
                files[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for d in [self.tmp_dir / SPARSE, self.tmp_dir]:
            fsync_dir(d)
        final = self.store.dir / gen_name
        if final.exists():  # an uncommitted leftover of the same number (cleanup_stale removes these)
            shutil.rmtree(final)
        os.replace(self.tmp_dir, final)
        fsync_dir(self.store.dir)
        created = self.base.manifest.get("created") if self.base else _now()
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "generation": self.generation,
            "gen_dir": gen_name,
            "created": created,
            "updated": _now(),
            "embedder": dict(embedder, dim=dim, normalised=True, metric="inner_product"),
            "config": config,
            "counts": {"files": stats["files"], "documents": stats["documents"], "chunks": int(ids.shape[0]),
                       "duplicate_documents": stats["duplicate_documents"]},
            "dense": {"kind": "hnsw" if ids.shape[0] >= ann_threshold else "flat", "ann_threshold": ann_threshold},
            "next_chunk_id": int(max(self.next_chunk_id, int(ids.max()) + 1 if ids.size else 0)),
            "files": files,
        }
        if extra:
            manifest.update(extra)
        write_json_atomic(self.store.dir / MANIFEST, manifest)
        keep = [gen_name, *keep_generations]
        if self.base is not None:
            keep.append(self.base.manifest["gen_dir"])
        self.store.remove_old_generations(keep)
        return manifest
