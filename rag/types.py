"""Frozen value types that flow through the pipeline.

Every type has ``to_dict()`` / ``from_dict()`` producing JSON-safe dicts (used by ``--json``
output and by the SQLite docstore), and a short ``__repr__``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _short(text: str, n: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class _DictMixin:
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        for k, v in list(d.items()):
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Inverse of :meth:`to_dict`: ``X.from_dict(x.to_dict()) == x``. Unknown keys are
        ignored (a newer writer may add fields); list values of tuple fields become tuples."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        kw = {k: v for k, v in d.items() if k in names}
        for k in _TUPLE_FIELDS:
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


_TUPLE_FIELDS = ("heading_path", "citations", "dropped_markers")


@dataclass(frozen=True)
class Section(_DictMixin):
    """A structural span of a document's text: ``text[start:end]`` (character offsets).

    Loaders emit sections so that chunking can respect headings and pages: ``heading_path`` is
    the chain of headings above the span (outermost first), ``page`` the 1-based PDF page.
    """

    start: int
    end: int
    heading_path: tuple[str, ...] = ()
    page: int | None = None


@dataclass(frozen=True)
class Document(_DictMixin):
    """One loaded document.

    ``id`` is stable for the same source (file path, or ``path#record-id`` for records inside a
    JSONL/CSV/BEIR file). ``text`` is the extracted text that all chunk offsets refer to.
    ``sections`` (possibly empty) cover parts of ``text`` with heading paths and pages.
    ``metadata`` is JSON-safe (``mtime`` as a UNIX time in seconds, ``type`` as the loader name,
    ``acl`` as a list of group names when access control is used, ...).
    """

    id: str
    text: str
    source: str
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    sections: tuple[Section, ...] = ()

    def __repr__(self) -> str:
        return f"Document(id={self.id!r}, title={self.title!r}, chars={len(self.text)})"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["sections"] = [s.to_dict() for s in self.sections]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Document":
        d = dict(d)
        d["sections"] = tuple(Section.from_dict(s) for s in d.get("sections") or ())
        return super().from_dict(d)  # type: ignore[return-value]


@dataclass(frozen=True)
class Chunk(_DictMixin):
    """A contiguous span ``document.text[start:end]`` that is embedded and indexed.

    ``id`` is the int64 id shared by the docstore, FAISS and BM25 (-1 before it is stored);
    ids are never reused or shifted. ``ordinal`` is the 0-based position within the document.
    ``page`` is 1-based (PDF) or None; ``heading_path`` lists the headings above the chunk.
    """

    id: int
    doc_id: str
    ordinal: int
    start: int
    end: int
    text: str
    source: str = ""
    title: str | None = None
    page: int | None = None
    heading_path: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Chunk(id={self.id}, doc_id={self.doc_id!r}, ordinal={self.ordinal}, text={_short(self.text)!r})"


@dataclass(frozen=True)
class Hit(_DictMixin):
    """A retrieved chunk with its fused score and each retriever's own score and 1-based rank.

    ``score``: the final score (higher is better): RRF or convex fusion for hybrid, cosine for
    dense, raw BM25 for sparse, or the cross-encoder score after reranking. ``dense_*`` and
    ``sparse_*`` are None when that retriever did not return the chunk.
    """

    chunk: Chunk
    score: float
    rank: int
    dense_score: float | None = None
    dense_rank: int | None = None
    sparse_score: float | None = None
    sparse_rank: int | None = None
    rerank_score: float | None = None

    def __repr__(self) -> str:
        return f"Hit(rank={self.rank}, score={self.score:.4f}, chunk_id={self.chunk.id}, source={self.chunk.source!r})"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["chunk"] = self.chunk.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Hit":
        d = dict(d)
        d["chunk"] = Chunk.from_dict(d["chunk"])
        return super().from_dict(d)  # type: ignore[return-value]


@dataclass(frozen=True)
class Citation(_DictMixin):
    """A resolved ``[n]`` marker.

    ``n`` is the number shown in the answer, ``chunk_id`` the cited chunk (resolved by id, never
    by list position), ``quote`` the exact supporting text ``document.text[start:end]``
    (character offsets into the document).
    """

    n: int
    chunk_id: int
    source: str
    page: int | None = None
    quote: str = ""
    title: str | None = None
    doc_id: str = ""
    start: int = 0
    end: int = 0

    def __repr__(self) -> str:
        return f"Citation(n={self.n}, chunk_id={self.chunk_id}, source={self.source!r})"


@dataclass(frozen=True)
class AnswerSentence(_DictMixin):
    """One sentence of an answer: whether a retrieved chunk supports it, and which ``[n]`` do."""

    text: str
    supported: bool
    citations: tuple[int, ...] = ()
    support_score: float | None = None


@dataclass(frozen=True)
class Answer(_DictMixin):
    """The result of :meth:`rag.RAG.ask`.

    ``text`` is the answer with ``[n]`` markers, numbered 1, 2, ... in order of first
    citation; ``citations`` resolve each marker; ``hits`` are the retrieved hits with the cited
    ones first, so ``hits[n - 1]`` is the one ``[n]`` names (``Hit.rank`` keeps retrieval's
    order); ``abstained`` is True when the index does not hold the answer (``text`` is then the fixed
    abstention message). ``dropped_markers`` lists markers the generator wrote that point at no
    retrieved chunk. ``timings`` are seconds per stage, every key ending in ``_s``
    (``retrieval_s``, ``evidence_s``, ``first_token_s``, ``total_s``, ...); ``scores`` are the
    answer route's model scores, not times (``p_yes`` in [0, 1] for yes/no; ``span_logprob``
    and ``span_margin``, log-probabilities, for a scored factoid span).
    """

    question: str
    text: str
    citations: tuple[Citation, ...] = ()
    hits: tuple[Hit, ...] = ()
    abstained: bool = False
    sentences: tuple[AnswerSentence, ...] = ()
    dropped_markers: tuple[int, ...] = ()
    query: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    kind: str = "factoid"
    """The question's route: "yes_no", "factoid", "explanatory", "list" or "comparison"."""
    short: str = ""
    """The short answer (a span, or "Yes"/"No") without citations; "" when there is none."""
    generation: int | None = None
    """The index generation the answer was retrieved from."""
    scores: dict[str, float] = field(default_factory=dict)
    """Model scores of the answer route (see above); {} when the route computed none."""

    def __repr__(self) -> str:
        return f"Answer(text={_short(self.text, 60)!r}, citations={len(self.citations)}, abstained={self.abstained})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "query": self.query,
            "answer": self.text,
            "kind": self.kind,
            "short": self.short,
            "abstained": self.abstained,
            "generation": self.generation,
            "citations": [c.to_dict() for c in self.citations],
            "sentences": [s.to_dict() for s in self.sentences],
            "dropped_markers": list(self.dropped_markers),
            "hits": [h.to_dict() for h in self.hits],
            "timings": dict(self.timings),
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Answer":
        """Inverse of :meth:`to_dict` (the ``--json`` / HTTP schema: text under ``"answer"``)."""
        return cls(question=d["question"], text=d["answer"] if "answer" in d else d.get("text", ""),
                   citations=tuple(Citation.from_dict(c) for c in d.get("citations") or ()),
                   hits=tuple(Hit.from_dict(h) for h in d.get("hits") or ()),
                   abstained=bool(d.get("abstained", False)),
                   sentences=tuple(AnswerSentence.from_dict(x) for x in d.get("sentences") or ()),
                   dropped_markers=tuple(d.get("dropped_markers") or ()), query=d.get("query"),
                   timings=dict(d.get("timings") or {}), kind=d.get("kind", "factoid"), short=d.get("short", ""),
                   generation=d.get("generation"), scores=dict(d.get("scores") or {}))


