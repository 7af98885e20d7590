"""The public facade: ``RAG.open(dir)`` / ``.ingest(paths)`` / ``.search(q)`` / ``.ask(q)`` / ``.stream(q)``.

``RAG`` wires one local index folder (:class:`rag.index.local.LocalIndex`) to an
:class:`rag.ingest.Indexer` (writes) and a :class:`rag.engine.QueryEngine` (reads); the work is
done there. Library code never prints or exits; progress goes to an optional callback and to
``logging.getLogger("rag")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .config import RagConfig
from .engine import QueryEngine
from .errors import IndexFormatError
from .ingest import IngestReport, ProgressFn
from .types import Answer, Hit, SearchResult

DEFAULT_INDEX = "indexes/default"
INDEX_SECTIONS = ("embedding", "chunking", "bm25", "dedup")
"""Config sections that define an index (restored from its manifest on open)."""

__all__ = ["DEFAULT_INDEX", "IngestReport", "ProgressFn", "RAG", "display_source"]


def display_source(source: str) -> str:
    """A source path relative to the working folder when it lies below it, else as stored."""
    try:
        rel = os.path.relpath(source)
    except ValueError:
        return source
    return source if rel.startswith("..") else rel


class RAG:
    """A retrieval-augmented generation pipeline over one index folder.

    Constructors are cheap; models load on first use or all at once with :meth:`warm_up`.
    Safe to share between threads for search/ask/stream: each request leases one committed
    index state, so commits by other processes never disturb it. One writer at a time per
    index (file lock).
    """

    def __init__(self, index_dir: str | Path = DEFAULT_INDEX, config: RagConfig | None = None, *,
                 embedder=None, generator=None, allow_pickle: bool = False):
        from .index import open_index

        cfg = config or RagConfig()
        # a folder, or a Qdrant location (qdrant+local:PATH, qdrant://HOST/COLLECTION): its side
        # files (embedding cache, records) then live in the backend's side_dir
        self.store = open_index(index_dir if isinstance(index_dir, str) else str(index_dir), cfg)
        self.location = str(index_dir)
        self.index_dir = Path(getattr(self.store, "side_dir", index_dir))
        self.store.keep_generations = cfg.index.keep_generations
        self._explicit_config = config is not None
        self.allow_pickle = allow_pickle
        self.engine = QueryEngine(self.store, cfg, embedder=embedder, generator=generator, allow_pickle=allow_pickle)

    @classmethod
    def open(cls, index_dir: str | Path = DEFAULT_INDEX, config: RagConfig | None = None, **kw) -> "RAG":
        """Open an existing index. Its own settings (embedder, chunking, BM25, dedup) are restored
        from its manifest; ``config`` may override retrieval and generation. Raises
        IndexNotFoundError when there is none, IndexFormatError when it is damaged or was built
        with another embedder than ``config`` asks for."""
        rag = cls(index_dir, config, **kw)
        rag._load_index_config()
        with rag.store.lease() as reader:  # validates now, so errors surface at open
            rag.engine._check_embedder(reader)
        return rag

    @classmethod
    def create(cls, index_dir: str | Path = DEFAULT_INDEX, config: RagConfig | None = None, **kw) -> "RAG":
        """A pipeline for a new or existing index folder (nothing is written until ``ingest``)."""
        rag = cls(index_dir, config, **kw)
        if rag.store.exists():
            rag._load_index_config()
        return rag

    def _load_index_config(self) -> None:
        stored = self.store.stored_settings()
        built_with = stored.get("embedding", {}).get("model")
        if self._explicit_config and built_with and self.config.embedding.model != built_with:
            raise IndexFormatError(str(self.index_dir / "manifest.json"),
                                   f"index was built with embedder {built_with!r} but {self.config.embedding.model!r} is configured")
        self.config = self.config.updated({k: v for k, v in stored.items() if k in INDEX_SECTIONS})

    # ---- settings and models ----------------------------------------------------------------
    @property
    def config(self) -> RagConfig:
        return self.engine.config

    @config.setter
    def config(self, value: RagConfig) -> None:
        self.engine.config = value
        self.store.ann_threshold = value.retrieval.ann_threshold
        self.store.keep_generations = value.index.keep_generations

    embedder = property(lambda self: self.engine.embedder)
    generator = property(lambda self: self.engine.generator)
    answerer = property(lambda self: self.engine.answerer)

    def warm_up(self) -> dict[str, float]:
        """Load embedder, query encoder and generator now; set process-wide settings once."""
        return self.engine.warm_up()

    def lease(self):
        """``with rag.lease() as reader:`` one committed state (:class:`rag.index.backend.IndexReader`)."""
        return self.store.lease()

    @property
    def generation(self) -> int:
        """The generation committed now (it may change right after; a request's own generation
        is ``SearchResult.generation`` / ``Answer.generation``)."""
        with self.store.lease() as reader:
            return reader.generation

    def close(self) -> None:
        self.engine.close()

    # ---- search / ask -----------------------------------------------------------------------
    def search(self, query: str, top_k: int | None = None, *, mode: str | None = None,
               filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None,
               aggregate: str = "chunk") -> list[Hit]:
        """Ranked hits, best first. ``filters``: ``{"source": "docs/*.md", "lang": "en"}``
        (:class:`rag.index.backend.Filter`); ``principals``: the caller's access groups (None:
        no access control, trusted local callers). ConfigError on a bad query or ``top_k``."""
        return list(self.search_result(query, top_k, mode=mode, filters=filters, principals=principals,
                                       aggregate=aggregate).hits)

    def search_result(self, query: str, top_k: int | None = None, **kw: Any) -> SearchResult:
        """Like :meth:`search`, with timings, the generation searched and the query vector."""
        return self.engine.search(query, top_k, **kw)

    def ask(self, question: str, top_k: int | None = None, *, history: Sequence[Mapping[str, str]] | None = None,
            filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None) -> Answer:
        """Answer ``question`` from the index only, citing chunks as [n].

        ``history``: earlier turns ``[{"role": ..., "content": ...}]`` (a follow-up is rewritten
        into a standalone query). ``Answer.abstained``: the index does not hold the answer;
        ``Answer.generation``: the committed state every cited chunk comes from."""
        return self.engine.ask(question, top_k, history=history, filters=filters, principals=principals)

    def stream(self, question: str, top_k: int | None = None, *, history: Sequence[Mapping[str, str]] | None = None,
               filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None) -> Iterator[str | Answer]:
        """Yield answer text pieces as they are generated, then the final :class:`Answer`."""
        return self.engine.stream(question, top_k, history=history, filters=filters, principals=principals)

    def info(self) -> dict[str, Any]:
        """Documents, chunks, sources by type, embedder, sizes on disk (bytes), last update."""
        with self.store.lease() as reader:
            return {"index": str(self.index_dir), **reader.info()}

    # ---- writes -----------------------------------------------------------------------------
    def _indexer(self):
        from .ingest import Indexer

        return Indexer(self.store, self.config, self.embedder, cache_path=self.index_dir / "embcache.sqlite",
                       index_dir=str(self.index_dir))

    def ingest(self, paths: Sequence[str | Path], *, sync: bool = False, acl: Sequence[str] = (),
               redact: Sequence[str] = (), loader_options=None, wait_s: float = 0.0,
               progress: ProgressFn | None = None, tags: Mapping[str, Any] | None = None) -> IngestReport:
        """Load, chunk, deduplicate, embed and index ``paths`` (files or folders, recursively).

        Incremental (unchanged sha256: skipped; embeddings cached by text). ``sync=True`` also
        removes indexed files under ``paths`` that no longer exist; ``acl``: access groups for
        this run's documents; ``redact``: PII kinds replaced before chunking; ``tags``:
        ``{"kind": "synthetic"}`` metadata on this run's documents (:mod:`rag.tags`). All or nothing;
        bad files are skipped and reported. Raises IndexLockedError past ``wait_s`` seconds.
        """
        return self._indexer().ingest(paths, sync=sync, acl=acl, redact=redact, loader_options=loader_options,
                                      wait_s=wait_s, progress=progress, tags=tags)

    def delete(self, sources: Sequence[str], *, wait_s: float = 0.0) -> IngestReport:
        """Remove the documents of the given sources (paths or globs; a folder removes all below
        it). Chunk ids of other documents never change; documents kept as aliases of the
        removed ones come back. Returns a report with chunks_removed and files_removed."""
        return self._indexer().delete(sources, wait_s=wait_s)

    def verify(self) -> dict[str, Any]:
        """Full check of every checksum and id; raises IndexFormatError naming the first bad file."""
        return self.store.verify()

    def repair(self, *, wait_s: float = 0.0) -> dict[str, Any]:
        """Rebuild FAISS and BM25 from the intact docstore and vectors into a new generation."""
        return self.store.repair(wait_s)
