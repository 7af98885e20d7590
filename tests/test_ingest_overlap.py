"""Overlapped ingest (loading and planning in a producer thread, embedding in windows): the same
index, ids, duplicates and report as one sequential pass; failing loaders still reported and
counted; a producer error surfaces and changes nothing."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rag.ingest import Indexer
from rag.ingest_stream import background
from rag.pipeline import RAG

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def _corpus(root: Path) -> tuple[Path, list[str], list[dict]]:
    """20 real SciFact abstracts, one file each, plus planted exact / near / partial copies,
    a JSONL of records (two repeated), markdown, HTML, and files no loader can read."""
    rng = random.Random(3)
    corpus = root / "corpus"
    corpus.mkdir()
    recs = [json.loads(x) for x in (DATA / "docs" / "beir" / "corpus.jsonl").read_text().splitlines()]
    for r in recs:
        (corpus / f"a{r['_id']}.txt").write_text(r["title"] + "\n\n" + r["text"] + "\n")
    names = sorted(p.name for p in corpus.iterdir())
    words = (corpus / names[1]).read_text().split()
    for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
        words[i] = "zz" + words[i][::-1]
    (corpus / "copy_exact.txt").write_text((corpus / names[0]).read_text())
    (corpus / "copy_near.txt").write_text(" ".join(words))
    (corpus / "z_upper.txt").write_text((corpus / names[3]).read_text().upper())
    (corpus / "part.txt").write_text((corpus / names[5]).read_text().split("\n\n")[1][:600] + "\n\nAnd an unrelated line.\n")
    (corpus / "recs.jsonl").write_text("\n".join(json.dumps({"id": f"r{i}", "title": r["title"], "text": r["text"]})
                                                 for i, r in enumerate(recs[:6] + recs[:2])) + "\n")
    shutil.copy(DATA / "docs" / "notes.md", corpus / "notes.md")
    (corpus / "notes_plus.md").write_text((DATA / "docs" / "notes.md").read_text() + "\n\n# Appendix\n\n"
                                          + "\n\n".join(r["text"] for r in recs[10:13]) + "\n")  # duplicate chunks
    shutil.copy(DATA / "docs" / "page.html", corpus / "page.html")
    (corpus / "bad.pdf").write_bytes(b"%PDF-1.4 not really")
    (corpus / "empty.txt").write_text("")
    (corpus / "breaks.json").write_text(json.dumps([{"id": "x1", "text": recs[7]["text"]}, {"id": "x2", "text": "zlib notes"}]))
    return corpus, names, recs


def _indexer(rag: RAG, overlap: bool, group: int, window: int, queue: int = 2) -> Indexer:
    ix = Indexer(rag.store, rag.config, rag.embedder, cache_path=rag.index_dir / "embcache.sqlite",
                 index_dir=str(rag.index_dir))
    ix.overlap, ix.group_docs, ix.window_texts, ix.queue_groups = overlap, group, window, queue
    return ix


def _state(index_dir: Path, report, root: Path) -> dict:
    """Everything an ingest decides, with the run's folder replaced by 'R'."""
    rag = RAG.open(index_dir)
    with rag.lease() as reader:
        docs = [(d.key, d.alias_of, [(x.kept_key, x.kind, x.kept_chunk, x.level, x.similarity) for x in d.duplicates],
                 d.n_chunks, d.acl) for d in sorted(reader.documents(), key=lambda d: d.key)]
        ids = sorted(int(i) for i in reader.snapshot.docstore.chunk_ids())
        chunks = [(c.id, c.doc_id, c.ordinal, c.start, c.end, c.text) for c in reader.chunks(ids)]
        vectors = np.asarray(reader.vectors(), dtype=np.float32).copy()
    rep = {k: v for k, v in report.to_dict().items() if k not in ("seconds", "commit_seconds", "index_dir")}
    text = json.dumps({"docs": docs, "chunks": chunks, "report": rep}).replace(str(root), "R")
    return {"json": json.loads(text), "vectors": vectors}


def _run_scenario(tmp_path: Path, hash_config, **settings) -> list[dict]:
    """First ingest; then an original with aliases changes (its aliases come back), a file
    goes (--sync), a file is new and an indexed file breaks; then a delete."""
    import os

    root = tmp_path / "run"
    root.mkdir(parents=True)
    corpus, names, recs = _corpus(root)
    index_dir = root / "ix"
    states = []
    cwd = os.getcwd()
    os.chdir(root)
    try:
        rag = RAG.create(index_dir, hash_config)
        states.append(_state(index_dir, _indexer(rag, **settings).ingest(["corpus"]), root))
        (corpus / names[0]).write_text("Completely new text about adler checksums and zlib streams.\n")
        (corpus / names[9]).unlink()
        (corpus / "new.md").write_text("# New\n\nA new file about deflate.\n\n" + recs[3]["text"] + "\n")
        (corpus / "breaks.json").write_text("{ not json")
        rag = RAG.open(index_dir)
        states.append(_state(index_dir, _indexer(rag, **settings).ingest(["corpus"], sync=True), root))
        rag = RAG.open(index_dir)
        states.append(_state(index_dir, _indexer(rag, **settings).delete([str(corpus / names[1])]), root))
    finally:
        os.chdir(cwd)
    return states


