"""Segments of the local backend (rag/index/segments.py, segment_search.py): a commit writes a
small segment and tombstones, and search over all segments equals a full rebuild."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import RAG
from rag.config import BM25Config
from rag.errors import IndexFormatError
from rag.index import segments as segmod
from rag.index.backend import Filter
from rag.index.dense import DenseIndex
from rag.index.local import LocalIndex
from rag.index.sparse import BM25Index
from rag.testing import HashEmbedder

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("segment merge tombstone posting vector index query ranking checksum manifest crash repair "
         "document chunk corpus retrieval dense sparse fusion licence colour organise analysis protein "
         "cell gene mouse tumour vaccine dose trial patient risk model network").split()
QUERIES = ["segment merge", "tombstone posting checksum", "licence colour", "protein cell gene gene",
           "crash repair manifest", "patient risk trial dose", "nothing-matches-this"]


def _write_files(folder: Path, n: int, seed: int, prefix: str) -> list[Path]:
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:03d}.txt"
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(5, 60))]
        p.write_text(f"{prefix} note {i}\n\n" + " ".join(words) + ".\n", encoding="utf-8")
        out.append(p)
    return out


@pytest.fixture
def segmented(tmp_path, hash_config):
    """An index of 4 commits (4 segments), 2 of them with access groups, and deletions."""
    idx = tmp_path / "idx"
    rag = RAG(idx, hash_config)
    batches = []
    for b in range(4):
        files = _write_files(tmp_path / f"b{b}", 12, seed=b, prefix=f"b{b}-")
        rag.ingest([str(f) for f in files], acl=("team",) if b % 2 else ())
        batches.append(files)
    rag.delete([str(batches[0][0]), str(batches[2][3]), str(batches[2][4])])
    return idx, batches


def _reference(reader):
    """Full rebuild of the reader's live chunks: one BM25Index and one flat FAISS index."""
    snap = reader.snapshot
    texts_ids = list(snap.docstore.iter_index_texts())
    ids = np.asarray([i for i, _ in texts_ids], dtype=np.int64)
    bm25 = BM25Index.build([t for _, t in texts_ids], ids, BM25Config())
    vecs = reader.vectors()
    assert np.array_equal(reader.chunk_ids(), ids)
    dense = DenseIndex.build(vecs, ids, ann_threshold=10**9)
    return bm25, dense


def _same_ranking(ids, scores, ref_ids, ref_scores, what) -> None:
    """Same scores (1e-5) position by position and the same ids, where ids of exactly tied
    scores may come in another order (and a tie at the cut may keep other members)."""
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5, err_msg=str(what))
    groups: dict[float, tuple[set, set]] = {}
    for i, s, ri, rs in zip(ids.tolist(), np.round(scores, 5).tolist(), ref_ids.tolist(), np.round(ref_scores, 5).tolist()):
        groups.setdefault(s, (set(), set()))[0].add(i)
        groups.setdefault(rs, (set(), set()))[1].add(ri)
    last = float(np.round(scores[-1], 5)) if len(scores) else None
    for s, (a, b) in groups.items():
        if s != last:
            assert a == b, (what, s, a, b)


