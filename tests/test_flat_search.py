"""Flat segments are searched in numpy over their memory-mapped vectors.npy
(rag.index.dense.NumpyFlatIndex, Segment.flat): the results of FAISS's flat index, ties by id,
and a process that searches only flat segments never imports faiss."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import RAG
from rag.config import RagConfig
from rag.index.backend import Filter
from rag.index.dense import DenseIndex, NumpyFlatIndex
from rag.index.local import LocalIndex
from rag.testing import HashEmbedder

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("segment merge tombstone posting vector index query ranking checksum manifest crash repair "
         "document chunk corpus retrieval dense sparse fusion protein cell gene mouse patient risk").split()


def _gaussian(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _quarters(rng, n, d):
    """Unit rows with four entries of +-0.5: every dot product is an exact multiple of 0.25, so
    many scores tie exactly whatever the summation order."""
    x = np.zeros((n, d), np.float32)
    for r in range(n):
        x[r, rng.choice(d, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return x


def _cases(ids):
    return [{}, {"allowed_ids": ids[::9]}, {"allowed_ids": ids[::2]}, {"allowed_ids": ids[3:5]},
            {"allowed_ids": np.array([ids[0] - 1, ids[4], ids[-1] + 1], np.int64)}, {"allowed_ids": np.zeros(0, np.int64)},
            {"excluded_ids": ids[::5]}, {"excluded_ids": ids[1:2]}, {"excluded_ids": np.zeros(0, np.int64)}]


def _brute(x, ids, q, k, allowed_ids=None, excluded_ids=None):
    """Exact top k in float64, score descending then id ascending, padded with -inf / -1."""
    q = np.atleast_2d(q).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    ok = np.ones(ids.size, bool)
    if allowed_ids is not None:
        ok &= np.isin(ids, allowed_ids)
    elif excluded_ids is not None:
        ok &= ~np.isin(ids, excluded_ids)
    scores = np.full((q.shape[0], k), -np.inf, np.float32)
    out = np.full((q.shape[0], k), -1, np.int64)
    for r in range(q.shape[0]):
        s = x.astype(np.float64) @ q[r]
        cand = np.flatnonzero(ok)
        order = cand[np.lexsort((ids[cand], -s[cand]))][:k]
        scores[r, :order.size], out[r, :order.size] = s[order], ids[order]
    return scores, out


def test_numpy_flat_equals_faiss_flat_without_ties():
    rng = np.random.default_rng(0)
    x = _gaussian(rng, 500, 48)
    ids = np.sort(rng.choice(10**7, 500, replace=False)).astype(np.int64)
    q = rng.standard_normal((4, 48)).astype(np.float32) * 3.0  # unnormalised queries are normalised
    faiss_flat, flat = DenseIndex.build(x, ids, ann_threshold=10**9), NumpyFlatIndex(x, ids)
    assert faiss_flat.kind == flat.kind == "flat" and flat.ntotal == 500 and flat.dim == 48
    for k in (1, 10, 137, 500, 800):
        for kw in _cases(ids):
            ref_s, ref_i = faiss_flat.search(q, k, **kw)
            got_s, got_i = flat.search(q, k, **kw)
            assert got_s.dtype == np.float32 and got_i.dtype == np.int64 and got_s.shape == got_i.shape == (4, k)
            np.testing.assert_array_equal(got_i, ref_i, err_msg=f"{k} {kw}")
            np.testing.assert_allclose(got_s, ref_s, rtol=0, atol=1e-6, err_msg=f"{k} {kw}")
    s1, i1 = flat.search(q[0], 5)  # a (d,) query is one row
    np.testing.assert_array_equal(i1, flat.search(q[:1], 5)[1])


def test_numpy_flat_ties_by_id_and_faiss_agrees_up_to_tie_order():
    rng = np.random.default_rng(1)
    x = _quarters(rng, 300, 16)
    x[150:160] = x[0]  # exact duplicates as well
    ids = np.sort(rng.choice(10**6, 300, replace=False)).astype(np.int64)
    q = _quarters(rng, 5, 16)
    faiss_flat, flat = DenseIndex.build(x, ids, ann_threshold=10**9), NumpyFlatIndex(x, ids)
    for k in (1, 3, 10, 50, 299, 300, 400):
        for kw in _cases(ids):
            got_s, got_i = flat.search(q, k, **kw)
            want_s, want_i = _brute(x, ids, q, k, **kw)
            np.testing.assert_array_equal(got_i, want_i, err_msg=f"{k} {kw}")  # ties: ascending id
            np.testing.assert_array_equal(got_s, want_s)
            ref_s, ref_i = faiss_flat.search(q, k, **kw)
            np.testing.assert_allclose(got_s, ref_s, rtol=0, atol=1e-6, err_msg=f"{k} {kw}")
            for r in range(q.shape[0]):  # FAISS orders ties its own way: same ids per score above the cut
                cut = got_s[r, -1]
                for s in set(got_s[r].tolist()) - {cut}:
                    assert set(got_i[r][got_s[r] == s]) == set(ref_i[r][ref_s[r] == s]), (k, kw, r, s)
                assert ((got_i[r] >= 0).sum()) == ((ref_i[r] >= 0).sum())
    # ids in any row order: still best first, ties by ascending id
    perm = rng.permutation(300)
    shuffled = NumpyFlatIndex(x[perm], ids[perm])
    for kw in _cases(ids):
        for k in (7, 300):
            got = shuffled.search(q, k, **kw)
            np.testing.assert_array_equal(got[1], flat.search(q, k, **kw)[1])


def test_numpy_flat_errors_and_empty():
    flat = NumpyFlatIndex(np.eye(3, dtype=np.float32), np.array([4, 5, 6]))
    with pytest.raises(ValueError, match="top_k"):
        flat.search(np.ones(3, np.float32), 0)
    with pytest.raises(ValueError, match="shape"):
        flat.search(np.ones((1, 4), np.float32), 2)
    with pytest.raises(ValueError):
        NumpyFlatIndex(np.eye(3, dtype=np.float32), np.array([1, 2]))
    s, i = NumpyFlatIndex(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)).search(np.ones(3), 2)
    assert i.tolist() == [[-1, -1]] and np.isneginf(s).all()
    s, i = flat.search(np.array([0.0, 2.0, 0.0]), 5)
    assert i.tolist() == [[5, 4, 6, -1, -1]] and s[0, 0] == pytest.approx(1.0) and np.isneginf(s[0, 3:]).all()


# ---------------------------------------------------------------------------- real indexes
def _config(**retrieval):
    return RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"},
                                **({"retrieval": retrieval} if retrieval else {})})


def _files(folder: Path, n: int, seed: int, prefix: str) -> list[str]:
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{prefix}{i:03d}.txt"
        p.write_text(f"{prefix} note {i}\n\n" + " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(5, 40))) + ".\n",
                     encoding="utf-8")
        out.append(str(p))
    return out


def _index(tmp_path: Path, ann_threshold: int) -> Path:
    """Four commits (the first of 12 files, then 3 each), two with an access group, and
    deletions in two segments. ``ann_threshold`` 8: the first segment is HNSW, the rest flat."""
    idx = tmp_path / f"idx-{ann_threshold}"
    rag = RAG(idx, _config(ann_threshold=ann_threshold))
    batches = [_files(tmp_path / f"b{b}", 12 if b == 0 else 3, seed=b, prefix=f"b{b}-") for b in range(4)]
    for b, files in enumerate(batches):
        rag.ingest(files, acl=("team",) if b % 2 else ())
    rag.delete([batches[0][1], batches[2][0]])
    return idx


def _same_up_to_tie_order(ids, scores, ref_ids, what) -> None:
    """Same ids per (rounded) score, except which members of a group tied at the cut are kept
    (FAISS orders ties its own way)."""
    assert len(ids) == len(ref_ids), what
    rounded = np.round(scores, 5)
    for s in set(rounded.tolist()) - {rounded[-1]}:
        assert set(ids[rounded == s].tolist()) == set(ref_ids[rounded == s].tolist()), (what, s)


_SEARCH = """
import json, sys
from rag import RAG
from rag.config import RagConfig
from rag.index import segment_search
segment_search.FUSE_MAX_ROWS = int(sys.argv[2])
cfg = RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}})
rag = RAG(sys.argv[1], cfg)
hits = [[q, mode, p, [h.chunk.id for h in rag.search(q, top_k=6, mode=mode, principals=p)]]
        for q in ("segment merge tombstone", "protein cell patient") for mode in ("dense", "hybrid") for p in (None, ["team"])]
