"""Adapters that speak other libraries' types over ``rag``'s own engine.

- :mod:`rag.integrations.langchain`: ``RagRetriever`` (a LangChain ``BaseRetriever``) and
  ``make_answer_tool`` (a ``StructuredTool`` for grounded, cited answers). Extra: ``rag[langchain]``.
- :mod:`rag.integrations.llamaindex`: ``RagRetriever`` (a LlamaIndex ``BaseRetriever``
  returning ``NodeWithScore``). Extra: ``rag[llamaindex]``.
- :mod:`rag.integrations.mcp`: a Model Context Protocol server over stdio (``rag mcp``).
  Extra: ``rag[mcp]``.

Each adapter is thin: retrieval, fusion, access control and answering are the ``RAG`` facade's
(:meth:`rag.RAG.search`, :meth:`rag.RAG.ask`); an adapter only converts types. This package
imports none of those libraries; each submodule imports its own on import, and raises
:class:`MissingExtraError` (one line naming the extra to install) when it is absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RagError


class MissingExtraError(RagError, ImportError):
    """An optional integration's library is not installed. The message is one line:
    ``<module> needs <package> (extra 'X'): pip install 'rag[X]' (<import error>)``."""


def missing_extra(module: str, extra: str, package: str, error: ImportError) -> MissingExtraError:
    """The error to raise when ``import <package>`` failed inside ``module``."""
    reason = str(error).splitlines()[0] if str(error) else error.__class__.__name__
    return MissingExtraError(f"{module} needs {package} (extra {extra!r}): pip install 'rag[{extra}]' ({reason})")


def as_rag(rag: Any):
    """``rag`` itself when it is a :class:`rag.RAG`, else ``RAG.open(rag)`` for an index path.

    Raises IndexNotFoundError / IndexFormatError (from ``RAG.open``) for a bad path, and
    TypeError for anything else.
    """
    from .. import RAG

    if isinstance(rag, RAG):
        return rag
    if isinstance(rag, (str, Path)):
        return RAG.open(rag)
    raise TypeError(f"rag must be a rag.RAG or an index folder path, not {type(rag).__name__}")


def hit_metadata(hit) -> dict[str, Any]:
    """The metadata an adapter attaches to one :class:`rag.Hit`: JSON-safe, flat at the top.

    Keys: ``source`` (as stored: an absolute path), ``title``, ``page`` (1-based or None),
    ``heading_path`` (list of headings, outermost first), ``chunk_id`` (int64 id shared by the
    docstore, FAISS and BM25), ``doc_id``, ``ordinal``, ``start``/``end`` (character offsets into
    the document's text), ``rank`` (1-based), ``score`` (fused; higher is better),
    ``dense_score``/``dense_rank``, ``sparse_score``/``sparse_rank`` and ``rerank_score`` (None
    when that stage did not score the chunk), then the chunk's own metadata (document type,
    mtime, record id, access groups, ...) under keys that do not clash with those above.
    """
    c = hit.chunk
    meta: dict[str, Any] = {
        "source": c.source, "title": c.title, "page": c.page, "heading_path": list(c.heading_path),
        "chunk_id": int(c.id), "doc_id": c.doc_id, "ordinal": c.ordinal, "start": c.start, "end": c.end,
        "rank": hit.rank, "score": float(hit.score),
        "dense_score": hit.dense_score, "dense_rank": hit.dense_rank,
        "sparse_score": hit.sparse_score, "sparse_rank": hit.sparse_rank, "rerank_score": hit.rerank_score,
    }
    for k, v in c.metadata.items():
        meta.setdefault(k, v)
    return meta


def format_citations(answer) -> str:
    """``answer.text`` followed by one ``[n] source, p. N: "quote"`` line per citation: the
    plain-text form an LLM tool result carries (the structured form is ``answer.to_dict()``)."""
    lines = [answer.text]
    if answer.citations:
        lines.append("")
        lines.append("Sources:")
        for c in answer.citations:
            where = c.source + (f", p. {c.page}" if c.page else "")
            quote = " ".join(c.quote.split())
            lines.append(f"[{c.n}] {where}: \"{quote}\"" if quote else f"[{c.n}] {where}")
    return "\n".join(lines)
