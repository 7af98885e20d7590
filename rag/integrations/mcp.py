"""Model Context Protocol server (``rag mcp``): ``rag``'s search and grounded answers as MCP tools.

Tools (JSON in, JSON out; the structured result is also sent as JSON text):

- ``search(query, top_k=5, filters=None, mode=None)`` -> ``{"query", "hits": [Hit.to_dict(), ...]}``
- ``ask(question)`` -> ``Answer.to_dict()``: answer text with ``[n]`` markers, citations with the
  exact quotes and their offsets, the hits it was built from, ``abstained``.

Resources: one per indexed document the server's access groups may see,
``rag://document/<doc_id, percent-encoded>`` (``application/json``: the document's id, source,
title, metadata and its stored chunks with offsets, plus ``text`` rebuilt from them), listed by
``resources/list`` and readable through the template ``rag://document/{doc_id}``.

Access groups are the server's (``rag mcp --as GROUP``, or ``principals=`` here), fixed for
the process: no tool takes principals, so an agent cannot widen its own access; ``filters``
from a tool call only narrow the search further. Runs over stdio with the official SDK
(``mcp>=2``: ``mcp.server.mcpserver.MCPServer``). Engine calls run on worker threads.
Needs ``pip install 'rag[mcp]'``; importing this module without it raises
:class:`rag.integrations.MissingExtraError`.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal, Sequence
from urllib.parse import quote

from . import as_rag, missing_extra
from ..errors import RagError
from ..index.backend import Filter

try:
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
    from mcp.server.mcpserver.resources import ResourceSecurity
    from mcp.types import Resource as MCPResource
    from pydantic import Field
except ImportError as _e:  # one line naming the extra, instead of a bare ModuleNotFoundError
    raise missing_extra(__name__, "mcp", "mcp>=2", _e) from None

__all__ = ["RagMCPServer", "serve", "document_uri", "list_documents", "read_document"]

log = logging.getLogger("rag")

URI_PREFIX = "rag://document/"

FilterValue = str | int | float | bool | list[str | int | float | bool]


def document_uri(doc_id: str) -> str:
    """``rag://document/`` + the document id percent-encoded whole (ids are absolute paths,
    ``path#record`` for records), so one URI path segment names one document."""
    return URI_PREFIX + quote(doc_id, safe="")


def _document_records(engine) -> dict[str, Any]:
    """Every stored document (kept and aliases) by key, read under one lease of the index."""
    with engine.lease() as reader:
        return {r.key: r for r in reader.documents()}