@pytest.mark.parametrize("fuse", [4, 2, 0], ids=["all-fused", "two-fused", "per-segment"])
@pytest.mark.parametrize("many_dead", [False, True], ids=["few-tombstones", "many-tombstones"])
def test_segment_search_equals_full_rebuild(segmented, monkeypatch, many_dead, fuse):
    from rag.index import segment_search

    if many_dead:  # the paths for segments with many tombstones: row masks, live ids as a FAISS filter
        monkeypatch.setattr(segment_search, "FEW_DEAD", 0)
        monkeypatch.setattr(segment_search, "OVERFETCH_MAX", 0)
    idx, _ = segmented
    rows = sorted(s["rows"] for s in json.loads((idx / "manifest.json").read_text())["segments"])
    # how many of the smallest segments are fused (dense: one flat index; BM25: one part); the
    # others are searched with their own index, tombstones and postings
    monkeypatch.setattr(segment_search, "FUSE_MAX_ROWS", sum(rows[:fuse]))
    emb = HashEmbedder(64)
    with LocalIndex(idx).lease() as r:
        m = r.manifest
        assert len(m["segments"]) == 4 and m["tombstones"] > 0 and m["format_version"] == 3
        segs = r.snapshot.segment_set
        fused = segs._fused_flat()
        assert (fused is not None and len(fused[1]) == fuse) if fuse else fused is None
        assert len(segs.parts) == (4 - fuse + 1 if fuse else 4)
        bm25, dense = _reference(r)
        filters = [Filter(), Filter(principals=()), Filter(principals=("team",)),
                   Filter(sources=(str(idx.parent / "b1") + "/*",))]
        for q in QUERIES:
            qv = emb.embed_query(q)
            for flt in filters:
                allowed = r.allowed(flt)
                for k in (10, 1000):  # 1000: every match, so tombstoned candidates must not fill the tail
                    got = r.sparse_search(q, k, flt)
                    ref_s, ref_i = bm25.search(q, k, allowed_ids=allowed)
                    assert got.ids.tolist() == ref_i.tolist(), (q, flt, k)
                    np.testing.assert_allclose(got.scores, ref_s, rtol=0, atol=1e-5)
                got = r.dense_search(qv, 10, flt)
                ref_s, ref_i = dense.search(qv.reshape(1, -1), 10, allowed_ids=allowed)
                keep = ref_i[0] >= 0
                _same_ranking(got.ids, got.scores, ref_i[0][keep], ref_s[0][keep], (q, flt))
        assert r.snapshot.sparse.avgdl == pytest.approx(bm25.avgdl, abs=1e-12)


def test_hybrid_equals_one_rebuilt_segment(segmented, hash_config):
    idx, _ = segmented
    rag = RAG(idx, hash_config)
    before = {(q, p): [(h.chunk.id, h.score) for h in rag.search(q, top_k=8, mode="hybrid", principals=p)]
              for q in QUERIES for p in (None, ("team",))}
    rag.repair()  # rebuilds everything into ONE segment from the stored vectors and docstore
    rag2 = RAG(idx, hash_config)
    with rag2.store.lease() as r:
        assert len(r.manifest["segments"]) == 1 and r.manifest["tombstones"] == 0
    for (q, p), hits in before.items():
        after = [(h.chunk.id, h.score) for h in rag2.search(q, top_k=8, mode="hybrid", principals=p)]
        assert [i for i, _ in after] == [i for i, _ in hits], q
        np.testing.assert_allclose([s for _, s in after], [s for _, s in hits], atol=1e-5)


def test_merge_keeps_results_identical(segmented, monkeypatch, hash_config):
    idx, _ = segmented
    index = LocalIndex(idx)
    emb = HashEmbedder(64)

    def results():
        with index.lease() as r:
            return ([(r.sparse_search(q, 10, Filter()).ids.tolist(), r.sparse_search(q, 10, Filter()).scores.tolist())
                     for q in QUERIES],
                    [r.dense_search(emb.embed_query(q), 10, Filter(principals=())).ids.tolist() for q in QUERIES],
                    len(r.manifest["segments"]), r.manifest["tombstones"])

    sparse0, dense0, n_seg, n_dead = results()
    assert n_seg == 4 and n_dead > 0
    assert segmod.plan_merges([10, 10, 10], [10, 10, 10]) == []
    monkeypatch.setattr(segmod, "MERGE_FACTOR", 3)
    assert segmod.plan_merges([10, 10, 10, 50_000], [10, 12, 10, 50_000]) == [(0, 3)]
    with index.writer() as w:  # a commit with no changes: the merge policy runs
        w.commit()
    sparse1, dense1, n_seg1, n_dead1 = results()
    assert n_seg1 == 1 and n_dead1 == 0  # four level-0 segments merged into one, tombstones purged
    assert dense1 == dense0
    for (i0, s0), (i1, s1) in zip(sparse0, sparse1):
        assert i0 == i1
        np.testing.assert_allclose(s0, s1, atol=1e-5)
    on_disk = sorted(p.name for p in (idx / "segments").iterdir())
    listed = set()
    for g in idx.glob("gen-*"):
        listed |= set(json.loads((g / "segments.json").read_text()))
    assert set(on_disk) == listed  # the merged-away segments stay while an older kept generation lists them
    assert RAG(idx, hash_config).verify()["chunks"] > 0


