"""LangChain adapter: ``rag``'s hybrid retrieval as a ``BaseRetriever``, grounded answers as a tool.

    from rag.integrations.langchain import RagRetriever, make_answer_tool

    retriever = RagRetriever(rag="indexes/default", top_k=5, principals=["eng"])
    chain = retriever | (lambda docs: "\\n\\n".join(d.page_content for d in docs))
    tool = make_answer_tool("indexes/default", principals=["eng"])

Both call the :class:`rag.RAG` facade (``search`` / ``ask``): filters and access groups restrict
results exactly as ``rag search --filter ... --as ...`` does, because it is the same call.
Needs ``pip install 'rag[langchain]'`` (langchain-core); importing this module without it
raises :class:`rag.integrations.MissingExtraError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal, Mapping, Sequence

from . import as_rag, format_citations, hit_metadata, missing_extra

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import StructuredTool
    from pydantic import BaseModel, ConfigDict, Field, field_validator
except ImportError as _e:  # one line naming the extra, instead of a bare ModuleNotFoundError
    raise missing_extra(__name__, "langchain", "langchain-core", _e) from None

__all__ = ["RagRetriever", "make_answer_tool", "hit_to_document"]


def hit_to_document(hit) -> Document:
    """One :class:`rag.Hit` as a LangChain ``Document``: ``page_content`` is the chunk text
    exactly, ``metadata`` is :func:`rag.integrations.hit_metadata` (source, page, heading_path,
    chunk_id, doc_id, fused score, each retriever's score and rank, ...); ``id`` is the chunk id."""
    return Document(page_content=hit.chunk.text, metadata=hit_metadata(hit), id=str(hit.chunk.id))


class RagRetriever(BaseRetriever):
    """A LangChain retriever over a ``rag`` index.

    Fields: ``rag`` (a :class:`rag.RAG`, or an index folder opened with ``RAG.open``),
    ``top_k`` (None: the index's ``retrieval.top_k``, 5 by default), ``mode`` ("hybrid",
    "dense", "bm25"; None: the configured mode), ``filters`` (as :meth:`rag.RAG.search`:
    ``{"source": "docs/*.md", "page": 3, ...}``, AND of keys) and ``principals`` (the caller's
    access groups; None: no access control, ``[]``: public documents only).

    ``invoke(query)`` returns Documents best first (:func:`hit_to_document`). ``ainvoke`` runs
    the same synchronous engine call on a worker thread, so an event loop is never blocked by
    query embedding or FAISS. Errors are the engine's (:class:`rag.ConfigError` for an empty
    query, ...).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    rag: Any
    top_k: int | None = Field(default=None, ge=1)
    mode: Literal["hybrid", "dense", "bm25"] | None = None
    filters: dict[str, Any] | None = None
    principals: list[str] | None = None

    @field_validator("rag", mode="before")
    @classmethod
    def _open_index(cls, value: Any):
        return as_rag(value)

    def _search(self, query: str) -> list[Document]:
        hits = self.rag.search(query, top_k=self.top_k, mode=self.mode, filters=self.filters, principals=self.principals)
        return [hit_to_document(h) for h in hits]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return self._search(query)

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        return await asyncio.to_thread(self._search, query)


class _AnswerArgs(BaseModel):
    question: str = Field(description="The question, in natural language.")


def make_answer_tool(rag: Any, *, top_k: int | None = None, filters: Mapping[str, Any] | None = None,
                     principals: Sequence[str] | None = None, name: str = "rag_answer",
                     description: str | None = None) -> StructuredTool:
    """A LangChain tool that answers a question from the index only, with citations.

    ``rag``: a :class:`rag.RAG` or an index folder; ``top_k``, ``filters`` and ``principals`` are
    fixed when the tool is made (an agent's tool call carries only ``question``, so it can never
    widen its own access). The tool uses ``response_format="content_and_artifact"``: the content
    (what the model reads) is the answer text with ``[n]`` markers followed by one
    ``[n] source, p. N: "quote"`` line per citation; the artifact is ``Answer.to_dict()``
    (answer, citations with exact quotes and offsets, hits, abstained, timings). The async form
    runs :meth:`rag.RAG.ask` on a worker thread.
    """
    engine = as_rag(rag)
    flt = dict(filters) if filters else None
    groups = list(principals) if principals is not None else None

    def answer(question: str) -> tuple[str, dict[str, Any]]:
        ans = engine.ask(question, top_k=top_k, filters=flt, principals=groups)
        return format_citations(ans), ans.to_dict()

    async def aanswer(question: str) -> tuple[str, dict[str, Any]]:
        return await asyncio.to_thread(answer, question)

    return StructuredTool.from_function(
        func=answer, coroutine=aanswer, name=name, args_schema=_AnswerArgs, response_format="content_and_artifact",
        description=description or ("Answer a question from the indexed documents only. Returns a short answer with "
                                    "[n] citation markers and the quoted sources, or says that the documents do not "
                                    "hold the answer."))
