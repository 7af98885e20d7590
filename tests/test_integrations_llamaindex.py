"""LlamaIndex adapter (rag.integrations.llamaindex) with the real llama-index-core library.

Slow tests run ``RetrieverQueryEngine`` with LlamaIndex's own ``MockLLM`` (which answers with
the prompt it was given, so the test sees what the response synthesizer showed the model) over
the real-embedder index of corpora/; the property test checks filters and principals against
``RAG.search`` on a fake-embedder index with access groups (0 leaks).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from rag import RAG
from rag.integrations.llamaindex import LLM_METADATA_KEYS, RagRetriever

from acl_corpus import acl_search_cases, build_acl_rag, visible

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Who wrote zlib?"


def _assert_same_as_hits(nodes, hits):
    assert [n.node.node_id for n in nodes] == [str(h.chunk.id) for h in hits]
    for n, h in zip(nodes, hits):
        c = h.chunk
        assert isinstance(n, NodeWithScore) and isinstance(n.node, TextNode)
        assert n.node.text == c.text and n.score == h.score
        assert n.node.ref_doc_id == c.doc_id
        assert (n.node.start_char_idx, n.node.end_char_idx) == (c.start, c.end)
        m = n.node.metadata
        assert (m["chunk_id"], m["source"], m["doc_id"], m["page"], m["heading_path"]) == (
            c.id, c.source, c.doc_id, c.page, list(c.heading_path))
        assert (m["dense_score"], m["dense_rank"], m["sparse_score"], m["sparse_rank"]) == (
            h.dense_score, h.dense_rank, h.sparse_score, h.sparse_rank)
        json.dumps(m)


@pytest.fixture(scope="module")
def real_rag(corpora_index):
    return RAG.open(corpora_index)


@pytest.mark.slow
@pytest.mark.parametrize("response_mode", ["compact", "refine", "tree_summarize"])
def test_query_engine_returns_the_zlib_chunks_with_metadata(real_rag, response_mode):
    retriever = RagRetriever(real_rag, top_k=5)
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), response_mode=response_mode)
    response = engine.query(QUESTION)
    hits = real_rag.search(QUESTION, top_k=5)
    _assert_same_as_hits(response.source_nodes, hits)
    assert all("/corpora/zlib/" in n.node.metadata["source"] for n in response.source_nodes)
    gailly = [n for n in response.source_nodes if "Gailly" in n.node.text and "Adler" in n.node.text]
    assert gailly
    # MockLLM echoes its prompt: the synthesizer showed the model the chunk text and its source,
    # but not the scores and ids kept for the application
    shown = str(response)
    assert "Who wrote zlib?" in shown and "Gailly" in shown and f"source: {gailly[0].node.metadata['source']}" in shown
    assert "dense_score" not in shown and "chunk_id" not in shown


@pytest.mark.slow
def test_async_retrieve_and_query_equal_sync(real_rag):
    retriever = RagRetriever(real_rag, top_k=4, mode="hybrid")
    queries = [QUESTION, "adler-32 checksum", "http2 client"]

    async def run():
        return await asyncio.gather(*(retriever.aretrieve(q) for q in queries))

    for q, nodes in zip(queries, asyncio.run(run())):
        _assert_same_as_hits(nodes, real_rag.search(q, top_k=4, mode="hybrid"))
    engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM())
    aresp = asyncio.run(engine.aquery(QUESTION))
    assert [n.node.node_id for n in aresp.source_nodes] == [str(h.chunk.id) for h in real_rag.search(QUESTION, top_k=4)]


def test_llm_sees_only_source_title_page_and_headings(acl_rag):
    rag, _ = acl_rag
    node = RagRetriever(rag, top_k=1, mode="bm25").retrieve("budget")[0].node
    shown = node.get_content(metadata_mode=MetadataMode.LLM)
    keys = {line.split(":", 1)[0] for line in shown.splitlines() if ": " in line and line.split(":", 1)[0] in node.metadata}
    assert keys <= set(LLM_METADATA_KEYS) and "source" in keys
    assert "heading_path" not in keys and "page" not in keys  # empty for a JSONL record: not shown
    assert node.get_content(metadata_mode=MetadataMode.EMBED) == node.text


# ---- fake-embedder index with access groups and metadata ------------------------------------
@pytest.fixture(scope="module")
def acl_rag(tmp_path_factory):
    return build_acl_rag(tmp_path_factory.mktemp("li-acl"), seed=5)


@acl_search_cases
def test_filters_and_principals_restrict_exactly_as_search(acl_rag, principals, filters, words, top_k, mode):
    rag, truth = acl_rag
    query = " ".join(words)
    nodes = RagRetriever(rag, top_k, mode=mode, filters=filters, principals=principals).retrieve(query)
    hits = rag.search(query, top_k=top_k, mode=mode, filters=filters, principals=principals)
    assert [(n.node.node_id, n.score) for n in nodes] == [(str(h.chunk.id), h.score) for h in hits]
    for n in nodes:  # 0 leaks
        assert visible(truth[n.node.metadata["record_id"]], principals, filters), (n.node.metadata, principals, filters)


def test_bad_top_k_is_refused(acl_rag):
    with pytest.raises(ValueError, match="top_k"):
        RagRetriever(acl_rag[0], 0)


def test_missing_llama_index_gives_one_line_naming_the_extra():
    code = ("import sys; sys.modules['llama_index'] = None; sys.modules['llama_index.core'] = None\n"
            "from rag.integrations import MissingExtraError\n"
            "try:\n    import rag.integrations.llamaindex\n"
            "except MissingExtraError as e:\n    assert isinstance(e, ImportError); print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and "pip install 'rag[llamaindex]'" in lines[0] and "llama-index-core" in lines[0], out.stdout
