"""The planning stage of an ingest: redact, deduplicate and chunk documents, in order, a group at
a time, into :class:`Planned` documents (record, kept chunks, the texts to embed, alias links).

Runs in the ingest's producer thread (:mod:`rag.ingest_stream`), so it only reads the base state
(thread-safe readers) and its own fields; the writer is touched by the calling thread alone.
Decisions depend only on the order of the documents, never on how they are grouped: the
document-level pass (exact and near duplicates of whole documents) and the chunk-level pass
(duplicate chunks) keep separate state, so a group is first checked document by document,
then the kept documents are chunked in one batch (the tokenizer is faster on batches), then
their chunks are checked in order. Report entries are appended in document order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from .index.backend import DocumentRecord, Duplicate, FileRecord
from .types import Chunk, Document

QueueItem = tuple[str, Document, "FileRecord | None", "DocumentRecord | None"]
"""(source, document, file record of a new file or None, stored record of a revived document or None)."""


def embedded_text(title_cut: str, chunk_text: str) -> str:
    """The text embedded for a chunk: its document's title (already cut to the budget by
    :meth:`rag.ingest.Indexer.fit_title`), a newline, the chunk; the chunk alone without a title."""
    return f"{title_cut}\n{chunk_text}" if title_cut else chunk_text


@dataclass
class Planned:
    """One planned document: ``record`` to store, its kept ``chunks`` and the ``texts`` to embed
    for them (one per chunk, ``title + "\\n" + chunk``), and ``links``: alias links of dropped
    chunks with the kept chunk's (document key, ordinal) when it was planned in this run."""

    record: DocumentRecord
    chunks: list[Chunk]
    texts: list[str]
    links: list[tuple[Duplicate, tuple[str, int] | None]]


class Planner:
    """Plans the documents of one ingest (see the module docstring). ``indexer``: the
    :class:`rag.ingest.Indexer` (config, chunker, title fitting); ``exact``: ``{(text hash,
    groups): key}`` of the base's kept documents; ``base_chunks``: ``{chunk text hash: chunk
    id}`` of the base; ``excluded_keys``: base documents being replaced or revived (their
    chunks are no dedup targets); ``report``: the :class:`rag.ingest.IngestReport` to count into."""

    def __init__(self, indexer, acl: Sequence[str], redact: Sequence[str], exact: dict, base, base_chunks: dict,
                 excluded_keys: set[str], report):
        from .dedup import Deduplicator

        self.indexer, self.acl, self.redact = indexer, tuple(acl), tuple(redact)
        self.exact, self.base, self.base_chunks, self.excluded = exact, base, base_chunks, excluded_keys
        self.report = report
        dc = indexer.config.dedup
        self.dedup_enabled = dc.enabled
        self._new_dedup = lambda: Deduplicator(near_threshold=dc.near_threshold, shingle_words=dc.shingle_words,
                                               num_perm=dc.num_perm, near=dc.enabled)
        self.doc_dedup: dict[tuple[str, ...], Any] = {}
        self.chunk_dedup: dict[tuple[str, ...], Any] = {}
        self.batch_chunks: dict[tuple[str, tuple[str, ...]], tuple[str, int]] = {}
        self.base_chunk_docs: dict[int, tuple[str, tuple[str, ...]] | None] = {}
        self.titles: dict[str, tuple[str, bool]] = {}

    def _dedup_for(self, table: dict, groups: tuple[str, ...]):
        if groups not in table:
            table[groups] = self._new_dedup()
        return table[groups]

    def plan(self, items: Sequence[QueueItem]) -> list[Planned]:
        """Plan ``items`` (in order, after every item given before); one Planned per item."""
        from .dedup import text_hash
        from .ingest import acl_of, chunk_metadata, redact_document

        report = self.report
        firsts: list[tuple[Document, DocumentRecord, tuple[str, ...], dict, Duplicate | None]] = []
        for source, doc, frec, old in items:  # pass 1: whole documents
            if old is None:
                doc = redact_document(doc, self.redact, report.redactions)
                groups = acl_of(doc, self.acl)
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
            if self.dedup_enabled:
                kept = self.exact.get((th, groups))
                if kept is not None and kept != doc.id:
                    dup = Duplicate(key=doc.id, kept_key=kept, kind="exact", similarity=1.0)
                else:
                    d = self._dedup_for(self.doc_dedup, groups).check_and_add(doc.id, doc.text)
                    if d is not None:
                        dup = Duplicate(key=doc.id, kept_key=d.kept_key, kind=d.kind, similarity=round(float(d.similarity), 4))
            if dup is None:
                self.exact.setdefault((th, groups), doc.id)
            firsts.append((doc, rec, groups, meta, dup))
        kept_docs = [doc for doc, _, _, _, dup in firsts if dup is None]
        chunked = iter(self.indexer.chunker.chunk_documents(kept_docs)) if kept_docs else iter(())
        planned: list[Planned] = []
        for (doc, rec, groups, meta, dup), (source, *_rest) in zip(firsts, items):  # pass 2: chunks
            if dup is not None:
                report.duplicates.append({**dup.to_dict(), "level": "document"})
                planned.append(Planned(replace(rec, alias_of=dup.kept_key, duplicates=(dup,), body=doc), [], [], []))
                continue
            cut, was_cut = self.indexer.fit_title(doc.title, self.titles)
            kept_chunks: list[Chunk] = []
            texts: list[str] = []
            links: list[tuple[Duplicate, tuple[str, int] | None]] = []
            cmeta = chunk_metadata(meta)
            for ch in next(chunked):
                h = text_hash(ch.text)
                if self.dedup_enabled:
                    link = self._chunk_link(f"{doc.id}#{ch.ordinal}", ch.text, h, groups)
                    if link is not None:
                        links.append(link)
                        report.duplicates.append({**link[0].to_dict(), "level": "chunk"})
                        continue
                    self.batch_chunks.setdefault((h, groups), (doc.id, ch.ordinal))
                kept_chunks.append(replace(ch, metadata=cmeta, source=source))
                texts.append(embedded_text(cut, ch.text))
                report.truncated += int(was_cut)
            planned.append(Planned(replace(rec, body=doc if links else None), kept_chunks, texts, links))
            report.documents += 1
        return planned

    def _chunk_link(self, ckey: str, text: str, h: str, groups: tuple[str, ...]):
        """An alias link for a chunk that duplicates a kept one (same groups), else None (the
        chunk is then registered as kept)."""
        cid = self.base_chunks.get(h)
        if cid is not None:
            if cid not in self.base_chunk_docs:
                found = self.base.chunks([cid])
                info = None
                if found and found[0].doc_id not in self.excluded:
                    recs = [d for d in self.base.documents([found[0].source]) if d.key == found[0].doc_id]
                    info = (found[0].doc_id, recs[0].acl) if recs else None
                self.base_chunk_docs[cid] = info
            info = self.base_chunk_docs[cid]
            if info is not None and info[1] == groups:
                return Duplicate(key=ckey, kept_key=info[0], kind="exact", similarity=1.0, level="chunk", kept_chunk=cid), None
        kept = self.batch_chunks.get((h, groups))
        if kept is not None:
            return Duplicate(key=ckey, kept_key=kept[0], kind="exact", similarity=1.0, level="chunk"), kept
        d = self._dedup_for(self.chunk_dedup, groups).check_and_add(ckey, text)
        if d is not None:
            doc_key, _, ordinal = d.kept_key.rpartition("#")
            return (Duplicate(key=ckey, kept_key=doc_key, kind=d.kind, similarity=round(float(d.similarity), 4), level="chunk"),
                    (doc_key, int(ordinal)))
        return None