def list_documents(engine, principals: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """``[{"doc_id", "source", "title", "type", "chunks", "alias_of"}]``: every document
    ``principals`` may see (None: no access control), sorted by document id. A duplicate kept as
    an alias is listed under its own id and groups (``alias_of`` names the kept document, whose
    chunks it reads); ``chunks`` counts the chunks a read returns.
    """
    records = _document_records(engine)
    access = Filter(principals=None if principals is None else tuple(principals))
    out = []
    for key in sorted(records):
        r = records[key]
        kept = records.get(r.alias_of) if r.alias_of else r
        if kept is None or kept.n_chunks < 1 or not access.allows_groups(r.acl):
            continue
        out.append({"doc_id": key, "source": r.source, "title": r.title, "type": r.metadata.get("type"),
                    "chunks": kept.n_chunks, "alias_of": r.alias_of})
    return out


def read_document(engine, doc_id: str, principals: Sequence[str] | None = None) -> dict[str, Any] | None:
    """One document as the caller may see it, or None when it does not exist for them.

    The chunks are read with :meth:`rag.RAG.search` in dense mode under the filter
    ``{"doc_id": doc_id}`` and the caller's principals, with ``top_k`` = the document's chunk
    count (plus its chunk-level duplicate links): filtered dense retrieval returns every chunk
    passing the filter up to ``top_k``, and it is the very read path (access control included)
    that search and ask use.

    ``chunks``: ``[{"chunk_id", "ordinal", "start", "end", "page", "heading_path", "text"}]`` in
    document order. ``text``: the document text rebuilt from its chunks by their character
    offsets (``text[start:end] == chunk text`` for every chunk, so citation offsets index it);
    characters no stored chunk covers (whitespace between sections, a dropped duplicate chunk)
    are spaces.
    """
    records = _document_records(engine)
    rec = records.get(doc_id)
    kept = records.get(rec.alias_of) if rec is not None and rec.alias_of else rec
    if kept is None or kept.n_chunks < 1:
        return None
    # the filter also passes chunks of other documents that this one's dropped duplicate chunks
    # link to: ask for those too, and keep the document's own
    links = sum(d.level == "chunk" for r in {rec.key: rec, kept.key: kept}.values() for d in r.duplicates)
    hits = engine.search(rec.title or doc_id, top_k=kept.n_chunks + links, mode="dense", filters={"doc_id": doc_id},
                         principals=principals)
    chunks = sorted((h.chunk for h in hits if h.chunk.doc_id == kept.key), key=lambda c: c.ordinal)
    if not chunks:
        return None
    buf = [" "] * max(c.end for c in chunks)
    for c in chunks:
        buf[c.start:c.end] = c.text
    return {
        "doc_id": doc_id, "uri": document_uri(doc_id), "source": rec.source, "title": rec.title,
        "alias_of": rec.alias_of, "metadata": dict(chunks[0].metadata), "text": "".join(buf),
        "chunks": [{"chunk_id": int(c.id), "ordinal": c.ordinal, "start": c.start, "end": c.end, "page": c.page,
                    "heading_path": list(c.heading_path), "text": c.text} for c in chunks],
    }


class RagMCPServer(MCPServer):
    """An MCP server over one :class:`rag.RAG` with fixed access groups.

    ``rag``: a RAG or an index folder; ``principals``: the groups every call runs with (None:
    no access control, as ``rag search`` without ``--as``; ``[]``: public documents only).
    Engine errors (:class:`rag.RagError`: empty query, bad filter, ...) come back as tool errors
    carrying the one-line message.
    """

    def __init__(self, rag: Any, principals: Sequence[str] | None = None, *, name: str = "rag"):
        super().__init__(name, instructions=(
            "Search and question answering over a local document index. `search` returns ranked chunks with their "
            "source, page, heading path and scores; `ask` returns a short grounded answer with [n] citations and the "
            "exact quoted source text, or abstains when the documents do not hold the answer. Each indexed document "
            "is a resource rag://document/<id>."))
        self.engine = as_rag(rag)
        self.principals = list(principals) if principals is not None else None
        engine, groups = self.engine, self.principals

        async def search(
            query: Annotated[str, Field(description="What to look for, in natural language or keywords.")],
            top_k: Annotated[int, Field(ge=1, le=100, description="Number of chunks to return.")] = 5,
            filters: Annotated[dict[str, FilterValue] | None, Field(description=(
                "Metadata filters, all must match: source (glob on the path, e.g. '*/zlib/*'), page, title, "
                "doc_id or any document metadata key; a list means any of."))] = None,
            mode: Annotated[Literal["hybrid", "dense", "bm25"] | None, Field(
                description="Retriever: hybrid (default), dense or bm25.")] = None,
        ) -> dict[str, Any]:
            """Ranked chunks of the indexed documents that best match the query (hybrid dense + BM25)."""
            hits = await _call(engine.search, query, top_k=top_k, mode=mode, filters=filters, principals=groups)
            return {"query": query, "hits": [h.to_dict() for h in hits]}

        async def ask(
            question: Annotated[str, Field(description="The question, in natural language.")],
        ) -> dict[str, Any]:
            """Answer a question from the indexed documents only: a short answer with [n] citation markers, each
            citation with its source and the exact quoted text; abstained=true when the documents do not hold it."""
            ans = await _call(engine.ask, question, principals=groups)
            return ans.to_dict()

        def document(doc_id: str) -> str:
            """One indexed document: metadata, its chunks with character offsets, and its text."""
            doc = read_document(engine, doc_id, groups)
            if doc is None:
                raise ResourceNotFoundError(f"no document {doc_id!r} in this index")
            return json.dumps(doc, ensure_ascii=False)

        self.add_tool(search)
        self.add_tool(ask)
        # doc ids are docstore keys (often absolute paths), never opened as files: the SDK's
        # path-traversal checks do not apply to them, and access is checked by read_document.
        self.resource(URI_PREFIX + "{doc_id}", name="document", mime_type="application/json",
                      security=ResourceSecurity(exempt_params={"doc_id"}))(document)

    async def list_resources(self) -> list[MCPResource]:
        """The static resources plus one per document these principals may see (read fresh on
        every call, so a re-ingest shows up without a restart)."""
        docs = await anyio.to_thread.run_sync(list_documents, self.engine, self.principals)
        return list(await super().list_resources()) + [
            MCPResource(uri=document_uri(d["doc_id"]), name=d["doc_id"], title=d["title"] or None,
                        description=f"{d['source']} ({d['type'] or 'document'}, {d['chunks']} chunks)",
                        mime_type="application/json")
            for d in docs]


async def _call(fn, *args, **kwargs):
    """Run a blocking engine call on a worker thread; a RagError becomes a one-line ToolError."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
    except RagError as e:
        raise ToolError(str(e).splitlines()[0] if str(e) else e.__class__.__name__) from None


def serve(rag: Any, principals: Sequence[str] | None = None) -> None:
    """Serve ``rag`` over stdio until the client closes the connection (blocks).

    stdout carries the protocol only; logs go to stderr through ``logging``.
    """
    server = RagMCPServer(rag, principals)
    log.info("rag mcp: serving %s over stdio (access groups: %s)", server.engine.index_dir,
             "none (no access control)" if server.principals is None else (server.principals or "public only"))
    server.run("stdio")
