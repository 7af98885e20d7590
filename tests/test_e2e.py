"""End to end with the real packaged models (all-MiniLM-L6-v2 and SmolLM2-135M-Instruct)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag import RAG, Answer

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_rag(tmp_path_factory):
    import shutil

    base = tmp_path_factory.mktemp("e2e")
    corpus = base / "mini"
    shutil.copytree(Path(__file__).parent / "data" / "mini", corpus)
    rag = RAG.create(base / "idx")
    rep = rag.ingest([corpus])
    assert rep.files_ingested == 5 and rep.chunks_embedded == rep.chunks_added > 0
    return RAG.open(base / "idx")


def test_question_answered_by_exactly_one_document_cites_it(real_rag):
    ans = real_rag.ask("Which checksum does the ZLIB data format specification define for detecting data corruption?")
    assert not ans.abstained, ans.text
    assert ans.citations, ans.text
    assert all(c.source.endswith("rfc1950-excerpt.txt") for c in ans.citations), [c.source for c in ans.citations]
    assert "adler" in (ans.text + " ".join(c.quote for c in ans.citations)).lower()
    for c in ans.citations:  # every citation resolves to a retrieved chunk and quotes its text exactly
        hit = next(h for h in ans.hits if h.chunk.id == c.chunk_id)
        assert c.quote and c.quote in hit.chunk.text


def test_stream_equals_ask(real_rag):
    q = "What is HTTP/2 multiplexing?"
    pieces = list(real_rag.stream(q))
    final = pieces[-1]
    assert isinstance(final, Answer)
    assert "".join(p for p in pieces[:-1]) == final.text
    assert real_rag.ask(q).text == final.text


def test_unrelated_question_abstains(real_rag):
    ans = real_rag.ask("What is the boiling point of liquid nitrogen in Kelvin?")
    assert ans.abstained and ans.citations == ()


def test_dense_search_finds_paraphrase(real_rag):
    hits = real_rag.search("how to turn on the newer protocol version in the client", top_k=3, mode="dense")
    assert hits[0].chunk.source.endswith("http2.md")


def test_cli_ask_json(real_rag):
    r = subprocess.run([sys.executable, "-m", "rag", "ask", "Who wrote the ZLIB specification?", "--index",
                        str(real_rag.index_dir), "--json"], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"question", "answer", "citations", "hits", "timings"}
    assert d["hits"] and d["timings"]["retrieval_s"] > 0
