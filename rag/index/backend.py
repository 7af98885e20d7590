"""The storage seam: what the Indexer and the QueryEngine may ask of an index backend.

Two backends implement it: ``local`` (one folder of immutable generations,
:mod:`rag.index.local`) and ``qdrant`` (a collection). The Indexer (:mod:`rag.ingest`) and the
QueryEngine (:mod:`rag.engine`) import only this module; they never see SQLite, FAISS or a
Qdrant client.

Contract in one paragraph: a *reader* is one committed state (a generation) and never changes
while held; it is obtained with ``with index.lease() as reader:`` and stays valid, however many
commits happen meanwhile, until that ``with`` block ends. A *writer* holds the single-writer
lock, builds the next state from the current one and makes it visible all at once with
``commit()`` (or throws it away with ``abort()``). Every read takes a :class:`Filter`; access
control is part of that filter, so there is no unfiltered read path. Results come back as
:class:`Ranked`, best first, finite scores only.

Names here are stable: backends written against them keep working. New members are added as
optional (with a default) rather than renamed.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import unicodedata
from dataclasses import dataclass, field
from typing import (Any, ContextManager, Iterable, Mapping, Protocol, Sequence, runtime_checkable)

import numpy as np

from ..errors import ConfigError
from ..types import Chunk, Document

GLOB_CHARS = "*?["

SPECIAL_FILTER_KEYS = ("source", "title", "page", "doc_id")
"""Filter keys that name a column rather than a metadata field: ``source`` (the file key,
matched as globs), ``title`` and ``doc_id`` (the document key) of the document, ``page`` of the
chunk. Every other key is looked up in the chunk's metadata, then the document's."""


# ---- results --------------------------------------------------------------------------------
class Ranked:
    """One ranked list from a retriever: ``ids`` (m,) int64 chunk ids, ``scores`` (m,) float32,
    best first (higher is better).

    Construction drops every entry whose score is NaN or +-inf (a broken score must never enter
    fusion, where one NaN flattens a whole list), so ``len(r)`` may be smaller than the input.
    Raises ValueError when ids and scores differ in length. Immutable (the arrays are
    read-only). Order is kept as given; backends return their lists sorted best first.
    """

    __slots__ = ("ids", "scores")

    ids: np.ndarray
    scores: np.ndarray

    def __init__(self, ids: Any = (), scores: Any = ()):
        ids_a = np.asarray(ids if ids is not None else (), dtype=np.int64).reshape(-1)
        sc = np.asarray(scores if scores is not None else (), dtype=np.float64).reshape(-1)
        if ids_a.shape[0] != sc.shape[0]:
            raise ValueError(f"Ranked: {ids_a.shape[0]} ids but {sc.shape[0]} scores")
        keep = np.isfinite(sc)
        # float32 overflow of a finite float64 would make inf again: drop those too
        sc32 = sc.astype(np.float32)
        keep &= np.isfinite(sc32)
        ids_a = np.ascontiguousarray(ids_a[keep])
        sc32 = np.ascontiguousarray(sc32[keep])
        ids_a.setflags(write=False)
        sc32.setflags(write=False)
        object.__setattr__(self, "ids", ids_a)
        object.__setattr__(self, "scores", sc32)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Ranked is immutable")

    @classmethod
    def empty(cls) -> "Ranked":
        return cls((), ())

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self):
        """``(id, score)`` pairs as Python int and float, best first."""
        return iter(zip(self.ids.tolist(), self.scores.tolist()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ranked):
            return NotImplemented
        return np.array_equal(self.ids, other.ids) and np.array_equal(self.scores, other.scores)

    def __hash__(self) -> int:  # value semantics, like the frozen dataclasses
        return hash((self.ids.tobytes(), self.scores.tobytes()))

    def __repr__(self) -> str:
        return f"Ranked(n={len(self)}, top={list(self)[:3]})"

    def top(self, k: int) -> "Ranked":
        """The first ``k`` entries."""
        return Ranked(self.ids[:k], self.scores[:k])


# ---- filters ----------------------------------------------------------------------------------
def source_key(path: str | os.PathLike) -> str:
    """A file's document key: its resolved absolute path (symlinks resolved), Unicode NFC.

    The same file gives the same key from whatever folder ``rag`` runs (DESIGN.md, "Document
    identity"). URLs (``scheme://...``) are returned NFC-normalised but otherwise unchanged.
    """
    s = os.fspath(path)
    if "://" in s:
        return unicodedata.normalize("NFC", s)
    return unicodedata.normalize("NFC", os.path.realpath(os.path.abspath(s)))


def source_glob(pattern: str) -> str:
    """A user's source pattern made absolute, the way :meth:`Filter.from_mapping` stores it.

    ``/abs/path/*.md`` and URLs are kept; a pattern with a folder part (``docs/*.md``) is taken
    relative to the working folder (symlinks in its fixed folder part resolved, so it meets
    :func:`source_key`); a bare name or glob (``*.md``, ``notes.md``) matches in any folder.
    """
    p = unicodedata.normalize("NFC", pattern)
    if p.startswith("/") or "://" in p:
        return p
    if "/" in p:
        head, _, tail = p.rpartition("/")
        if not any(ch in head for ch in GLOB_CHARS):
            return unicodedata.normalize("NFC", os.path.join(os.path.realpath(os.path.abspath(head)), tail))
        return unicodedata.normalize("NFC", os.path.abspath(p))
    return p if p.startswith("*") else "*/" + p


def source_matches(source: str, pattern: str) -> bool:
    """True when ``source`` matches the (absolute, see :func:`source_glob`) ``pattern`` with
    fnmatch rules, or lies below it as a folder (``/docs`` matches ``/docs/a.txt``)."""
    if fnmatch.fnmatchcase(source, pattern):
        return True
    p = pattern.rstrip("/")
    return source == p or source.startswith(p + "/")


def value_matches(stored: Any, wanted: Any) -> bool:
    """One ``key == value`` test of a :class:`Filter`: a string holding ``* ? [`` is a glob on
    ``str(stored)``; ``True``/``False`` equal 1/0; otherwise plain equality. A list stored value
    (e.g. tags) matches when any element does."""
    if isinstance(stored, (list, tuple)):
        return any(value_matches(s, wanted) for s in stored)
    if isinstance(wanted, str) and any(ch in wanted for ch in GLOB_CHARS):
        return stored is not None and fnmatch.fnmatchcase(str(stored), wanted)
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return stored == wanted and (stored is not None)
    return stored == wanted


def _hashable_value(key: str, v: Any) -> str | int | float | bool | None:
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ConfigError(f"filter {key!r}: value must be finite, not {v!r}")
        return v
    raise ConfigError(f"filter {key!r}: value must be a string, number, boolean or a list of those, not {type(v).__name__}")


@dataclass(frozen=True)
class Filter:
    """Which chunks a read may see. A typed, hashable value every backend compiles natively
    (an allow-list of chunk ids in the local store, a payload filter in Qdrant).

    - ``sources``: absolute glob patterns on the document's file key (:func:`source_glob` form);
      a chunk passes when its source matches ANY pattern (or lies below one as a folder).
      Empty: every source.
    - ``fields``: ``((key, (value, ...)), ...)`` sorted by key; a chunk passes when, for EVERY
      key, its value equals ANY of the values (:func:`value_matches`). Keys are metadata names
      or one of :data:`SPECIAL_FILTER_KEYS` other than ``source``.
    - ``exclude``: ``((key, (value, ...)), ...)`` like ``fields``; a chunk FAILS when its
      document's metadata value for a key equals any listed value (``[retrieval]
      exclude_tags``, :mod:`rag.tags`). Empty: nothing excluded.
    - ``principals``: the caller's access groups. A document with access groups is visible
      only to callers sharing one; documents without groups are public. ``()`` sees public
      documents only. ``None`` means NO access control and is for trusted local callers only
      (the CLI on the user's own index, the library); the HTTP server always passes a tuple.

    A document kept as an alias (duplicate) of another is seen by filters too: a chunk of the
    kept document passes when the kept document OR one of its aliases passes (each with its
    own source, metadata and groups).
    """

    sources: tuple[str, ...] = ()
    fields: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    principals: tuple[str, ...] | None = None
    exclude: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.sources, str) or not all(isinstance(s, str) for s in self.sources):
            raise ConfigError("filter sources must be a sequence of strings")
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "fields", tuple(sorted((str(k), tuple(v)) for k, v in self.fields)))
        object.__setattr__(self, "exclude", tuple(sorted((str(k), tuple(v)) for k, v in self.exclude)))
        for k, _ in self.fields:
            if k == "source":
                raise ConfigError("filter key 'source' goes in Filter.sources")
        if self.principals is not None:
            if isinstance(self.principals, str):
                raise ConfigError("principals must be a sequence of group names, not one string")
            object.__setattr__(self, "principals", tuple(sorted({str(p) for p in self.principals})))

    @classmethod
    def from_mapping(cls, filters: Mapping[str, Any] | None = None,
                     principals: Sequence[str] | None = None) -> "Filter":
        """Build from today's ``filters=`` dict: ``{"source": "docs/*.md", "lang": ["en", "de"],
        "page": 3}``. A list value means any of; ``source`` patterns are made absolute against
        the working folder NOW (:func:`source_glob`), so the value means the same wherever it
        is compiled. Raises ConfigError on a value that is not a string, number or boolean."""
        sources: list[str] = []
        fields: list[tuple[str, tuple[Any, ...]]] = []
        if filters is not None and not isinstance(filters, Mapping):
            raise ConfigError(f"filters must be a mapping of key to value, not {type(filters).__name__}")
        for key, value in (filters or {}).items():
            key = str(key)
            values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            if not values:
                raise ConfigError(f"filter {key!r}: empty list of values")
            if key == "source":
                sources += [source_glob(str(v)) for v in values]
            else:
                fields.append((key, tuple(_hashable_value(key, v) for v in values)))
        return cls(sources=tuple(sources), fields=tuple(fields),
                   principals=None if principals is None else tuple(principals))

    @property
    def unrestricted(self) -> bool:
        """True when this filter lets every chunk through (no patterns, fields or access control)."""
        return not self.sources and not self.fields and self.principals is None and not self.exclude

    def values_for(self, key: str) -> tuple[Any, ...] | None:
        """The wanted values of ``key``, or None when the filter does not test it."""
        for k, v in self.fields:
            if k == key:
                return v
        return None

    def allows_groups(self, groups: Iterable[str]) -> bool:
        """Access check for one document's groups (empty: public)."""
        if self.principals is None:
            return True
        g = set(groups)
        return not g or bool(g & set(self.principals))

    def to_dict(self) -> dict[str, Any]:
        return {"sources": list(self.sources), "fields": {k: list(v) for k, v in self.fields},
                "principals": None if self.principals is None else list(self.principals),
                "exclude": {k: list(v) for k, v in self.exclude}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Filter":
        return cls(sources=tuple(d.get("sources") or ()),
                   fields=tuple((k, tuple(v)) for k, v in (d.get("fields") or {}).items()),
                   principals=None if d.get("principals") is None else tuple(d["principals"]),
                   exclude=tuple((k, tuple(v)) for k, v in (d.get("exclude") or {}).items()))


TRUSTED = Filter()
"""No restriction and no access control: for trusted local callers only."""


# ---- bookkeeping records ----------------------------------------------------------------------
@dataclass(frozen=True)
class FileRecord:
    """One indexed file: its key (:func:`source_key`), sha256 of its bytes, mtime (UNIX s),
    size (bytes) and how many documents (kept and aliases) it gave."""

    source: str
    content_hash: str
    mtime: float = 0.0
    size_bytes: int = 0
    n_documents: int = 0


@dataclass(frozen=True)
class Duplicate:
    """An alias link: ``key`` (a document key, or ``"<document key>#<ordinal>"`` for one chunk)
    duplicates ``kept_key`` (the kept document's key). ``kind``: "exact" or "near";
    ``similarity``: estimated Jaccard in [0, 1]; ``level``: "document" or "chunk";
    ``kept_chunk``: the kept chunk's id for chunk-level links."""

    key: str
    kept_key: str
    kind: str
    similarity: float
    level: str = "document"
    kept_chunk: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kept_key": self.kept_key, "kind": self.kind, "similarity": self.similarity,
                "level": self.level, "kept_chunk": self.kept_chunk}


