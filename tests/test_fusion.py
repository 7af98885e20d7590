"""Fusion: reciprocal rank fusion and convex combination, with hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rag.fusion import convex, normalize, rrf


def as_dict(pairs):
    return {i: s for i, s in pairs}


# ------------------------------------------------------------------ RRF
def test_rrf_hand_computed_and_doc_in_both_lists_wins():
    dense = [1, 2, 3]
    sparse = [4, 2, 5]
    fused = rrf([dense, sparse], k=60)
    got = as_dict(fused)
    assert got[2] == pytest.approx(1 / 62 + 1 / 62)
    assert got[1] == pytest.approx(1 / 61) and got[4] == pytest.approx(1 / 61)
    assert got[3] == pytest.approx(1 / 63) and got[5] == pytest.approx(1 / 63)
    # doc 2 (found by both) beats docs found once; ties (1 vs 4, 3 vs 5) by best rank then id
    assert [i for i, _ in fused] == [2, 1, 4, 3, 5]


def test_rrf_absent_doc_gets_nothing_from_that_list():
    got = as_dict(rrf([[10, 20], [20]], k=0))
    assert got == {10: pytest.approx(1.0), 20: pytest.approx(1 / 2 + 1 / 1)}


def test_rrf_weights_change_the_ranking_when_swapped():
    dense, sparse = [1, 2], [2, 1]
    assert rrf([dense, sparse], k=1, weights=[2.0, 1.0])[0][0] == 1  # 2/2 + 1/3 > 2/3 + 1/2
    assert rrf([dense, sparse], k=1, weights=[1.0, 2.0])[0][0] == 2
    assert as_dict(rrf([dense, sparse], k=1, weights=[2.0, 1.0]))[1] == pytest.approx(2 / 2 + 1 / 3)


def test_rrf_ties_broken_by_best_rank_then_id():
    # exact three-way tie with k=0: docs 5 and 3 rank 1 once (1/1), doc 9 ranks 2 twice (1/2 + 1/2)
    fused = rrf([[5, 9], [3, 9]], k=0)
    assert as_dict(fused)[9] == pytest.approx(1.0)
    assert [i for i, _ in fused] == [3, 5, 9]  # all 1.0: best rank 1 (ids 3, 5) before rank 2


def test_rrf_edge_cases():
    assert rrf([]) == []
    assert rrf([[], []]) == []
    assert rrf([[4, 4, 2]], k=60) == [(4, pytest.approx(1 / 61)), (2, pytest.approx(1 / 63))]
    with pytest.raises(ValueError):
        rrf([[1]], weights=[1.0, 2.0])
    with pytest.raises(ValueError):
        rrf([[1]], k=-1)


# ------------------------------------------------------------------ normalisation
def test_normalize_minmax_and_zscore():
    np.testing.assert_allclose(normalize(np.array([1.0, 3.0, 5.0]), "minmax"), [0.0, 0.5, 1.0])
    # mean 3, population std sqrt(8/3)
    np.testing.assert_allclose(normalize(np.array([1.0, 3.0, 5.0]), "zscore"),
                               np.array([-2.0, 0.0, 2.0]) / np.sqrt(8 / 3))
    for norm in ("minmax", "zscore"):
        assert normalize(np.array([0.7]), norm).tolist() == [1.0]
        assert normalize(np.array([2.0, 2.0, 2.0]), norm).tolist() == [1.0, 1.0, 1.0]
        assert normalize(np.array([]), norm).shape == (0,)
    with pytest.raises(ValueError):
        normalize(np.array([1.0]), "l2")


# ------------------------------------------------------------------ convex
def test_convex_minmax_hand_computed():
    dense = (np.array([1, 2, 3]), np.array([0.9, 0.7, 0.5]))
    sparse = (np.array([3, 4]), np.array([12.0, 4.0]))
    got = as_dict(convex([dense, sparse], weights=[0.6, 0.4], norm="minmax"))
    # dense normalised: 1 -> 1, 2 -> 0.5, 3 -> 0 ; sparse: 3 -> 1, 4 -> 0; missing -> list minimum 0
    assert got == {1: pytest.approx(0.6), 2: pytest.approx(0.3), 3: pytest.approx(0.4),
                   4: pytest.approx(0.0)}
    assert [i for i, _ in convex([dense, sparse], [0.6, 0.4], "minmax")] == [1, 3, 2, 4]


def test_convex_zscore_hand_computed_missing_gets_list_minimum():
    dense = (np.array([1, 2, 3]), np.array([3.0, 2.0, 1.0]))  # z = +1.2247, 0, -1.2247
    sparse = (np.array([2, 4]), np.array([10.0, 6.0]))  # z = +1, -1
    z = np.sqrt(1.5)
    got = as_dict(convex([dense, sparse], weights=[0.5, 0.5], norm="zscore"))
    assert got[1] == pytest.approx(0.5 * z + 0.5 * -1.0)  # missing from sparse -> its min z (-1)
    assert got[2] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert got[3] == pytest.approx(0.5 * -z + 0.5 * -1.0)
    assert got[4] == pytest.approx(0.5 * -z + 0.5 * -1.0)  # missing from dense -> its min z
    assert [i for i, _ in convex([dense, sparse], [0.5, 0.5], "zscore")] == [2, 1, 3, 4]


def test_convex_weights_swap_changes_ranking():
    dense = (np.array([1, 2]), np.array([0.9, 0.1]))
    sparse = (np.array([1, 2]), np.array([1.0, 5.0]))
    assert convex([dense, sparse], [0.8, 0.2], "minmax")[0][0] == 1
    assert convex([dense, sparse], [0.2, 0.8], "minmax")[0][0] == 2


def test_convex_empty_single_and_all_equal():
    empty = (np.array([], dtype=np.int64), np.array([]))
    dense = (np.array([5, 6]), np.array([0.8, 0.4]))
    # one retriever returns nothing: result is the other list alone, weighted
    assert convex([dense, empty], [0.5, 0.5], "minmax") == [(5, pytest.approx(0.5)), (6, pytest.approx(0.0))]
    assert convex([empty, empty], [0.5, 0.5]) == []
    # single hit: normalised to 1.0, documents it missed get 0.0
    single = (np.array([6]), np.array([3.3]))
    for norm in ("minmax", "zscore"):
        got = as_dict(convex([dense, single], [0.5, 0.5], norm))
        d5, d6 = normalize(np.array([0.8, 0.4]), norm)
        assert got[6] == pytest.approx(0.5 * d6 + 0.5 * 1.0)
        assert got[5] == pytest.approx(0.5 * d5 + 0.5 * 0.0)
    # all-equal scores behave like a single hit
    flat = (np.array([1, 2, 3]), np.array([2.0, 2.0, 2.0]))
    assert convex([flat], [1.0], "zscore") == [(1, 1.0), (2, 1.0), (3, 1.0)]


def test_convex_duplicates_and_errors():
    dup = (np.array([1, 1, 2]), np.array([0.2, 0.9, 0.5]))
    assert as_dict(convex([dup], [1.0], "minmax")) == {1: pytest.approx(1.0), 2: pytest.approx(0.0)}
    with pytest.raises(ValueError):
        convex([dup], [0.5, 0.5])
    with pytest.raises(ValueError):
        convex([(np.array([1, 2]), np.array([1.0]))], [1.0])
    with pytest.raises(ValueError):
        convex([dup], [1.0], norm="max")