print(json.dumps({"faiss": "faiss" in sys.modules, "hits": hits}))
"""


def _search_in_subprocess(idx: Path, fuse_max_rows: int) -> dict:
    r = subprocess.run([sys.executable, "-c", _SEARCH, str(idx), str(fuse_max_rows)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fuse_max_rows", [20_000, 0], ids=["fused", "per-segment"])
def test_search_over_flat_segments_never_imports_faiss(tmp_path, fuse_max_rows):
    idx = _index(tmp_path, ann_threshold=50_000)
    m = json.loads((idx / "manifest.json").read_text())
    assert len(m["segments"]) == 4 and m["tombstones"] > 0 and {s["dense"] for s in m["segments"]} == {"flat"}
    out = _search_in_subprocess(idx, fuse_max_rows)
    assert out["faiss"] is False
    rag = RAG(idx, _config())  # the same answers in this process
    for q, mode, p, ids in out["hits"]:
        assert ids and [h.chunk.id for h in rag.search(q, top_k=6, mode=mode, principals=p)] == ids, (q, mode, p)


def test_hnsw_segment_still_uses_faiss_and_mixed_search_is_exact(tmp_path, monkeypatch):
    """An HNSW segment beside flat ones: FAISS for it (the subprocess check above can see an
    import), numpy for the others, and dense search equal to one exact index over the live rows."""
    from rag.index import segment_search

    idx = _index(tmp_path, ann_threshold=8)
    kinds = [s["dense"] for s in json.loads((idx / "manifest.json").read_text())["segments"]]
    assert kinds == ["hnsw", "flat", "flat", "flat"]
    assert _search_in_subprocess(idx, 20_000)["faiss"] is True
    emb = HashEmbedder(64)
    for fuse in (20_000, 0):
        monkeypatch.setattr(segment_search, "FUSE_MAX_ROWS", fuse)
        with LocalIndex(idx).lease() as r:
            segs = r.snapshot.segment_set
            assert (segs._fused_flat() is not None) == bool(fuse)
            assert segs.segments[0]._dense is not None and all(s._dense is None for s in segs.segments[1:])
            ids = r.chunk_ids()
            ref = DenseIndex.build(r.vectors(), ids, ann_threshold=10**9)
            for q in ("segment merge tombstone", "protein cell patient", "risk"):
                qv = emb.embed_query(q)
                for flt in (Filter(), Filter(principals=()), Filter(principals=("team",))):
                    allowed = r.allowed(flt)
                    got = r.dense_search(qv, 10, flt)
                    ref_s, ref_i = ref.search(qv.reshape(1, -1), 10, allowed_ids=allowed)
                    keep = ref_i[0] >= 0
                    np.testing.assert_allclose(got.scores, ref_s[0][keep], rtol=0, atol=1e-6)
                    _same_up_to_tie_order(got.ids, got.scores, ref_i[0][keep], (q, flt, fuse))
