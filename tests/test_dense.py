"""Dense FAISS index: exact flat results, HNSW recall, filters, persistence, damaged files."""

from __future__ import annotations

import numpy as np
import pytest

from rag.errors import IndexFormatError
from rag.index.dense import DenseIndex

faiss = pytest.importorskip("faiss")


def clustered(n: int, n_queries: int, d: int, n_clusters: int, seed: int, spread: float = 1.0):
    """(n, d) data and (n_queries, d) queries: unit vectors around the same random centres.

    Point-to-centre cosine ~ 1/sqrt(1 + spread^2) (0.71 for spread 1).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    m = n + n_queries
    x = centres[rng.integers(0, n_clusters, m)] + spread * rng.standard_normal((m, d)).astype(np.float32) / np.sqrt(d)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:n], x[n:]


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)).astype(np.float32)
    ids = rng.choice(10**12, 500, replace=False).astype(np.int64)
    return x, ids


def brute(x, ids, q, k, allowed=None):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    if allowed is not None:
        sims[:, ~np.isin(ids, allowed)] = -np.inf
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def test_flat_is_exact_cosine_with_arbitrary_ids(small):
    x, ids = small
    index = DenseIndex.build(x * 3.0, ids)  # unnormalised input is normalised
    assert (index.kind, index.ntotal, index.dim) == ("flat", 500, 32)
    q = np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)
    scores, got = index.search(q, top_k=7)
    want_s, want_i = brute(x, ids, q, 7)
    assert scores.shape == got.shape == (4, 7) and scores.dtype == np.float32 and got.dtype == np.int64
    np.testing.assert_array_equal(got, want_i)
    np.testing.assert_allclose(scores, want_s, atol=1e-5)
    s1, i1 = index.search(q[0], top_k=1)  # a single (d,) query works too
    assert i1.tolist() == [[want_i[0, 0]]] and s1[0, 0] <= 1.0 + 1e-6


def test_padding_when_fewer_vectors_than_top_k():
    x = np.eye(3, 8, dtype=np.float32)
    index = DenseIndex.build(x, np.array([5, 6, 7]))
    scores, ids = index.search(x[:1], top_k=5)
    assert ids.tolist() == [[5, 6, 7, -1, -1]] or ids[0, 0] == 5 and (ids[0, 3:] == -1).all()
    assert scores[0, 0] == pytest.approx(1.0) and np.isneginf(scores[0, 3:]).all()
    empty = DenseIndex.build(np.zeros((0, 8), np.float32), np.zeros(0, np.int64))
    s, i = empty.search(x[:2], 3)
    assert i.tolist() == [[-1] * 3] * 2 and np.isneginf(s).all()


def test_build_and_search_reject_bad_input(small):
    x, ids = small
    with pytest.raises(ValueError):
        DenseIndex.build(x, ids[:-1])
    with pytest.raises(ValueError):
        DenseIndex.build(x[:2], np.array([1, 1]))
    index = DenseIndex.build(x, ids)
    with pytest.raises(ValueError):
        index.search(np.zeros((1, 31), np.float32), 3)
    with pytest.raises(ValueError):
        index.search(x[:1], 0)
    with pytest.raises(ValueError):
        index.add(x[:1], ids[:1])  # id already present


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_filters_return_top_k_whenever_that_many_are_allowed(small, kind):
    x, ids = small
    index = DenseIndex.build(x, ids, ann_threshold=1 if kind == "hnsw" else 10**9)
    assert index.kind == kind
    q = np.random.default_rng(2).standard_normal((3, 32)).astype(np.float32)
    sorted_ids = np.sort(ids)
    for allowed in (sorted_ids[::50], sorted_ids[::2], sorted_ids[:3]):  # 10, 250 and 3 allowed
        scores, got = index.search(q, top_k=5, allowed_ids=allowed)
        want_s, want_i = brute(x, ids, q, 5, allowed)
        n_ok = min(5, allowed.size)
        assert ((got >= 0).sum(axis=1) == n_ok).all()
        assert np.isin(got[:, :n_ok], allowed).all()
        if kind == "flat" or allowed.size <= 20:
            np.testing.assert_array_equal(got[:, :n_ok], want_i[:, :n_ok])
    assert (index.search(q, 5, allowed_ids=np.array([], np.int64))[1] == -1).all()
    assert (index.search(q, 5, allowed_ids=np.array([-7], np.int64))[1] == -1).all()


def test_hnsw_filter_with_large_allowed_set_uses_graph_search():
    x, q = clustered(30_000, 20, 32, 100, seed=3)
    ids = np.arange(30_000, dtype=np.int64) * 2 + 1
    index = DenseIndex.build(x, ids, ann_threshold=1000)
    allowed = ids[ids % 3 == 0]  # 10k of 30k: below EXACT_FILTER_MAX -> exact
    _, got = index.search(q, 10, allowed_ids=allowed)
    np.testing.assert_array_equal(got, brute(x, ids, q, 10, allowed)[1])
    allowed = ids[ids % 5 != 0]  # 24k allowed: filtered HNSW search
    _, got = index.search(q, 10, allowed_ids=allowed)
    assert np.isin(got, allowed).all() and (got >= 0).all()
    want = brute(x, ids, q, 10, allowed)[1]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)])
    assert recall >= 0.95, recall


def test_excluded_ids_are_never_returned_and_the_rest_keeps_its_scores():
    x, q = clustered(20_000, 20, 32, 100, seed=5)
    ids = np.arange(20_000, dtype=np.int64) * 3 + 2
    for threshold in (10**9, 1000):  # flat, then HNSW
        index = DenseIndex.build(x, ids, ann_threshold=threshold)
        full_s, full_i = index.search(q, 30)
        gone = np.unique(full_i[:, ::3])  # a third of every query's top 30 deleted
        s, got = index.search(q, 20, excluded_ids=gone)
        assert (got >= 0).all() and not np.isin(got, gone).any()
        if index.kind == "flat":  # exact: the survivors of the unfiltered top 30, in order
            for r in range(q.shape[0]):
                keep = ~np.isin(full_i[r], gone)  # (other queries' deletions may hit this top 30 too)
                n = min(20, int(keep.sum()))
                assert n >= 10
                np.testing.assert_array_equal(got[r][:n], full_i[r][keep][:n])
                np.testing.assert_array_equal(s[r][:n], full_s[r][keep][:n])
        else:
            want = brute(x, ids, q, 20, np.setdiff1d(ids, gone))[1]
            recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(got, want)])
            assert recall >= 0.95, recall


def test_add_normalized_stores_rows_bit_for_bit(small):
    x, ids = small
    index = DenseIndex.build(x, ids, ann_threshold=10**9)
    copy = DenseIndex.empty(32, "flat")
    copy.add_normalized(index._storage()[::2], ids[::2])
    np.testing.assert_array_equal(copy._storage(), index._storage()[::2])
    q = np.random.default_rng(4).standard_normal((2, 32)).astype(np.float32)
    s1, i1 = copy.search(q, 10)
    s2, i2 = index.search(q, 10, allowed_ids=np.sort(ids[::2]))
    np.testing.assert_array_equal(i1, i2)


def test_hnsw_recall_at_10_against_flat():
    """20k x 64 clustered vectors, threshold forced low: recall@10 vs exact >= 0.95."""
    x, q = clustered(20_000, 200, 64, 200, seed=5)
    ids = np.random.default_rng(6).choice(10**9, 20_000, replace=False).astype(np.int64)
    flat = DenseIndex.build(x, ids)
    hnsw = DenseIndex.build(x, ids, ann_threshold=10_000)
    assert (flat.kind, hnsw.kind) == ("flat", "hnsw")
    _, exact = flat.search(q, 10)
    _, approx = hnsw.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, approx)])
    assert recall >= 0.95, recall


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, small, kind):
    x, ids = small
    index = DenseIndex.build(x, ids, ann_threshold=1 if kind == "hnsw" else 10**9)
    path = tmp_path / "dense.faiss"
    index.save(path)
    loaded = DenseIndex.load(path)
    assert (loaded.kind, loaded.ntotal, loaded.dim) == (kind, 500, 32)
    q = x[:5] + 0.1
    a, b = index.search(q, 10), loaded.search(q, 10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(loaded.ids, ids)


def test_truncated_garbled_and_missing_files_raise_index_format_error(tmp_path, small):
    x, ids = small
    path = tmp_path / "dense.faiss"
    DenseIndex.build(x, ids).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError) as e:
        DenseIndex.load(path)
    assert e.value.path == str(path) and "\n" not in str(e.value)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(IndexFormatError, match="dense.faiss"):
        DenseIndex.load(path)
    with pytest.raises(IndexFormatError, match="missing"):
        DenseIndex.load(tmp_path / "nope.faiss")
    faiss.write_index(faiss.IndexFlatIP(4), str(path))  # valid FAISS, wrong layout
    with pytest.raises(IndexFormatError, match="IndexIDMap2"):
        DenseIndex.load(path)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_add_remove_and_get_vectors(small, kind):
    x, ids = small
    index = DenseIndex.build(x[:400], ids[:400], ann_threshold=1 if kind == "hnsw" else 10**9)
    index.add(x[400:], ids[400:])
    assert index.ntotal == 500
    vecs, found = index.get_vectors(np.array([ids[450], 123456789], np.int64))
    assert found.tolist() == [ids[450]]
    np.testing.assert_allclose(vecs[0], x[450] / np.linalg.norm(x[450]), rtol=1e-5)
    assert index.remove(ids[:10]) == 10 and index.ntotal == 490
    _, got = index.search(x[:10], 1)
    assert not np.isin(got, ids[:10]).any()
    _, got = index.search(x[450:451], 1)
    assert got[0, 0] == ids[450]
