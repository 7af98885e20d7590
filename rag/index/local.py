"""The ``local`` backend: one index folder of immutable generations behind the storage seam.

:class:`LocalIndex` implements :class:`rag.index.backend.Index` over :mod:`rag.index.store`
(manifest + generations), :mod:`rag.index.docstore` (SQLite), :mod:`rag.index.dense` (FAISS) and
:mod:`rag.index.sparse` (BM25).

Leases: each opened generation is reference-counted. ``lease()`` hands out the current one
(reopening when another process has committed) and a generation is closed only when it is no
longer current AND its last lease has ended, so a long-lived engine shared by many threads
never reads a closed SQLite handle. Generations leased in this process are also kept on disk by
writers in this process; writers in other processes keep the previous generation (Linux keeps
the open files of an already-removed generation readable for the readers holding them).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import IndexFormatError
from ..types import Chunk
from .backend import Counts, DocumentRecord, FileRecord, Filter, Ranked, source_key
from .manifest import MANIFEST
from .store import IndexStore, Snapshot

log = logging.getLogger("rag")

FILTER_CACHE_SIZE = 64
"""Compiled filters (allow-lists of chunk ids) cached per generation: a request runs dense and
sparse search with the same filter, and a server sees the same principals again and again."""

_LEASED: dict[str, dict[int, int]] = {}
_LEASED_LOCK = threading.Lock()
"""Process-wide: index folder -> {generation: number of live leases}; writers in this process
keep those generations on disk."""


def leased_generations(index_dir: Path) -> set[int]:
    """Generations of ``index_dir`` that a lease in this process holds now."""
    with _LEASED_LOCK:
        return {g for g, n in _LEASED.get(str(Path(index_dir).resolve()), {}).items() if n > 0}


def _count_lease(index_dir: Path, generation: int, delta: int) -> None:
    key = str(Path(index_dir).resolve())
    with _LEASED_LOCK:
        per = _LEASED.setdefault(key, {})
        per[generation] = per.get(generation, 0) + delta
        if per[generation] <= 0:
            del per[generation]


class LocalReader:
    """One committed generation, read-only (implements :class:`~rag.index.backend.IndexReader`).

    Thread-safe: FAISS and BM25 searches run in parallel; the SQLite docstore is read under a
    per-reader lock (queries are short).
    """

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self._db = threading.Lock()
        self._filters: OrderedDict[Filter, np.ndarray | None] = OrderedDict()
        self._codes_lock = threading.Lock()

    # ---- description ----------------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self.snapshot.generation

    @property
    def manifest(self) -> Mapping[str, Any]:
        return self.snapshot.manifest

    @property
    def counts(self) -> Counts:
        c = self.snapshot.manifest["counts"]
        return Counts(files=int(c.get("files", 0)), documents=int(c.get("documents", 0)), chunks=int(c["chunks"]),
                      duplicate_documents=int(c.get("duplicate_documents", 0)))

    @property
    def dim(self) -> int:
        return int(self.snapshot.manifest["embedder"]["dim"])

    @property
    def embedder(self) -> Mapping[str, Any]:
        return self.snapshot.manifest["embedder"]

    def info(self) -> dict[str, Any]:
        """Docstore statistics plus sizes on disk (bytes) for ``rag info``."""
        m = self.snapshot.manifest
        sizes: dict[str, int] = {}
        for rel, inf in m["files"].items():
            name = rel.split("/", 1)[1] if "/" in rel else rel
            top = "segments" if rel.startswith("segments/") else name.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + int(inf["size"])
        cache = self.snapshot.index_dir / "embcache.sqlite"
        if cache.exists():
            sizes["embcache.sqlite"] = cache.stat().st_size
        with self._db:
            st = self.snapshot.docstore.stats()
        return {"format_version": m["format_version"], "generation": m["generation"], "created": m.get("created"),
                "updated": m.get("updated"), "embedder": m["embedder"], "dense_index": m.get("dense", {}).get("kind"),
                **st, "sizes_bytes": sizes, "total_bytes": sum(sizes.values()),
                "segments": len(m.get("segments") or []), "tombstones": int(m.get("tombstones", 0))}

    # ---- filters ----------------------------------------------------------------------------
    def allowed(self, flt: Filter) -> np.ndarray | None:
        """Sorted (m,) int64 chunk ids passing ``flt`` (None: no restriction); cached."""
        if flt.unrestricted:
            return None
        with self._db:
            if flt in self._filters:
                self._filters.move_to_end(flt)
                return self._filters[flt]
            ids = self.snapshot.docstore.allowed_ids(flt)
            self._filters[flt] = ids
            while len(self._filters) > FILTER_CACHE_SIZE:
                self._filters.popitem(last=False)
            return ids

    # ---- search ---------------------------------------------------------------------------
    def dense_search(self, vectors: np.ndarray, k: int, filter: Filter) -> Ranked:
        n = self.counts.chunks
        allowed = self.allowed(filter)
        if n == 0 or k < 1 or (allowed is not None and allowed.size == 0):
            return Ranked.empty()
        q = np.asarray(vectors, dtype=np.float32).reshape(1, -1)
        scores, ids = self.snapshot.dense.search(q, min(int(k), n), allowed_ids=allowed)
        keep = ids[0] >= 0
        return Ranked(ids[0][keep], scores[0][keep])

    def sparse_search(self, query: str, k: int, filter: Filter) -> Ranked:
        n = self.counts.chunks
        allowed = self.allowed(filter)
        if n == 0 or k < 1 or (allowed is not None and allowed.size == 0):
            return Ranked.empty()
        scores, ids = self.snapshot.sparse.search(query, min(int(k), n), allowed_ids=allowed)
        return Ranked(ids, scores)

    def chunk_ids(self) -> np.ndarray:
        """(n,) int64 ascending: every chunk id of this state."""
        with self._db:
            return self.snapshot.docstore.chunk_ids()

    def chunks(self, ids: Sequence[int]) -> list[Chunk]:
        with self._db:
            found = self.snapshot.docstore.get_chunks(ids)
        return [found[int(i)] for i in ids if int(i) in found]

    def document_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        with self._codes_lock:
            if self.snapshot._doc_codes is None:
                with self._db:
                    self.snapshot._doc_codes = self.snapshot.docstore.chunk_documents()
        return self.snapshot.document_codes(np.asarray(ids, dtype=np.int64))

    # ---- bookkeeping ------------------------------------------------------------------------
    def files(self) -> dict[str, FileRecord]:
        with self._db:
            return self.snapshot.docstore.files()

    def documents(self, sources: Sequence[str] | None = None) -> list[DocumentRecord]:
        with self._db:
            return self.snapshot.docstore.documents(sources=sources)

    def documents_by_key(self, keys: Sequence[str]) -> list[DocumentRecord]:
        with self._db:
            return self.snapshot.docstore.documents(keys=keys)

    def linked_to(self, kept_keys: Sequence[str]) -> list[str]:
        """Keys of documents holding an alias link to any of ``kept_keys``."""
        with self._db:
            return self.snapshot.docstore.linked_to(kept_keys)

    def chunk_hashes(self) -> dict[str, int]:
        with self._db:
            return self.snapshot.docstore.chunk_hashes()

    def vectors(self) -> np.ndarray:
        """(n, dim) float32 stored embeddings, rows in ascending chunk id order (memory-mapped)."""
        return self.snapshot.vectors(mmap=True)


class _State:
    __slots__ = ("reader", "leases", "current")

    def __init__(self, reader: LocalReader):
        self.reader = reader
        self.leases = 0
        self.current = True


class LocalIndex:
    """An index folder (implements :class:`~rag.index.backend.Index`). Cheap to construct.

    ``ann_threshold``: from this many chunks on, a commit builds an HNSW index instead of a flat
    one (:mod:`rag.index.dense`). ``bm25``: the :class:`rag.config.BM25Config` a commit builds
    the sparse index with.
    """

    def __init__(self, index_dir: str | Path, *, ann_threshold: int = 50_000, bm25: Any = None):
        self.dir = Path(index_dir)
        self.store = IndexStore(self.dir)
        self.ann_threshold = int(ann_threshold)
        self.bm25 = bm25
        self.keep_generations = 5  # committed generations kept on disk ([index] keep_generations; rag.index.versions)
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._current: _State | None = None
        self._key: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"LocalIndex({str(self.dir)!r})"

    def exists(self) -> bool:
        return self.store.exists()

    def _manifest_key(self) -> tuple[int, int, int] | None:
        try:
            st = (self.dir / MANIFEST).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino, st.st_size)

    def _acquire(self) -> _State:
        key = self._manifest_key()
        with self._lock:
            cur = self._current
            if cur is not None and key == self._key:
                cur.leases += 1
                return cur
        with self._open_lock:  # one opener at a time; leases of the current state go on meanwhile
            with self._lock:
                cur = self._current
                if cur is not None and key == self._key:
                    cur.leases += 1
                    return cur
            snap = self.store.open()
            new = _State(LocalReader(snap))
            with self._lock:
                old, self._current, self._key = self._current, new, key
                new.leases += 1
                if old is not None:
                    old.current = False
                    if old.leases == 0:
                        old.reader.snapshot.close()
            return new

    def _release(self, state: _State) -> None:
        with self._lock:
            state.leases -= 1
            if state.leases == 0 and not state.current:
                state.reader.snapshot.close()

    @contextlib.contextmanager
    def lease(self) -> Iterator[LocalReader]:
        """The current generation, held until the block ends (see the module docstring)."""
        state = self._acquire()
        gen = state.reader.generation
        _count_lease(self.dir, gen, +1)
        try:
            yield state.reader
        finally:
            _count_lease(self.dir, gen, -1)
            self._release(state)

    @contextlib.contextmanager
    def writer(self, wait_s: float = 0.0, *, embedder: Mapping[str, Any] | None = None,
               settings: Mapping[str, Any] | None = None) -> Iterator["LocalWriter"]:
        """Hold the folder's writer lock and build the next generation (see the seam's contract).
        A new folder that is never committed is removed again, lock file included."""
        created = not self.dir.exists()
        w: LocalWriter | None = None
        try:
            with self.store.lock(wait_s):
                # the base's FAISS/BM25 files are not needed to commit segments: load them lazily
                base = self.store.open(load_all=False) if self.store.exists() else None
                try:
                    w = LocalWriter(self, base, embedder=embedder, settings=settings)
                    try:
                        yield w
                    finally:
                        if not w.committed:
                            w.abort()
                finally:
                    if base is not None:
                        base.close()
        finally:
            if created and not self.store.exists():
                _remove_empty_index_dir(self.dir)

    def open(self, full_check: bool = False, load_all: bool = True) -> Snapshot:
        """An unleased Snapshot of the current generation for one-off tools (the caller closes
        it); see :meth:`IndexStore.open`. Engines use :meth:`lease`."""
        return self.store.open(full_check=full_check, load_all=load_all)

    def stored_settings(self) -> dict[str, Any]:
        """The index-defining config sections stored with the current state (``embedding``,
        ``chunking``, ``bm25``, ``dedup``). Raises IndexNotFoundError / IndexFormatError."""
        from .manifest import read_manifest

        if not self.exists():
            self.store.open()  # raises the one-line IndexNotFoundError / IndexFormatError
        return dict(read_manifest(self.dir).get("config") or {})

    def verify(self) -> dict[str, Any]:
        """Full check: every checksum, counts, and FAISS/BM25 ids against the docstore.
        Raises IndexFormatError naming the first bad file; returns generation and counts."""
        snap = self.store.open(full_check=True)
        try:
            return {"index": str(self.dir), "generation": snap.generation, **snap.manifest["counts"]}
        finally:
            snap.close()

    def repair(self, wait_s: float = 0.0) -> dict[str, Any]:
        """Rebuild the derived files (FAISS from stored vectors, BM25 from the docstore) into a
        new generation when the docstore and vectors are intact. Raises IndexFormatError when
        they are not (re-ingest then)."""
        from ..config import BM25Config
        from ..hashing import sha256_file
        from .docstore import DocStore
        from .manifest import read_manifest
        from .store import DOCSTORE, VECTORS

        from . import segments

        with self.store.lock(wait_s):
            manifest = read_manifest(self.dir)
            gen_dir = self.dir / manifest["gen_dir"]
            for name in (DOCSTORE,) if "segments" in manifest else (DOCSTORE, VECTORS):
                p = gen_dir / name
                info = manifest["files"].get(f"{manifest['gen_dir']}/{name}", {})
                if not p.exists() or p.stat().st_size != info.get("size") or sha256_file(p) != info.get("sha256"):
                    raise IndexFormatError(str(p), "cannot repair: this primary file is damaged; re-ingest the documents")
            ds = DocStore.open_readonly(gen_dir / DOCSTORE)
            snap = Snapshot(self.dir, manifest, ds)
            try:
                if "segments" in manifest:  # every segment's stored vectors, rebuilt into one segment
                    vectors = segments.stored_vectors(self.dir, manifest, ds.chunk_ids())
                else:
                    vectors = np.array(snap.vectors(mmap=True), dtype=np.float32)
                tx = self.store.begin(snap)
                names = set(BM25Config.__dataclass_fields__)
                bm25 = self.bm25 or BM25Config(**{k: v for k, v in (manifest.get("config", {}).get("bm25") or {}).items()
                                                  if k in names})
                from .versions import CommitHook

                hook = CommitHook(self.dir, self.keep_generations, LocalReader(snap), tx.docstore)
                try:
                    dim = int(manifest["embedder"]["dim"])
                    new = segments.commit_generation(
                        tx, np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32), dim=dim,
                        embedder={k: v for k, v in manifest["embedder"].items() if k in ("name", "model_id", "max_seq_length")},
                        config=manifest.get("config", {}), bm25_config=bm25, ann_threshold=self.ann_threshold,
                        rebuild=vectors, keep_generations=[f"gen-{g:06d}" for g in leased_generations(self.dir)] + hook.keep)
                    hook.done(new)
                except BaseException:
                    tx.abort()
                    raise
            finally:
                ds.close()
        return {"index": str(self.dir), "generation": new["generation"], **new["counts"]}

    def close(self) -> None:
        """Close the current generation when no lease holds it (later leases reopen)."""
        with self._lock:
            cur, self._current, self._key = self._current, None, None
            if cur is not None:
                cur.current = False
                if cur.leases == 0:
                    cur.reader.snapshot.close()


def _remove_empty_index_dir(path: Path) -> None:
    """Remove what a never-committed write left in a folder it created (lock files only)."""
    with contextlib.suppress(OSError):
        for name in (".lock", ".writer.json"):
            with contextlib.suppress(FileNotFoundError):
                (path / name).unlink()
        for p in path.iterdir():
            if p.name == "embcache.sqlite" or p.name.startswith("embcache.sqlite-"):
                p.unlink()
        path.rmdir()


class LocalWriter:
    """Builds generation N+1 (implements :class:`~rag.index.backend.IndexWriter`)."""

    def __init__(self, index: LocalIndex, base: Snapshot | None, *, embedder: Mapping[str, Any] | None,
                 settings: Mapping[str, Any] | None):
        self.index = index
        self._base_snapshot = base
        self.base = LocalReader(base) if base is not None else None
        if base is None and (embedder is None or "dim" not in embedder):
            raise ValueError("a new index needs embedder={'name', 'model_id', 'dim', ...}")
        self.embedder = dict(embedder) if embedder is not None else dict(base.manifest["embedder"])  # type: ignore[union-attr]
        self.settings = dict(settings) if settings is not None else dict(base.manifest.get("config", {}))  # type: ignore[union-attr]
        self.tx = index.store.begin(base)
        self.tx.docstore.begin()
        if base is not None and int(base.manifest.get("format_version", 1)) < 2:
            n = self.tx.docstore.rekey_sources(source_key)
            if n:
                log.info("%s: %d file key(s) migrated to resolved absolute paths", index.dir, n)
        self._ids: list[np.ndarray] = []
        self._vecs: list[np.ndarray] = []
        self.committed = False
        self._done = False

    @property
    def dim(self) -> int:
        return int(self.embedder["dim"])

    @property
    def reader(self):
        """Reads of the state being built (documents written so far in this transaction)."""
        return self.tx.docstore

    def upsert(self, document: DocumentRecord, chunks: Sequence[Chunk], vectors: np.ndarray) -> np.ndarray:
        from ..dedup import text_hash

        vecs = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim) if len(chunks) else np.zeros((0, self.dim), np.float32)
        if vecs.shape[0] != len(chunks):
            raise ValueError(f"{len(chunks)} chunks but {vecs.shape[0]} vectors")
        ds = self.tx.docstore
        self._drop_new(ds.delete_documents([document.key]))
        ids = self.tx.new_chunk_ids(len(chunks))
        stored = [Chunk(id=int(i), doc_id=document.key, ordinal=c.ordinal, start=c.start, end=c.end, text=c.text,
                        source=document.source, title=c.title, page=c.page, heading_path=c.heading_path,
                        metadata=dict(c.metadata)) for i, c in zip(ids, chunks)]
        ds.put_document(DocumentRecord(**{**document.__dict__, "n_chunks": len(stored)}))
        ds.put_chunks(stored, [text_hash(c.text) for c in stored])
        if len(stored):
            self._ids.append(ids)
            self._vecs.append(vecs)
        return ids

    def _drop_new(self, removed: Sequence[int]) -> None:
        """Forget vectors of chunks added earlier in this transaction and removed again."""
        if not removed or not self._ids:
            return
        gone = np.asarray(sorted(removed), dtype=np.int64)
        for j, ids in enumerate(self._ids):
            keep = ~np.isin(ids, gone)
            if not keep.all():
                self._ids[j], self._vecs[j] = ids[keep], self._vecs[j][keep]

    def put_file(self, file: FileRecord) -> None:
        self.tx.docstore.put_file(file)

    def delete(self, document_keys: Sequence[str]) -> int:
        removed = self.tx.docstore.delete_documents(list(document_keys))
        self._drop_new(removed)
        return len(removed)

    def delete_files(self, sources: Sequence[str]) -> int:
        n = 0
        for s in sources:
            removed = self.tx.docstore.delete_file(s)
            self._drop_new(removed)
            n += len(removed)
        return n

    def commit(self, *, rebuild_vectors: np.ndarray | None = None) -> dict[str, Any]:
        """Write vectors, FAISS, BM25 and the manifest (see :meth:`Transaction.commit`).
        ``rebuild_vectors``: ``rag repair`` passes the stored vectors to rebuild from."""
        from ..config import BM25Config

        if self._done:
            raise RuntimeError("this writer is finished")
        self.tx.docstore.commit()
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64)
        vecs = np.concatenate(self._vecs) if self._vecs else np.zeros((0, self.dim), np.float32)
        self._ids, self._vecs = [], []  # the concatenated copies are all that is needed now
        bm25 = self.index.bm25
        if bm25 is None:
            names = set(BM25Config.__dataclass_fields__)
            bm25 = BM25Config(**{k: v for k, v in (self.settings.get("bm25") or {}).items() if k in names})
        emb = {k: v for k, v in self.embedder.items() if k in ("name", "model_id", "max_seq_length")}
        from .versions import CommitHook  # keeps the last keep_generations, records what changed

        hook = CommitHook(self.index.dir, self.index.keep_generations, self.base, self.tx.docstore)
        keep = [f"gen-{g:06d}" for g in leased_generations(self.index.dir)] + hook.keep
        from .segments import commit_generation  # a new segment + tombstones; merges when due

        manifest = commit_generation(self.tx, ids, vecs, dim=self.dim, embedder=emb, config=self.settings, bm25_config=bm25,
                                     ann_threshold=self.index.ann_threshold, rebuild=rebuild_vectors,
                                     keep_generations=keep)
        hook.done(manifest)
        self.committed = self._done = True
        return manifest

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self.tx.abort()


__all__ = ["LocalIndex", "LocalReader", "LocalWriter", "leased_generations"]