def test_build_postings_numpy_and_scipy_transposes_are_identical(monkeypatch):
    rnd = random.Random(3)
    texts = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(0, 40))) for _ in range(300)] + ["", "licence"]
    cfg = BM25Config()
    monkeypatch.setattr(segmod, "SMALL_POSTINGS", 10**9)
    small, vocab_a, _ = segmod.build_postings(texts, cfg)
    monkeypatch.setattr(segmod, "SMALL_POSTINGS", 0)
    big, vocab_b, _ = segmod.build_postings(texts, cfg)
    assert vocab_a == vocab_b and small.keys() == big.keys()
    for k in small:
        assert small[k].dtype == big[k].dtype and np.array_equal(small[k], big[k]), k
    assert small["indptr"][-1] == small["indices"].size > 0


def test_deleted_half_segment_is_rewritten():
    assert segmod.plan_merges([100, 40], [100, 100]) == [(1, 2)]
    assert segmod.plan_merges([100, 60], [100, 100]) == []
    assert segmod.level(10) == segmod.level(999) == 0 and segmod.level(10_000) == 1


_CRASH = """
import os, sys
from rag import RAG
from rag.config import RagConfig
import rag.index.manifest as m
real = m.write_json_atomic
def dying(path, data):
    if path.name == "manifest.json":
        os._exit(9)  # killed after the segment and generation folder are written, before the switch
    real(path, data)
m.write_json_atomic = dying
cfg = RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}})
RAG(sys.argv[1], cfg).ingest([sys.argv[2]])
"""


def test_crash_between_segment_and_manifest_keeps_old_state(segmented, tmp_path, hash_config):
    idx, _ = segmented
    before_manifest = (idx / "manifest.json").read_bytes()
    rag = RAG(idx, hash_config)
    before = [(h.chunk.id, round(h.score, 6)) for h in rag.search("segment merge", top_k=5)]
    new = _write_files(tmp_path / "late", 3, seed=9, prefix="late-")
    r = subprocess.run([sys.executable, "-c", _CRASH, str(idx), str(new[0].parent)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr
    assert (idx / "manifest.json").read_bytes() == before_manifest
    gen = json.loads(before_manifest)["generation"]
    assert (idx / f"gen-{gen + 1:06d}").is_dir()  # the debris exists ...
    assert RAG(idx).verify()["generation"] == gen
    assert [(h.chunk.id, round(h.score, 6)) for h in RAG(idx, hash_config).search("segment merge", top_k=5)] == before
    RAG(idx, hash_config).ingest([str(new[0].parent)])  # ... and the next writer removes it first
    m = json.loads((idx / "manifest.json").read_text())
    assert m["generation"] == gen + 1
    listed = {s["name"] for s in m["segments"]}
    on_disk = {p.name for p in (idx / "segments").iterdir()}
    kept = set().union(*(json.loads((g / "segments.json").read_text()) for g in idx.glob("gen-*")))
    assert listed <= on_disk == kept


def test_verify_detects_damaged_segment_and_repair_rebuilds(segmented, hash_config):
    idx, _ = segmented
    rag = RAG(idx, hash_config)
    before = [(h.chunk.id, round(h.score, 5)) for h in rag.search("tombstone posting checksum", top_k=6)]
    m = json.loads((idx / "manifest.json").read_text())
    seg = m["segments"][1]["name"]
    for name in ("postings.npz", "dense.faiss"):
        p = idx / "segments" / seg / name
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, other content
        p.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=seg):
        RAG(idx).verify()
    res = RAG(idx, hash_config).repair()
    assert RAG(idx).verify()["chunks"] == res["chunks"] == m["counts"]["chunks"]
    after = [(h.chunk.id, round(h.score, 5)) for h in RAG(idx, hash_config).search("tombstone posting checksum", top_k=6)]
    assert after == before
    # a damaged primary file (stored vectors) cannot be rebuilt: repair refuses, naming it
    m2 = json.loads((idx / "manifest.json").read_text())
    vec = idx / "segments" / m2["segments"][0]["name"] / "vectors.npy"
    data = bytearray(vec.read_bytes())
    data[-3] ^= 0xFF
    vec.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="vectors.npy"):
        RAG(idx, hash_config).repair()


