"""End-to-end pipeline behaviour with the fake hash embedder: ingest, search, persistence,
incremental updates, delete and sync."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rag import RAG
from rag.errors import IndexNotFoundError


def _ingest(tmp_path, corpus, cfg, name="idx", **kw):
    rag = RAG.create(tmp_path / name, cfg)
    return rag, rag.ingest([corpus], **kw)


def test_ingest_search_and_round_trip(tmp_path, mini_corpus, hash_config):
    rag, rep = _ingest(tmp_path, mini_corpus, hash_config)
    assert rep.files_ingested == 5 and not rep.skipped
    assert rep.total_chunks == rep.chunks_added > 5
    hits = rag.search("ADLER-32 checksum data corruption", top_k=3)
    assert hits[0].chunk.source.endswith("rfc1950-excerpt.txt")
    assert [h.rank for h in hits] == [1, 2, 3]
    # every chunk's text is exactly its document span and records its position
    for h in hits:
        assert h.chunk.end - h.chunk.start == len(h.chunk.text)
    # reopen from disk: same results, same ids and scores
    again = RAG.open(tmp_path / "idx", hash_config)
    hits2 = again.search("ADLER-32 checksum data corruption", top_k=3)
    assert [(h.chunk.id, round(h.score, 6)) for h in hits] == [(h.chunk.id, round(h.score, 6)) for h in hits2]


def test_modes_and_scores(tmp_path, mini_corpus, hash_config):
    rag, _ = _ingest(tmp_path, mini_corpus, hash_config)
    bm = rag.search("HTTP/2 multiplexing", top_k=5, mode="bm25")
    assert bm and all(h.sparse_score is not None and h.sparse_score > 0 for h in bm)
    assert bm[0].chunk.source.endswith("http2.md")
    dn = rag.search("HTTP/2 multiplexing", top_k=5, mode="dense")
    assert all(-1.0 <= h.score <= 1.0 + 1e-6 for h in dn)
    hy = rag.search("HTTP/2 multiplexing", top_k=5, mode="hybrid")
    assert hy[0].chunk.source.endswith("http2.md")
    with pytest.raises(Exception):
        rag.search("x", mode="nope")


def _all_chunks(rag) -> dict:
    with rag.lease() as reader:
        return {c.id: c for c in reader.chunks(reader.chunk_ids().tolist())}


def test_unchanged_rerun_embeds_nothing_and_changed_file_only_its_chunks(tmp_path, mini_corpus, hash_config):
    rag, first = _ingest(tmp_path, mini_corpus, hash_config)
    second = rag.ingest([mini_corpus])
    assert second.changed is False and second.chunks_embedded == 0 and second.files_unchanged == 5
    gen = json.loads((tmp_path / "idx" / "manifest.json").read_text())["generation"]
    assert gen == first.generation  # no new generation written
    p = mini_corpus / "pep-0020.rst"
    p.write_text(p.read_text() + "\n\nA brand new closing paragraph about zebras and telescopes.\n")
    third = rag.ingest([mini_corpus])
    assert third.files_ingested == 1 and third.files_unchanged == 4
    n_pep = len([c for c in _all_chunks(rag).values() if c.source.endswith("pep-0020.rst")])
    # only the changed file's chunks are new; the unchanged ones of that file come from the cache
    assert third.chunks_added == n_pep
    assert third.chunks_embedded + third.chunks_from_cache == n_pep and third.chunks_embedded >= 1
    assert rag.search("zebras telescopes", top_k=1)[0].chunk.source.endswith("pep-0020.rst")


def test_renamed_file_costs_no_embedding(tmp_path, mini_corpus, hash_config):
    rag, first = _ingest(tmp_path, mini_corpus, hash_config)
    (mini_corpus / "http2.md").rename(mini_corpus / "http2-renamed.md")
    rep = rag.ingest([mini_corpus], sync=True)
    assert rep.chunks_embedded == 0 and rep.chunks_from_cache == rep.chunks_added > 0
    assert any(s.endswith("http2.md") for s in rep.files_removed)
    srcs = {h.chunk.source for h in rag.search("HTTP/2 multiplexing", top_k=20)}
    assert not any(s.endswith("/http2.md") for s in srcs)


def test_delete_keeps_ids_and_never_returns_deleted(tmp_path, mini_corpus, hash_config):
    rag, _ = _ingest(tmp_path, mini_corpus, hash_config)
    before = _all_chunks(rag)
    rep = rag.delete([str(mini_corpus / "http2.md")])
    assert rep.chunks_removed > 0
    after = _all_chunks(rag)
    assert all(not c.source.endswith("http2.md") for c in after.values())
    # ids of the remaining chunks did not shift
    for cid, c in after.items():
        assert before[cid].text == c.text
    for mode in ("bm25", "dense", "hybrid"):
        for h in rag.search("HTTP/2 binary format multiplexing streams", top_k=50, mode=mode):
            assert not h.chunk.source.endswith("http2.md")
    with rag.lease() as reader:
        assert reader.snapshot.dense.ntotal == reader.snapshot.sparse.n_docs == len(after)
    assert RAG(tmp_path / "idx").verify()["chunks"] == len(after)


def test_filters_return_top_k(tmp_path, mini_corpus, hash_config):
    rag, _ = _ingest(tmp_path, mini_corpus, hash_config)
    hits = rag.search("compression", top_k=3, filters={"source": "*.md"})
    assert len(hits) == 3 and all(h.chunk.source.endswith(".md") for h in hits)
    hits = rag.search("compression", top_k=2, mode="dense", filters={"source": "*rfc1950*"})
    assert len(hits) == 2 and all("rfc1950" in h.chunk.source for h in hits)
    assert rag.search("compression", filters={"source": "*.nothing"}) == []


def test_open_missing_index_is_clear(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no index here"):
        RAG.open(tmp_path / "nope")


def test_empty_and_no_documents(tmp_path, hash_config):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    (empty / "b.md").write_text("   \n\n")
    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([empty])
    assert rep.failed and len(rep.skipped) == 2
    rep2 = rag.ingest([tmp_path / "nothing-here"])
    assert rep2.skipped and rep2.skipped[0]["reason"]


def test_source_filter_relative_to_working_folder(tmp_path, mini_corpus, hash_config, monkeypatch):
    rag, _ = _ingest(tmp_path, mini_corpus, hash_config)
    monkeypatch.chdir(tmp_path)
    hits = rag.search("checksum format", top_k=10, filters={"source": "mini/*.txt"})
    assert hits and all(h.chunk.source.endswith(".txt") for h in hits)
    assert rag.search("checksum", top_k=10, filters={"source": "other/*.txt"}) == []
    named = rag.search("checksum", top_k=10, filters={"source": "http2.md"})
    assert named and all(h.chunk.source.endswith("/http2.md") for h in named)


def test_redaction_leaves_nothing_unredacted_on_disk(tmp_path, hash_config):
    corpus = tmp_path / "pii"
    corpus.mkdir()
    secret_mail, secret_card = "jane.doe@example.org", "4111 1111 1111 1111"
    (corpus / "contact.md").write_text(f"# Contact\n\nWrite to {secret_mail} or pay with card {secret_card} today.\n")
    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([corpus], redact=["emails", "cards"])
    assert rep.redactions == {"emails": 1, "cards": 1}
    hits = rag.search("contact card", top_k=3)
    assert "[EMAIL]" in hits[0].chunk.text and "[CARD]" in hits[0].chunk.text
    for p in (tmp_path / "idx").rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert secret_mail.encode() not in data and b"4111 1111" not in data, p


def test_document_aggregation_pools_chunks_per_document_and_fuses_once(tmp_path, mini_corpus, hash_config):
    """aggregate="document": each document once, represented by its best chunk, with scores equal
    to max-pooling the chunk lists by hand and fusing those (convex, z-score, config alpha)."""
    from rag.fusion import convex

    rag, _ = _ingest(tmp_path, mini_corpus, hash_config)
    q = "checksum compression data format"
    cfg = rag.config.retrieval
    docs = rag.search(q, top_k=5, aggregate="document")
    doc_ids = [h.chunk.doc_id for h in docs]
    assert len(doc_ids) == len(set(doc_ids)) == 5  # five documents in the corpus, each once

    def pooled(mode):
        best = {}
        for h in rag.search(q, top_k=1000, mode=mode):  # every matching chunk, best first
            best.setdefault(h.chunk.doc_id, (h.chunk.id, h.score))
        return best

    d, s = pooled("dense"), pooled("bm25")
    # the fused item of a document found by both retrievers carries the dense list's chunk id
    rep = {doc: cid for doc, (cid, _) in d.items()}
    dl = (np.array([cid for cid, _ in d.values()]), np.array([sc for _, sc in d.values()], np.float32))
    sl = (np.array([rep.get(doc, cid) for doc, (cid, _) in s.items()]), np.array([sc for _, sc in s.values()], np.float32))
    want = convex([dl, sl], weights=[cfg.alpha, 1 - cfg.alpha], norm=cfg.norm)
    assert [h.chunk.id for h in docs] == [cid for cid, _ in want[:5]]
    assert [round(h.score, 5) for h in docs] == [round(sc, 5) for _, sc in want[:5]]
    # a document-level bm25 search returns each document's best BM25 chunk
    bm = rag.search(q, top_k=5, mode="bm25", aggregate="document")
    assert [(h.chunk.id, round(h.score, 5)) for h in bm] == sorted(
        [(cid, round(sc, 5)) for cid, sc in s.values()], key=lambda x: -x[1])[: len(bm)]