def test_overlapped_ingest_equals_one_sequential_pass(tmp_path, hash_config):
    # reference: everything planned in one group, embedded in one window, in this thread
    sequential = _run_scenario(tmp_path / "seq", hash_config, overlap=False, group=10**9, window=10**9)
    # producer thread, groups of 3 documents, windows of 7 texts, 2 groups of look-ahead
    overlapped = _run_scenario(tmp_path / "ovl", hash_config, overlap=True, group=3, window=7)
    for seq, ovl in zip(sequential, overlapped):
        assert ovl["json"]["docs"] == seq["json"]["docs"]
        assert ovl["json"]["chunks"] == seq["json"]["chunks"]
        assert np.array_equal(ovl["vectors"], seq["vectors"])
        rs, ro = seq["json"]["report"], ovl["json"]["report"]
        # an indexed file that breaks makes the overlapped run start again: the vectors its
        # first attempt made then come from the embedding cache
        assert ro["chunks_embedded"] + ro["chunks_from_cache"] == rs["chunks_embedded"] + rs["chunks_from_cache"]
        assert {k: v for k, v in ro.items() if not k.startswith("chunks_")} == \
            {k: v for k, v in rs.items() if not k.startswith("chunks_")}
        assert (ro["chunks_added"], ro["chunks_removed"]) == (rs["chunks_added"], rs["chunks_removed"])
    first, second, deleted = (s["json"]["report"] for s in sequential)
    # the scenario exercises what it should
    assert {d["kind"] for d in first["duplicates"]} == {"exact", "near"}
    assert {d["level"] for d in first["duplicates"]} == {"document", "chunk"}
    assert second["revived"] and second["files_removed"] and deleted["revived"]
    assert first["chunks_embedded"] > 7 * 5  # many windows


def test_failing_loaders_are_reported_counted_and_lose_nothing(tmp_path, hash_config):
    states = _run_scenario(tmp_path, hash_config, overlap=True, group=2, window=5)
    first, second = (s["json"]["report"] for s in states[:2])
    reasons = {s["source"].rsplit("/", 1)[-1]: s["reason"] for s in first["skipped"]}
    assert set(reasons) == {"bad.pdf", "empty.txt"} and reasons["empty.txt"] == "empty file"
    assert first["files_seen"] == 31 and first["files_ingested"] == 29 and not first["failed"]
    skipped = [s["source"].rsplit("/", 1)[-1] for s in second["skipped"]]
    assert skipped == ["bad.pdf", "breaks.json", "empty.txt"]  # in file order
    assert second["skipped"][1]["reason"].startswith("invalid JSON")
    assert second["files_ingested"] == 2 and second["files_unchanged"] == 26  # the changed original and new.md
    # breaks.json failed after it was indexed: its documents are still there (x1, an alias of
    # the original that changed, comes back from its stored text with its own chunks)
    docs_before = {d[0]: d for d in states[0]["json"]["docs"]}
    docs_after = {d[0]: d for d in states[1]["json"]["docs"]}
    assert docs_after["R/corpus/breaks.json#x2"] == docs_before["R/corpus/breaks.json#x2"]
    assert docs_before["R/corpus/breaks.json#x1"][1] is not None and docs_before["R/corpus/breaks.json#x1"][3] == 0
    assert docs_after["R/corpus/breaks.json#x1"][1] is None and docs_after["R/corpus/breaks.json#x1"][3] > 0
    assert "R/corpus/breaks.json#x1" in second["revived"]


def test_producer_error_surfaces_and_changes_nothing(tmp_path, hash_config, monkeypatch):
    from rag.ingest_plan import Planner

    corpus, _, _ = _corpus(tmp_path)
    rag = RAG.create(tmp_path / "ix", hash_config)
    rag.ingest([corpus / "notes.md"])
    before = rag.generation
    real_plan, calls = Planner.plan, []

    def failing_plan(self, items):
        calls.append(len(items))
        if len(calls) == 3:
            raise RuntimeError("planner bug")
        return real_plan(self, items)

    monkeypatch.setattr(Planner, "plan", failing_plan)
    with pytest.raises(RuntimeError, match="planner bug"):
        _indexer(RAG.open(tmp_path / "ix"), overlap=True, group=2, window=3).ingest([corpus])
    assert RAG.open(tmp_path / "ix").generation == before
    assert not [t for t in threading.enumerate() if t.name == "rag-ingest-producer"]


def test_background_keeps_order_reraises_and_stops_early():
    assert list(background(iter(range(100)), maxsize=3)) == list(range(100))

    def failing():
        yield 1
        yield 2
        raise ValueError("boom")

    got = []
    with pytest.raises(ValueError, match="boom"):
        for x in background(failing(), maxsize=1):
            got.append(x)
    assert got == [1, 2]
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    for x in background(endless(), maxsize=2):
        if x == 5:
            break
    n = len(produced)
    assert n <= 5 + 2 + 2  # at most the queue and one in hand ahead
    assert not [t for t in threading.enumerate() if t.name == "rag-ingest-producer"]
    assert len(produced) == n  # it stopped


def test_adding_one_small_file_imports_no_minhash_library(tmp_path):
    (tmp_path / "one.txt").write_text("The Adler-32 checksum was designed by Mark Adler for zlib.\n")
    (tmp_path / "two.txt").write_text("Deflate combines LZ77 and Huffman coding.\n")
    code = ("import sys; from rag import RAG; from rag.config import RagConfig; "
            "cfg = RagConfig.from_dict({'embedding': {'model': 'testing:hash-64'}}); "
            f"RAG.create({str(tmp_path / 'ix')!r}, cfg).ingest([{str(tmp_path / 'one.txt')!r}]); "
            f"r = RAG.open({str(tmp_path / 'ix')!r}).ingest([{str(tmp_path / 'two.txt')!r}]); "
            "print(r.chunks_added, r.total_chunks, 'datasketch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["1", "2", "False"]
