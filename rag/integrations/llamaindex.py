"""LlamaIndex adapter: ``rag``'s hybrid retrieval as a ``llama_index.core`` ``BaseRetriever``.

    from llama_index.core.query_engine import RetrieverQueryEngine
    from rag.integrations.llamaindex import RagRetriever

    retriever = RagRetriever("indexes/default", top_k=5, principals=["eng"])
    engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)   # any response synthesizer
    print(engine.query("Who wrote zlib?"))

The retriever calls :meth:`rag.RAG.search`, so filters and access groups restrict nodes exactly
as ``rag search --filter ... --as ...`` does. Needs ``pip install 'rag[llamaindex]'``
(llama-index-core); importing this module without it raises
:class:`rag.integrations.MissingExtraError`.
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping, Sequence

from . import as_rag, hit_metadata, missing_extra

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
except ImportError as _e:  # one line naming the extra, instead of a bare ModuleNotFoundError
    raise missing_extra(__name__, "llamaindex", "llama-index-core", _e) from None

__all__ = ["RagRetriever", "hit_to_node", "LLM_METADATA_KEYS"]

LLM_METADATA_KEYS = ("source", "title", "page", "heading_path")
"""Metadata keys a response synthesizer shows the LLM next to each chunk (when not empty);
scores, ranks, ids and offsets stay on the node for the application but out of the prompt
(they cost tokens and mean nothing to the model)."""


def hit_to_node(hit) -> NodeWithScore:
    """One :class:`rag.Hit` as ``NodeWithScore(TextNode, score)``: the node's ``text`` is the
    chunk text exactly, ``id_`` the chunk id (as a string), ``metadata`` is
    :func:`rag.integrations.hit_metadata`, ``start_char_idx``/``end_char_idx`` the chunk's
    character offsets into its document, and the SOURCE relationship names the document id
    (so ``node.ref_doc_id == metadata["doc_id"]``). ``score`` is the fused score."""
    meta = hit_metadata(hit)
    hidden = [k for k in meta if k not in LLM_METADATA_KEYS or meta[k] in (None, "", [])]
    node = TextNode(
        text=hit.chunk.text, id_=str(hit.chunk.id), metadata=meta,
        excluded_llm_metadata_keys=hidden, excluded_embed_metadata_keys=list(meta),
        start_char_idx=hit.chunk.start, end_char_idx=hit.chunk.end,
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit.chunk.doc_id)},
    )
    return NodeWithScore(node=node, score=float(hit.score))


class RagRetriever(BaseRetriever):
    """A LlamaIndex retriever over a ``rag`` index.

    ``rag``: a :class:`rag.RAG` or an index folder (opened with ``RAG.open``); ``top_k`` (None:
    the index's ``retrieval.top_k``, 5 by default); ``mode`` ("hybrid", "dense", "bm25"; None:
    the configured mode); ``filters`` (as :meth:`rag.RAG.search`, AND of keys); ``principals``
    (the caller's access groups; None: no access control, ``[]``: public documents only).

    ``retrieve(query)`` returns nodes best first (:func:`hit_to_node`); ``aretrieve`` runs the
    same synchronous engine call on a worker thread. Errors are the engine's
    (:class:`rag.ConfigError` for an empty query, ...).
    """

    def __init__(self, rag: Any, top_k: int | None = None, *, mode: str | None = None,
                 filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None,
                 callback_manager: CallbackManager | None = None, verbose: bool = False):
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, not {top_k}")
        self.rag = as_rag(rag)
        self.top_k = top_k
        self.mode = mode
        self.filters = dict(filters) if filters else None
        self.principals = list(principals) if principals is not None else None
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.rag.search(query_bundle.query_str, top_k=self.top_k, mode=self.mode, filters=self.filters,
                               principals=self.principals)
        return [hit_to_node(h) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
