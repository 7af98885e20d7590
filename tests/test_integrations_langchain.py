"""LangChain adapter (rag.integrations.langchain) with the real langchain-core library.

Slow tests run an LCEL chain over the real-embedder index of corpora/ (session fixture
``corpora_index``); the property test checks, on a fake-embedder index with access groups, that
filters and principals restrict the retriever exactly as ``RAG.search`` does, with 0 leaks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from rag import RAG, IndexNotFoundError
from rag.config import RagConfig
from rag.integrations.langchain import RagRetriever, make_answer_tool

from acl_corpus import acl_search_cases, build_acl_rag, visible

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Who wrote zlib?"


def format_docs(docs) -> str:
    return "\n\n".join(d.page_content for d in docs)


# ---- real index of corpora/ (real embedder) -------------------------------------------------
@pytest.fixture(scope="module")
def real_rag(corpora_index):
    return RAG.open(corpora_index, RagConfig.from_dict({"generation": {"backend": "extractive"}}))


def _assert_same_as_hits(docs, hits):
    assert [d.metadata["chunk_id"] for d in docs] == [h.chunk.id for h in hits]
    for d, h in zip(docs, hits):
        c = h.chunk
        assert d.page_content == c.text and d.id == str(c.id)
        m = d.metadata
        assert (m["source"], m["doc_id"], m["page"], m["heading_path"], m["title"]) == (
            c.source, c.doc_id, c.page, list(c.heading_path), c.title)
        assert (m["rank"], m["score"], m["dense_score"], m["dense_rank"], m["sparse_score"], m["sparse_rank"]) == (
            h.rank, h.score, h.dense_score, h.dense_rank, h.sparse_score, h.sparse_rank)
        assert (m["start"], m["end"]) == (c.start, c.end)
        json.dumps(m)  # JSON-safe, so any LangChain vector store or tracer can keep it


@pytest.mark.slow
def test_lcel_chain_returns_the_zlib_chunks_with_metadata(real_rag):
    retriever = RagRetriever(rag=real_rag, top_k=5)
    docs = retriever.invoke(QUESTION)
    _assert_same_as_hits(docs, real_rag.search(QUESTION, top_k=5))
    assert len(docs) == 5
    assert all("/corpora/zlib/" in d.metadata["source"] for d in docs), [d.metadata["source"] for d in docs]
    assert any("Gailly" in d.page_content and "Adler" in d.page_content for d in docs)
    pdf = [d for d in docs if d.metadata["source"].endswith("zlib.3.pdf")]
    assert pdf and all(d.metadata["page"] >= 1 for d in pdf)
    assert all(d.metadata["dense_rank"] or d.metadata["sparse_rank"] for d in docs)

    chain = retriever | RunnableLambda(format_docs)
    assert chain.invoke(QUESTION) == format_docs(docs)

    # a whole RAG chain with LangChain's own fake LLM: the prompt it gets holds the zlib chunks
    prompt = PromptTemplate.from_template("Answer from the context.\n\n{context}\n\nQuestion: {question}\nAnswer:")
    setup = {"context": retriever | format_docs, "question": RunnablePassthrough()}
    shown = (setup | prompt).invoke(QUESTION).to_string()
    assert format_docs(docs) in shown and "Question: Who wrote zlib?" in shown
    llm = FakeListLLM(responses=["Jean-loup Gailly and Mark Adler."])
    assert (setup | prompt | llm | StrOutputParser()).invoke(QUESTION) == "Jean-loup Gailly and Mark Adler."
    chat = ChatPromptTemplate.from_messages([("system", "Context:\n{context}"), ("human", "{question}")])
    chat_model = FakeListChatModel(responses=["Gailly and Adler"])
    assert (setup | chat | chat_model | StrOutputParser()).invoke(QUESTION) == "Gailly and Adler"


@pytest.mark.slow
def test_async_retrieval_equals_sync(real_rag):
    retriever = RagRetriever(rag=real_rag, top_k=4, mode="hybrid")
    queries = [QUESTION, "adler-32 checksum", "http2 client"]

    async def run():
        return await asyncio.gather(*(retriever.ainvoke(q) for q in queries))

    for q, docs in zip(queries, asyncio.run(run())):
        _assert_same_as_hits(docs, real_rag.search(q, top_k=4, mode="hybrid"))


@pytest.mark.slow
def test_answer_tool_returns_the_grounded_answer_with_citations(real_rag):
    tool = make_answer_tool(real_rag)
    assert set(tool.args) == {"question"}  # the agent cannot pass principals or filters
    call = {"type": "tool_call", "id": "call-1", "name": tool.name, "args": {"question": QUESTION}}
    msg = tool.invoke(call)
    assert isinstance(msg, ToolMessage)
    ans = real_rag.ask(QUESTION)
    assert not ans.abstained and ans.citations
    assert msg.artifact["answer"] == ans.text
    assert [(c["n"], c["chunk_id"], c["quote"]) for c in msg.artifact["citations"]] == [
        (c.n, c.chunk_id, c.quote) for c in ans.citations]
    assert msg.content.startswith(ans.text)
    for c in ans.citations:
        assert f"[{c.n}] {c.source}" in msg.content and " ".join(c.quote.split()) in msg.content
    amsg = asyncio.run(tool.ainvoke(call))
    assert amsg.artifact["answer"] == ans.text


# ---- fake-embedder index with access groups and metadata ------------------------------------
@pytest.fixture(scope="module")
def acl_rag(tmp_path_factory):
    return build_acl_rag(tmp_path_factory.mktemp("lc-acl"), seed=11)


@acl_search_cases
def test_filters_and_principals_restrict_exactly_as_search(acl_rag, principals, filters, words, top_k, mode):
    rag, truth = acl_rag
    query = " ".join(words)
    retriever = RagRetriever(rag=rag, top_k=top_k, mode=mode, filters=filters, principals=principals)
    docs = retriever.invoke(query)
    hits = rag.search(query, top_k=top_k, mode=mode, filters=filters, principals=principals)
    assert [d.metadata["chunk_id"] for d in docs] == [h.chunk.id for h in hits]
    assert [d.metadata["score"] for d in docs] == [h.score for h in hits]
    for d in docs:  # 0 leaks: every document is one this caller may see and these filters allow
        assert visible(truth[d.metadata["record_id"]], principals, filters), (d.metadata, principals, filters)


def test_retriever_opens_an_index_path_and_reports_a_missing_one(acl_rag, tmp_path):
    rag, _ = acl_rag
    by_path = RagRetriever(rag=str(rag.index_dir), top_k=3, mode="bm25")
    assert [d.id for d in by_path.invoke("budget")] == [str(h.chunk.id) for h in rag.search("budget", top_k=3, mode="bm25")]
    with pytest.raises(IndexNotFoundError):
        RagRetriever(rag=str(tmp_path / "nothing-here"))


def test_answer_tool_keeps_the_principals_it_was_made_with(acl_rag):
    rag, truth = acl_rag
    tool = make_answer_tool(rag, principals=["eng"])
    for q in ("budget salary?", "who handles the lawsuit?", "server outage audit?"):
        msg = tool.invoke({"type": "tool_call", "id": "c", "name": tool.name, "args": {"question": q}})
        assert msg.artifact == {**rag.ask(q, principals=["eng"]).to_dict(), "timings": msg.artifact["timings"]}
        for h in msg.artifact["hits"]:
            assert visible(truth[h["chunk"]["metadata"]["record_id"]], ["eng"], None)


# ---- packaging: lazy imports, one-line error without the extra ------------------------------
def test_import_rag_loads_no_integration_library():
    code = ("import sys, rag, rag.cli, rag.integrations; "
            "print([m for m in ('langchain_core', 'llama_index', 'mcp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_missing_langchain_gives_one_line_naming_the_extra():
    code = ("import sys; sys.modules['langchain_core'] = None\n"
            "from rag.integrations import MissingExtraError\n"
            "try:\n    import rag.integrations.langchain\n"
            "except MissingExtraError as e:\n    assert isinstance(e, ImportError); print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and "pip install 'rag[langchain]'" in lines[0] and "langchain-core" in lines[0], out.stdout
