"""``rag mcp``: the MCP server driven by the official SDK's own stdio client (``stdio_client`` +
``ClientSession``), spawning ``python -m rag mcp`` exactly as an agent host would.

Its tools must give the same hits and answers as the CLI (``rag search --json``, ``rag ask
--json --no-stream``), with the extractive generator on both sides (deterministic, no model):
5 questions on a fake-embedder index of corpora/ (fast), one on the real-embedder index (slow).
Access groups come from ``--as`` only.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from rag import RAG
from rag.config import RagConfig
from rag.integrations.mcp import document_uri
from rag.loaders import LoaderOptions

ROOT = Path(__file__).resolve().parents[1]
FAKE = {"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}}
QUESTIONS = ["Who wrote zlib?", "What checksum does the zlib format use?", "How do I enable HTTP/2 in httpx?",
             "What does the Zen of Python say about errors?", "What is the boiling point of liquid nitrogen?"]


def _env() -> dict[str, str]:
    keep = ("RAG_CACHE_DIR", "PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _server(index: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "rag", "mcp", "--index", str(index), *args],
                                 cwd=str(ROOT), env=_env())


def _session(params: StdioServerParameters, body):
    """Run ``await body(session)`` in one client session with a freshly spawned server."""
    async def run():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)
    return asyncio.run(run())


def _cli(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "rag", *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **_env()}, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _same_path(a: str, b: str) -> bool:
    return (ROOT / a).resolve() == (ROOT / b).resolve()


def _assert_search_matches_cli(tool_hits: list[dict], cli_hits: list[dict]) -> None:
    assert [(h["chunk"]["id"], h["rank"]) for h in tool_hits] == [(h["chunk_id"], h["rank"]) for h in cli_hits]
    for t, c in zip(tool_hits, cli_hits):
        assert t["score"] == pytest.approx(c["score"], rel=1e-6, abs=1e-9)
        assert (t["dense_rank"], t["sparse_rank"]) == (c["dense_rank"], c["sparse_rank"])
        assert (t["chunk"]["text"], t["chunk"]["doc_id"], t["chunk"]["page"]) == (c["text"], c["doc_id"], c["page"])
        assert _same_path(t["chunk"]["source"], c["source"])


def _assert_answer_matches_cli(tool_ans: dict, cli_ans: dict) -> None:
    keys = ("question", "answer", "abstained", "kind", "short")
    assert {k: tool_ans[k] for k in keys} == {k: cli_ans[k] for k in keys}
    cite = ("n", "chunk_id", "quote", "doc_id", "start", "end", "page")
    assert [{k: c[k] for k in cite} for c in tool_ans["citations"]] == [{k: c[k] for k in cite} for c in cli_ans["citations"]]
    assert [h["chunk"]["id"] for h in tool_ans["hits"]] == [h["chunk_id"] for h in cli_ans["hits"]]


def _parity(index: Path, questions: list[str], *server_args: str) -> None:
    async def body(s: ClientSession):
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == {"search", "ask"}
        assert set(tools["search"].input_schema["properties"]) == {"query", "top_k", "filters", "mode"}
        assert set(tools["ask"].input_schema["properties"]) == {"question"}
        out = []
        for q in questions:
            r_search = await s.call_tool("search", {"query": q, "top_k": 5})
            r_ask = await s.call_tool("ask", {"question": q})
            assert not r_search.is_error and not r_ask.is_error, (r_search.content, r_ask.content)
            assert json.loads(r_search.content[0].text) == r_search.structured_content  # text form = structured form
            out.append((r_search.structured_content, r_ask.structured_content))
        return out

    results = _session(_server(index, "--generator", "extractive", *server_args), body)
    for q, (search, ans) in zip(questions, results):
        cli_search = _cli("search", q, "--index", str(index), "--top-k", "5", "--json")
        assert search["query"] == q and search["hits"]
        _assert_search_matches_cli(search["hits"], cli_search["hits"])
        cli_ans = _cli("ask", q, "--index", str(index), "--json", "--no-stream", "--generator", "extractive", "--no-record")
        _assert_answer_matches_cli(ans, cli_ans)


# ---- fake embedder: 5 questions, resources ----------------------------------------------------
@pytest.fixture(scope="module")
def fake_corpora_index(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mcp-fake") / "idx"
    report = RAG.create(path, RagConfig.from_dict(FAKE)).ingest([ROOT / "corpora"])
    assert report.files_ingested >= 10
    return path


def test_tools_give_the_same_hits_and_answers_as_the_cli(fake_corpora_index):
    _parity(fake_corpora_index, QUESTIONS)


def test_one_resource_per_document_with_its_chunks(fake_corpora_index):
    rag = RAG.open(fake_corpora_index)
    hits = rag.search("adler-32 checksum zlib", top_k=10)
    doc_id = hits[0].chunk.doc_id
    mine = [h.chunk for h in hits if h.chunk.doc_id == doc_id]

    async def body(s: ClientSession):
        listed = (await s.list_resources()).resources
        templates = (await s.list_resource_templates()).resource_templates
        read = await s.read_resource(document_uri(doc_id))
        every = [json.loads((await s.read_resource(r.uri)).contents[0].text) for r in listed]
        return listed, templates, read, every

    listed, templates, read, every = _session(_server(fake_corpora_index), body)
    info = rag.info()
    assert len(listed) == info["documents"]
    assert sum(len(d["chunks"]) for d in every) == info["chunks"]  # every chunk, through the resources
    assert sorted(c["chunk_id"] for d in every for c in d["chunks"]) == sorted(
        {c["chunk_id"] for d in every for c in d["chunks"]})
    assert len({str(r.uri) for r in listed}) == len(listed)
    assert document_uri(doc_id) in {str(r.uri) for r in listed}
    assert [t.uri_template for t in templates] == ["rag://document/{doc_id}"]
    doc = json.loads(read.contents[0].text)
    assert doc["doc_id"] == doc_id and doc["source"] == mine[0].source
    assert doc["chunks"] and [c["ordinal"] for c in doc["chunks"]] == sorted(c["ordinal"] for c in doc["chunks"])
    for c in mine:  # the stored chunk texts, at their offsets in the rebuilt text
        assert doc["text"][c.start:c.end] == c.text
        assert {"chunk_id": c.id, "text": c.text}.items() <= next(x for x in doc["chunks"] if x["chunk_id"] == c.id).items()


def test_bad_tool_input_is_a_one_line_tool_error(fake_corpora_index):
    async def body(s: ClientSession):
        return await s.call_tool("search", {"query": "   "}), await s.call_tool("ask", {"question": ""})

    for res in _session(_server(fake_corpora_index), body):
        assert res.is_error and len(res.content) == 1 and "\n" not in res.content[0].text
        assert "non-empty" in res.content[0].text


# ---- access groups come from --as only ----------------------------------------------------------
GROUPS = ["hr", "eng", "legal"]
WORDS = "salary budget merger contract launch roadmap invoice lawsuit hiring patent server outage audit".split()


@pytest.fixture(scope="module")
def acl_index(tmp_path_factory):
    base = tmp_path_factory.mktemp("mcp-acl")
    rng = random.Random(3)
    acl: dict[str, set[str]] = {}
    lines = []
    for i in range(40):
        groups = sorted(rng.sample(GROUPS, rng.randint(0, 2)))
        acl[f"r{i}"] = set(groups)
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 25))) + f" unique{i}."
        lines.append(json.dumps({"id": f"r{i}", "title": f"record {i}", "text": text, "acl": groups}))
    (base / "corpus").mkdir()
    (base / "corpus" / "records.jsonl").write_text("\n".join(lines) + "\n")
    cfg = RagConfig.from_dict({**FAKE, "dedup": {"enabled": False}})
    RAG.create(base / "idx", cfg).ingest([base / "corpus"], loader_options=LoaderOptions(metadata_fields=("acl",)))
    return base / "idx", acl


def test_access_groups_come_from_the_server_never_from_the_call(acl_index):
    index, acl = acl_index
    rag = RAG.open(index)
    hidden = sorted(r for r, g in acl.items() if g and "eng" not in g)
    assert hidden
    hidden_doc = next(h.chunk.doc_id for h in rag.search(f"unique{hidden[0][1:]}", top_k=40, mode="bm25")
                      if h.chunk.metadata["record_id"] == hidden[0])
    queries = [" ".join(random.Random(i).sample(WORDS, 3)) for i in range(8)]

    async def body(s: ClientSession):
        searches = [(await s.call_tool("search", {"query": q, "top_k": 10})).structured_content for q in queries]
        # an argument the tool does not declare never widens access
        sneaky = await s.call_tool("search", {"query": " ".join(WORDS), "top_k": 40, "principals": ["hr", "legal"]})
        answers = [(await s.call_tool("ask", {"question": q + "?"})).structured_content for q in queries[:3]]
        listed = (await s.list_resources()).resources
        try:
            await s.read_resource(document_uri(hidden_doc))
            read_hidden = None
        except Exception as e:  # noqa: BLE001 - the SDK raises its MCPError for a protocol error
            read_hidden = str(e)
        return searches, sneaky, answers, listed, read_hidden

    searches, sneaky, answers, listed, read_hidden = _session(_server(index, "--as", "eng", "--generator", "extractive"), body)
    visible = lambda rid: not acl[rid] or "eng" in acl[rid]  # noqa: E731
    assert any(res["hits"] for res in searches)
    for q, res in zip(queries, searches):
        assert [h["chunk"]["id"] for h in res["hits"]] == [h.chunk.id for h in rag.search(q, top_k=10, principals=["eng"])]
        assert all(visible(h["chunk"]["metadata"]["record_id"]) for h in res["hits"])
    # the SDK ignores undeclared arguments: the call runs with the server's groups
    assert not sneaky.is_error
    assert [h["chunk"]["id"] for h in sneaky.structured_content["hits"]] == [
        h.chunk.id for h in rag.search(" ".join(WORDS), top_k=40, principals=["eng"])]
    assert all(visible(h["chunk"]["metadata"]["record_id"]) for h in sneaky.structured_content["hits"])
    for ans in answers:
        ids = {h["chunk"]["id"] for h in ans["hits"]}
        assert all(visible(h["chunk"]["metadata"]["record_id"]) for h in ans["hits"])
        assert all(c["chunk_id"] in ids for c in ans["citations"])
    assert len(listed) == sum(visible(r) for r in acl)
    assert document_uri(hidden_doc) not in {str(r.uri) for r in listed}
    assert read_hidden is not None and "no document" in read_hidden


# ---- real embedder ------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_index_gives_the_same_hits_and_answer_as_the_cli(corpora_index):
    _parity(corpora_index, ["Who wrote zlib?"])


def test_without_the_mcp_extra_rag_mcp_fails_in_one_line(tmp_path):
    code = "import sys; sys.modules['mcp'] = None\nfrom rag.cli import main\nmain(['mcp', '--index', sys.argv[1]])\n"
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rag: error: ") and "pip install 'rag[mcp]'" in lines[0], out.stderr


def test_rag_mcp_on_a_missing_index_fails_in_one_line_before_serving(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rag", "mcp", "--index", str(tmp_path / "none")], capture_output=True,
                         text=True, cwd=ROOT, stdin=subprocess.DEVNULL, timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"rag: error: {tmp_path / 'none'}: "), out.stderr