def test_cli_verify_repair_repairs_only_when_the_check_fails(segmented, hash_config):
    from click.testing import CliRunner

    from rag.cli import cli

    idx, _ = segmented
    before = [(h.chunk.id, round(h.score, 5)) for h in RAG(idx, hash_config).search("tombstone posting checksum", top_k=6)]
    gen = json.loads((idx / "manifest.json").read_text())["generation"]
    out = CliRunner().invoke(cli, ["verify", "--repair", "--index", str(idx)])
    assert out.exit_code == 0 and "is consistent" in out.output, out.output  # nothing to repair: no new generation
    assert json.loads((idx / "manifest.json").read_text())["generation"] == gen
    seg = json.loads((idx / "manifest.json").read_text())["segments"][1]["name"]
    p = idx / "segments" / seg / "postings.npz"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=seg):  # plain verify reports it (the CLI as one line)
        CliRunner().invoke(cli, ["verify", "--index", str(idx)], catch_exceptions=False)
    out = CliRunner().invoke(cli, ["verify", "--repair", "--index", str(idx)])
    assert out.exit_code == 0 and "Repaired" in out.output, out.output
    assert RAG(idx).verify()["chunks"] > 0
    assert [(h.chunk.id, round(h.score, 5)) for h in RAG(idx, hash_config).search("tombstone posting checksum", top_k=6)] == before


def test_format2_index_opens_and_becomes_segment_zero(tmp_path, hash_config):
    """An index written by the previous format (one generation folder) opens as it is; its next
    commit converts it into segment 0 plus the new segment, with the same results."""
    from rag.index.store import IndexStore

    idx = tmp_path / "old"
    rag = RAG(idx, hash_config)
    rag.ingest([str(f) for f in _write_files(tmp_path / "a", 10, seed=3, prefix="a-")])
    with LocalIndex(idx).lease() as r:  # rewrite the same state the old way (Transaction.commit)
        vecs, ids = r.vectors().copy(), r.chunk_ids()
    store = IndexStore(idx)
    with store.lock():
        base = store.open()
        tx = store.begin(base)
        m = tx.commit(np.zeros(0, np.int64), np.zeros((0, 64), np.float32), dim=64, embedder=dict(base.manifest["embedder"]),
                      config=base.manifest["config"], bm25_config=BM25Config(), ann_threshold=50_000, rebuild_vectors=vecs)
        base.close()
    assert "segments" not in m and (idx / m["gen_dir"] / "sparse").is_dir()
    rag = RAG(idx, hash_config)
    before = [(h.chunk.id, round(h.score, 5)) for h in rag.search("protein cell", top_k=5)]
    assert before and all(i in set(ids.tolist()) for i, _ in before)
    rag.ingest([str(f) for f in _write_files(tmp_path / "b", 2, seed=4, prefix="b-")])
    with LocalIndex(idx).lease() as r:
        assert len(r.manifest["segments"]) == 2 and r.manifest["segments"][0]["dense"] == m["dense"]["kind"] == "flat"
        bm25, dense = _reference(r)
        got = r.sparse_search("protein cell", 10, Filter())
        ref_s, ref_i = bm25.search("protein cell", 10)
        assert got.ids.tolist() == ref_i.tolist()
        np.testing.assert_allclose(got.scores, ref_s, atol=1e-5)
    assert RAG(idx).verify()["chunks"] > len(ids)