@dataclass(frozen=True)
class DocumentRecord:
    """One document as a backend stores it (besides its chunks).

    ``key``: the document's identity (file key, or ``file key#record id``). ``source``: the
    file key. ``content_hash``: sha256 of the file's bytes; ``text_hash``: the normalised text
    hash used for exact dedup (:func:`rag.dedup.text_hash`). ``acl``: access groups (empty:
    public). ``alias_of``: the kept document's key when this document is a duplicate (it then
    has no chunks of its own). ``duplicates``: the alias links this document holds (its own
    document-level link, or chunk-level links for chunks it dropped). ``body``: the full
    (redacted) Document, stored when this document is an alias or dropped chunks, so its text
    can come back when the kept copy changes or goes; None otherwise.
    """

    key: str
    source: str
    content_hash: str
    text_hash: str
    title: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    acl: tuple[str, ...] = ()
    alias_of: str | None = None
    n_chunks: int = 0
    mtime: float = 0.0
    duplicates: tuple[Duplicate, ...] = ()
    body: Document | None = None


@dataclass(frozen=True)
class Counts:
    """Sizes of one committed state: files, kept documents, chunks, alias documents."""

    files: int = 0
    documents: int = 0
    chunks: int = 0
    duplicate_documents: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"files": self.files, "documents": self.documents, "chunks": self.chunks,
                "duplicate_documents": self.duplicate_documents}


