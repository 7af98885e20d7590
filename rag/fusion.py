"""Score fusion for hybrid retrieval: pure functions over ranked lists of chunk ids.

- :func:`rrf`: reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009, "Reciprocal rank
  fusion outperforms Condorcet and individual rank learning methods"), k = 60 as in the paper.
- :func:`convex`: a weighted sum of per-list normalised scores (Bruch, Gai & Ingber 2023, "An
  analysis of fusion functions for hybrid retrieval", ACM TOIS), min-max or z-score.

Both return ``[(id, fused_score), ...]`` sorted best first with deterministic tie breaking.
A ``None`` list counts as empty (a retriever that returned nothing); entries with a NaN or
infinite score are dropped before fusing (one such score would flatten a whole normalised list);
weights must be finite and >= 0 (ValueError otherwise).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _check_weights(weights: Sequence[float], n: int, what: str) -> list[float]:
    if len(weights) != n:
        raise ValueError(f"{n} {what} but {len(weights)} weights")
    out = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise ValueError(f"weights must be numbers, not {w!r}")
        if not math.isfinite(float(w)) or float(w) < 0:
            raise ValueError(f"weights must be finite and >= 0, not {w!r}")
        out.append(float(w))
    return out


def rrf(rankings: Sequence[Sequence[int] | None], k: int = 60,
        weights: Sequence[float] | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks 1-based.

    ``rankings``: one list of ids per retriever, best first (a repeated id keeps its best rank;
    None = empty). A document absent from list ``i`` gets nothing from it (no invented rank).
    ``weights`` default to 1.0 each. Result sorted by fused score descending; ties broken by
    the best single rank (smaller first), then by id ascending. Raises ValueError when ``k < 0``
    or ``weights`` has the wrong length or a negative / non-finite / non-numeric value.
    """
    if isinstance(k, bool) or not isinstance(k, (int, float, np.integer, np.floating)) or not k >= 0 or not math.isfinite(k):
        raise ValueError(f"k must be a finite number >= 0, not {k!r}")
    weights = _check_weights([1.0] * len(rankings) if weights is None else list(weights), len(rankings), "rankings")
    scores: dict[int, float] = {}
    best_rank: dict[int, int] = {}
    for ranking, w in zip(rankings, weights):
        if ranking is None:
            continue
        seen: set[int] = set()
        for rank, doc in enumerate(ranking, start=1):
            doc = int(doc)
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + float(w) / (k + rank)
            if rank < best_rank.get(doc, math.inf):
                best_rank[doc] = rank
    return sorted(scores.items(), key=lambda item: (-item[1], best_rank[item[0]], item[0]))


def normalize(scores: np.ndarray, norm: str = "zscore") -> np.ndarray:
    """Normalise one list's scores ((m,) float) to float64 (m,).

    ``"minmax"``: ``(s - min) / (max - min)`` in [0, 1]. ``"zscore"``: ``(s - mean) / std``
    (population std). When the list has no spread (one hit, or all scores equal) both give
    1.0 to every hit: the retriever found them, and :func:`convex` then gives documents it did
    not find 0.0, one unit lower. Empty input gives an empty array. Raises ValueError on an
    unknown ``norm``.
    """
    if norm not in ("minmax", "zscore"):
        raise ValueError(f"norm must be 'minmax' or 'zscore', not {norm!r}")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return s
    lo, hi = float(s.min()), float(s.max())
    if not hi > lo:
        return np.ones_like(s)
    if norm == "minmax":
        return (s - lo) / (hi - lo)
    return (s - s.mean()) / s.std()


def _run_starts(a: np.ndarray) -> np.ndarray:
    """(n,) bool: True at the first element of each run of equal values of a sorted (n,) array."""
    first = np.ones(a.size, dtype=bool)
    first[1:] = a[1:] != a[:-1]
    return first


def convex(results: Sequence[tuple[np.ndarray, np.ndarray] | None], weights: Sequence[float],
           norm: str = "zscore") -> list[tuple[int, float]]:
    """Convex combination ``sum_i w_i * norm_i(score_i(d))`` (Bruch, Gai & Ingber 2023).

    ``results``: one ``(ids, scores)`` pair per retriever (int ids, float scores, same length;
    e.g. the dense and the BM25 candidate lists). With two lists, ``weights=(alpha, 1 - alpha)``
    gives the paper's ``alpha * dense + (1 - alpha) * sparse``.

    Edge cases:

    - an empty list contributes nothing to any document;
    - a list with no spread (a single hit or all scores equal) gives its hits 1.0 (see
      :func:`normalize`) and documents it missed 0.0;
    - otherwise a document missing from a list gets that list's minimum normalised score
      (0.0 for minmax, the lowest z for zscore): it was ranked below the candidate depth, so it
      is at best as good as the worst candidate seen. Giving it 0 under z-score would instead
      rank it above every below-average candidate the retriever did return.

    A repeated id within one list keeps its highest score; ``None`` is an empty list; entries
    whose score is NaN or infinite are dropped. Result sorted by fused score descending, ties
    by id ascending. Raises ValueError on mismatched lengths, bad weights or unknown norm.
    """
    weights = _check_weights(list(weights), len(results), "result lists")
    per_list: list[tuple[np.ndarray, np.ndarray, float] | None] = []
    for item in results:
        if item is None:
            per_list.append(None)
            continue
        ids, scores = item
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if ids.shape[0] != scores.shape[0]:
            raise ValueError(f"a result list has {ids.shape[0]} ids but {scores.shape[0]} scores")
        finite = np.isfinite(scores)
        ids, scores = ids[finite], scores[finite]
        if ids.size == 0:
            per_list.append(None)  # an empty list contributes nothing
            continue
        order = np.lexsort((-scores, ids))  # by id, best score first within an id
        ids, scores = ids[order], scores[order]
        first = _run_starts(ids)
        ids, raw = ids[first], scores[first]
        normed = normalize(raw, norm)
        missing = 0.0 if not raw.max() > raw.min() else float(normed.min())
        per_list.append((ids, normed, missing))
    present = [p for p in per_list if p is not None]
    if not present:
        return []
    all_ids = np.sort(np.concatenate([p[0] for p in present]))
    all_ids = all_ids[_run_starts(all_ids)]  # np.unique, without its first-call import of numpy.ma (8 ms)
    total = np.zeros(all_ids.size, dtype=np.float64)
    for p, w in zip(per_list, weights):
        if p is None:
            continue
        vals = np.full(all_ids.size, p[2], dtype=np.float64)
        vals[np.searchsorted(all_ids, p[0])] = p[1]
        total += float(w) * vals
    order = np.lexsort((all_ids, -total))
    return list(zip(all_ids[order].tolist(), total[order].tolist()))