@dataclass(frozen=True)
class SearchResult:
    """What one search returns, request-scoped: ``hits`` best first, ``timings`` (seconds per
    stage: ``filter_s``, ``embed_s``, ``dense_s``, ``sparse_s``, ``fusion_s``, ``rerank_s``,
    ``total_s``; only stages that ran), ``generation`` (the committed index state every hit
    comes from) and ``query_vector`` ((dim,) float32 L2-normalised query embedding, or None
    when no dense retrieval ran). ``query`` is the text actually searched."""

    hits: tuple[Hit, ...]
    timings: dict[str, float] = field(default_factory=dict)
    generation: int | None = None
    query_vector: Any = None
    query: str = ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchResult):
            return NotImplemented
        a, b = self.query_vector, other.query_vector
        same_vec = (a is None and b is None) or (a is not None and b is not None and
                                                 list(map(float, a)) == list(map(float, b)))
        return (self.hits, self.timings, self.generation, self.query) == (other.hits, other.timings,
                                                                          other.generation, other.query) and same_vec

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SearchResult(hits={len(self.hits)}, generation={self.generation})"

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "generation": self.generation, "hits": [h.to_dict() for h in self.hits],
                "timings": dict(self.timings),
                "query_vector": None if self.query_vector is None else [float(x) for x in self.query_vector]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchResult":
        import numpy as np

        qv = d.get("query_vector")
        return cls(hits=tuple(Hit.from_dict(h) for h in d.get("hits") or ()), timings=dict(d.get("timings") or {}),
                   generation=d.get("generation"), query=d.get("query", ""),
                   query_vector=None if qv is None else np.asarray(qv, dtype=np.float32))