# ---- protocols ----------------------------------------------------------------------------------
@runtime_checkable
class IndexReader(Protocol):
    """One committed state, read-only, valid for the lease that produced it.

    Thread-safe: many threads may search one reader at once. Every method that returns chunks
    or ids takes a :class:`Filter` and honours it (access control included).
    """

    @property
    def generation(self) -> int:
        """The committed state's number; increases by one per commit."""

    @property
    def counts(self) -> Counts: ...

    @property
    def dim(self) -> int:
        """Embedding dimension of the stored vectors."""

    @property
    def embedder(self) -> Mapping[str, Any]:
        """What built the vectors: ``{"name", "model_id", "dim", "max_seq_length", ...}``."""

    def dense_search(self, vectors: np.ndarray, k: int, filter: Filter) -> Ranked:
        """Top ``k`` chunks by cosine (inner product of L2-normalised vectors) for ONE query
        vector, ``(dim,)`` or ``(1, dim)`` float32, L2-normalised. Fewer than ``k`` when fewer
        chunks pass ``filter``. Raises ValueError on a wrong dimension."""

    def sparse_search(self, query: str, k: int, filter: Filter) -> Ranked:
        """Top ``k`` chunks by BM25 (Lucene variant, scores >= 0) for the query TEXT; the
        backend tokenises it with the index's own BM25 settings. Chunks with score 0 (no query
        term) are not returned."""

    def chunks(self, ids: Sequence[int]) -> list[Chunk]:
        """The chunks with these ids, in the order given; ids not in this state are left out."""

    def document_of(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """(m,) int64 document code per chunk id, equal for all chunks of one document, -1 for
        ids not in this state. Codes are opaque and valid only within this reader (used for
        per-document max-pooling without reading chunk rows)."""

    def files(self) -> Mapping[str, FileRecord]:
        """Every indexed file by key (the Indexer's incremental plan)."""

    def documents(self, sources: Sequence[str] | None = None) -> list[DocumentRecord]:
        """Documents (kept and aliases) of the given file keys, or all; ``body`` filled where
        stored. Order: by key."""

    def chunk_hashes(self) -> Mapping[str, int]:
        """Normalised chunk text hash -> one chunk id holding that text (chunk-level dedup)."""

    def info(self) -> dict[str, Any]:
        """Backend-specific description for ``rag info`` (JSON-safe)."""


@runtime_checkable
class IndexWriter(Protocol):
    """Builds the next committed state. Obtained from :meth:`Index.writer` while holding the
    single-writer lock; nothing it does is visible to readers before :meth:`commit`."""

    @property
    def base(self) -> IndexReader | None:
        """The state this write starts from (None for a new index)."""

    def upsert(self, document: DocumentRecord, chunks: Sequence[Chunk], vectors: np.ndarray) -> np.ndarray:
        """Store ``document`` with its ``chunks`` (ids ignored, fresh ids assigned) and their
        ``vectors`` ``(len(chunks), dim)`` float32, L2-normalised; an existing document with
        the same key is replaced. The file row of ``document.source`` is created/updated by
        :meth:`put_file`. Returns the assigned chunk ids (n,) int64; ids are never reused."""

    def put_file(self, file: FileRecord) -> None:
        """Create or replace the bookkeeping row of one file."""

    def delete(self, document_keys: Sequence[str]) -> int:
        """Remove documents (kept or alias) with their chunks and alias links; returns the
        number of chunks removed. Unknown keys are ignored."""

    def delete_files(self, sources: Sequence[str]) -> int:
        """Remove files with all their documents; returns the number of chunks removed."""

    def commit(self) -> dict[str, Any]:
        """Make the new state visible atomically; returns its manifest (JSON-safe, at least
        ``generation`` and ``counts``). The writer is finished afterwards."""

    def abort(self) -> None:
        """Throw the new state away (idempotent; also safe after a failed commit)."""


@runtime_checkable
class Index(Protocol):
    """A backend handle: one index (a folder, a collection). Cheap to construct; opens nothing
    until asked. Thread-safe."""

    def exists(self) -> bool: ...

    def lease(self) -> ContextManager[IndexReader]:
        """``with index.lease() as reader:`` the current committed state, held until the block
        ends. A state is closed only when its last lease ends; a commit meanwhile never closes
        a held reader. Raises IndexNotFoundError / IndexFormatError (one line)."""

    def writer(self, wait_s: float = 0.0, *, embedder: Mapping[str, Any] | None = None,
               settings: Mapping[str, Any] | None = None) -> ContextManager[IndexWriter]:
        """``with index.writer(embedder=..., settings=...) as w:`` hold the single-writer lock
        and build on the current state. Leaving the block without ``w.commit()`` (or with an
        exception) aborts, and a new index that was never committed leaves nothing behind.

        ``embedder``: ``{"name", "model_id", "dim", "max_seq_length"}`` of the model that made
        the vectors (None: keep the current state's). ``settings``: the index-defining config
        sections (``embedding``, ``chunking``, ``bm25``, ``dedup`` as dicts, see
        :class:`rag.config.RagConfig`) stored with the state so a later open restores them
        (None: keep the current state's). Raises IndexLockedError when another writer holds
        the lock past ``wait_s`` seconds."""

    def close(self) -> None:
        """Release cached states no lease holds; later leases reopen."""


def check_embedder(built: Mapping[str, Any], model_id: str | None, where: str | os.PathLike) -> None:
    """Raise IndexFormatError (one line, naming ``where``) when ``built`` (a reader's
    :attr:`IndexReader.embedder`) names another model than ``model_id``: its vectors would be
    compared with queries embedded by a different model."""
    from ..errors import IndexFormatError

    mid = built.get("model_id")
    if mid and model_id and mid != model_id:
        raise IndexFormatError(str(where), f"index was built with embedder {mid!r} but the configured embedder is {model_id!r}")


@contextlib.contextmanager
def null_lease(reader: IndexReader):
    """A lease over an already-open reader (tests, fakes)."""
    yield reader


__all__ = [
    "Counts", "Duplicate", "DocumentRecord", "check_embedder", "FileRecord", "Filter", "Index", "IndexReader", "IndexWriter",
    "Ranked", "SPECIAL_FILTER_KEYS", "TRUSTED", "null_lease", "source_glob", "source_key", "source_matches",
    "value_matches",
]