def test_kept_generation_reads_its_own_segments_after_merges(segmented, monkeypatch, hash_config):
    from rag.index.versions import GenerationIndex

    idx, _ = segmented
    old_gen = json.loads((idx / "manifest.json").read_text())["generation"]
    with LocalIndex(idx).lease() as r:
        want = r.sparse_search("segment merge", 5, Filter()).ids.tolist()
    monkeypatch.setattr(segmod, "MERGE_FACTOR", 2)
    index = LocalIndex(idx)
    with index.writer() as w:
        w.commit()
    g = GenerationIndex(idx, old_gen)
    try:
        with g.lease() as r:
            assert r.sparse_search("segment merge", 5, Filter()).ids.tolist() == want
    finally:
        g.close()


def test_rollback_references_segments(segmented, hash_config):
    from rag.index.versions import rollback

    idx, _ = segmented
    m_old = json.loads((idx / "manifest.json").read_text())
    rag = RAG(idx, hash_config)
    want = [(h.chunk.id, round(h.score, 5)) for h in rag.search("protein cell", top_k=5)]
    rag.ingest([str(f) for f in _write_files(idx.parent / "more", 3, seed=7, prefix="more-")])
    m = rollback(idx, m_old["generation"])
    assert m["segments"] == m_old["segments"]
    assert all(not k.startswith(m["gen_dir"] + "/seg-") for k in m["files"])  # not linked into the gen folder
    assert sorted(k for k in m["files"] if k.startswith("segments/")) == sorted(k for k in m_old["files"] if k.startswith("segments/"))
    assert RAG(idx).verify()["chunks"] == m_old["counts"]["chunks"]
    assert [(h.chunk.id, round(h.score, 5)) for h in RAG(idx, hash_config).search("protein cell", top_k=5)] == want


def test_version_sizes_count_shared_segments_once(segmented):
    from rag.index.versions import disk_usage, list_versions

    idx, _ = segmented
    seg_bytes = sum(p.stat().st_size for p in (idx / "segments").rglob("*") if p.is_file())
    vs = list_versions(idx)
    assert len(vs) >= 3
    gen_bytes = sum(p.stat().st_size for g in idx.glob("gen-*") for p in g.rglob("*") if p.is_file())
    assert sum(v["bytes"] for v in vs) == seg_bytes + gen_bytes == disk_usage(idx)["bytes"]
    cur = idx / json.loads((idx / "manifest.json").read_text())["gen_dir"]
    cur_bytes = sum(p.stat().st_size for p in cur.rglob("*") if p.is_file())
    assert disk_usage(idx)["current_bytes"] == seg_bytes + cur_bytes  # no merge yet: it lists every segment


def test_cli_info_and_optimize(segmented, hash_config):
    from click.testing import CliRunner

    from rag.cli import cli

    idx, _ = segmented
    before = [(h.chunk.id, round(h.score, 5)) for h in RAG(idx, hash_config).search("patient risk", top_k=5)]
    out = CliRunner().invoke(cli, ["info", "--index", str(idx)])
    assert out.exit_code == 0 and "segments: 4 (" in out.output, out.output
    out = CliRunner().invoke(cli, ["optimize", "--index", str(idx)])
    assert out.exit_code == 0 and "one segment of" in out.output, out.output
    m = json.loads((idx / "manifest.json").read_text())
    assert len(m["segments"]) == 1 and m["tombstones"] == 0
    assert [(h.chunk.id, round(h.score, 5)) for h in RAG(idx, hash_config).search("patient risk", top_k=5)] == before


def test_verify_at_kept_generation_checks_its_segments(segmented):
    from rag.index.versions import list_versions, verify_generation

    idx, _ = segmented
    old = list_versions(idx)[-2]["generation"]
    m = json.loads((idx / "versions" / f"gen-{old:06d}.json").read_text())["manifest"]
    assert verify_generation(idx, old)["chunks"] == m["counts"]["chunks"]
    p = idx / "segments" / m["segments"][0]["name"] / "vectors.npy"
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="vectors.npy"):
        verify_generation(idx, old)
