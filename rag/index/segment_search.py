"""Search over the segments of one generation: dense top-k per segment merged by score, and
BM25 with global statistics so scores equal one index rebuilt over the same live chunks.

BM25 (the Lucene variant of :mod:`rag.index.sparse`)::

    score(q, d) = sum_t qtf(t) * idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * dl(d) / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with N the live chunks of all segments, df(t) the live chunks holding t (postings of
tombstoned rows subtracted) and avgdl their mean length. Weights are computed per query from
the stored term frequencies with the same float32 operations, in the same order, as
:meth:`BM25Index.build` bakes them in, and summed in the same term order: the scores equal a
rebuild's bit for bit (``tests/test_segments.py`` checks 1e-5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import IndexFormatError
from .segments import SEGMENTS, TOMBSTONES, Segment, SegmentSpec, _load_npy, load_segment

OVERFETCH_MAX = 512
"""A segment with at most this many tombstoned rows is searched unfiltered for ``k + dead``
neighbours, and the dead ones dropped (exact); with more, its live ids become a filter."""
FEW_DEAD = 4096
"""Up to this many tombstoned rows per segment, BM25 finds them in each posting list and among
the candidates by binary search (O(dead log P)); beyond it, a row mask is gathered per posting
(O(P)). The first costs nothing measurable for a few deletions in a 1M-row segment."""


class SegmentSet:
    """The live segments of one generation with its tombstones (read-only, thread-safe).

    ``specs`` from the manifest, ``tombstones`` (t,) int64 ascending, ``bm25`` ``{"k1", "b"}``.
    Raises IndexFormatError when a segment is unreadable or segments disagree on the tokenizer.
    """

    def __init__(self, index_dir: Path, gen_dir: Path, specs: Sequence[SegmentSpec], bm25: Mapping[str, Any]):
        self.specs = list(specs)
        self.segments: list[Segment] = [load_segment(Path(index_dir) / SEGMENTS / s.name) for s in self.specs]
        for spec, seg in zip(self.specs, self.segments):
            if seg.rows != spec.rows:
                raise IndexFormatError(str(seg.dir / "ids.npy"), f"holds {seg.rows} rows, the manifest says {spec.rows}")
        toks = {str(sorted(seg.tokenizer.items())) for seg in self.segments}
        if len(toks) > 1:
            raise IndexFormatError(str(gen_dir), "segments were tokenised with different BM25 settings; run `rag repair`")
        self.tombstones = _load_npy(Path(gen_dir) / TOMBSTONES, np.int64)
        self.k1, self.b = float(bm25["k1"]), float(bm25["b"])
        self.dead: list[np.ndarray | None] = []  # per segment: (n,) bool of tombstoned rows, None if none
        self.dead_pos: list[np.ndarray] = []  # per segment: ascending row positions of those rows
        total_len, n_live = 0, 0
        for seg in self.segments:
            mask = None
            if self.tombstones.size:
                j = np.minimum(np.searchsorted(self.tombstones, seg.ids), self.tombstones.size - 1)
                m = self.tombstones[j] == seg.ids
                if m.any():
                    mask = m
            self.dead.append(mask)
            self.dead_pos.append(np.flatnonzero(mask) if mask is not None else np.zeros(0, np.int64))
            n_dead = int(mask.sum()) if mask is not None else 0
            n_live += seg.rows - n_dead
            total_len += seg.total_length - (int(seg.doc_lengths[mask].sum(dtype=np.int64)) if mask is not None else 0)
        self.n_live = n_live
        self.avgdl = float(total_len) / n_live if n_live else 0.0
        denom = self.avgdl if self.avgdl > 0 else 1.0
        self.norms = [(self.k1 * (1.0 - self.b + self.b * seg.doc_lengths / denom)).astype(np.float32) for seg in self.segments]
        self._live_ids: list[np.ndarray | None] = [None] * len(self.segments)
        from .sparse import BM25Tokenizer

        tok = self.segments[0].tokenizer if self.segments else {}
        self.tokenizer = BM25Tokenizer.from_dict(tok) if tok else BM25Tokenizer()

    def live_ids(self, i: int) -> np.ndarray:
        """(m,) int64 ascending live ids of segment ``i``."""
        if self._live_ids[i] is None:
            seg, dead = self.segments[i], self.dead[i]
            self._live_ids[i] = seg.ids if dead is None else seg.ids[~dead]
        return self._live_ids[i]  # type: ignore[return-value]

    def all_live_ids(self) -> np.ndarray:
        """(n,) int64 ascending: every live chunk id (segments hold disjoint ascending ranges)."""
        parts = [self.live_ids(i) for i in range(len(self.segments))]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def check(self, n_docstore: int, where: Path) -> None:
        """Raise IndexFormatError unless the live rows number ``n_docstore``."""
        if self.n_live != n_docstore:
            raise IndexFormatError(str(where), f"segments hold {self.n_live} live chunks but the docstore has {n_docstore}")

    def vectors(self) -> np.ndarray:
        """(n, dim) float32 live vectors in ascending id order (a copy; for repair and tools)."""
        parts = []
        for i, seg in enumerate(self.segments):
            v = seg.vectors()
            parts.append(np.asarray(v if self.dead[i] is None else v[~self.dead[i]], dtype=np.float32))
        if not parts:
            return np.zeros((0, 0), np.float32)
        return np.concatenate(parts)

    # ------------------------------------------------------------------ dense
    def dense_search(self, queries: np.ndarray, top_k: int, allowed_ids: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`rag.index.dense.DenseIndex.search` over the live rows of every segment:
        ``(scores (m, k) float32, ids (m, k) int64)``, best first, padded with -inf / -1."""
        q = np.asarray(queries, dtype=np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        m, k = q.shape[0], int(top_k)
        all_s, all_i = [], []
        allowed = None if allowed_ids is None else np.asarray(allowed_ids, dtype=np.int64).reshape(-1)
        for i, (spec, seg) in enumerate(zip(self.specs, self.segments)):
            dead = self.dead[i]
            if allowed is not None:
                lo, hi = np.searchsorted(allowed, [spec.min_id, spec.max_id + 1])
                sub = allowed[lo:hi]
                if sub.size == 0:
                    continue
                s, ids = seg.dense.search(q, min(k, int(sub.size)), allowed_ids=sub)
            elif dead is None:
                if seg.rows == 0:
                    continue
                s, ids = seg.dense.search(q, min(k, seg.rows))
            else:
                dead_rows = self.dead_pos[i]  # precomputed: no per-query pass over the segment
                n_dead = int(dead_rows.size)
                live = seg.rows - n_dead
                if live == 0:
                    continue
                if n_dead <= OVERFETCH_MAX:
                    s, ids = seg.dense.search(q, min(k + n_dead, seg.rows))
                    gone = np.isin(ids, seg.ids[dead_rows])
                    s, ids = np.where(gone, -np.inf, s).astype(np.float32), np.where(gone, -1, ids)
                else:
                    s, ids = seg.dense.search(q, min(k, live), allowed_ids=self.live_ids(i))
            all_s.append(s)
            all_i.append(ids)
        out_s = np.full((m, k), -np.inf, dtype=np.float32)
        out_i = np.full((m, k), -1, dtype=np.int64)
        if not all_s:
            return out_s, out_i
        s = np.concatenate(all_s, axis=1)
        ids = np.concatenate(all_i, axis=1)
        for r in range(m):
            ok = ids[r] >= 0
            rs, ri = s[r][ok], ids[r][ok]
            order = np.lexsort((ri, -rs))[:k]
            out_s[r, :order.size], out_i[r, :order.size] = rs[order], ri[order]
        return out_s, out_i

    # ------------------------------------------------------------------ BM25
    def sparse_search(self, query: str, top_k: int, allowed_ids: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`rag.index.sparse.BM25Index.search` with global statistics: ``(scores
        float32 (m,), ids int64 (m,))``, score > 0, sorted by score descending then id."""
        from .sparse import accumulate_scores, query_terms, top_by_score

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, not {top_k}")
        empty = (np.zeros(0, np.float32), np.zeros(0, np.int64))
        if self.n_live == 0:
            return empty
        terms = _UnionTerms(self.segments)
        tids, qtf = query_terms(self.tokenizer, terms, query)
        if tids.size == 0:
            return empty
        words = [terms.names[int(t)] for t in tids]
        # per segment and term: (start, end) of the postings; df over live rows
        df = np.zeros(len(words), dtype=np.float64)
        spans: list[list[tuple[int, int] | None]] = []
        for i, seg in enumerate(self.segments):
            row: list[tuple[int, int] | None] = []
            for t, w in enumerate(words):
                lt = seg.term_ids.get(w)
                if lt is None:
                    row.append(None)
                    continue
                s, e = int(seg.indptr[lt]), int(seg.indptr[lt + 1])
                row.append((s, e))
                n_t = e - s
                if self.dead[i] is not None:
                    n_t -= _count_in(seg.indices[s:e], self.dead_pos[i]) if self.dead_pos[i].size <= FEW_DEAD \
                        else int(self.dead[i][seg.indices[s:e]].sum())
                df[t] += n_t
            spans.append(row)
        n = self.n_live
        # as BM25Index.build: idf in float64, then float32 (factor 1.0 for the Lucene idf)
        idf32 = (np.log1p((n - df + 0.5) / (df + 0.5)) * 1.0).astype(np.float32)
        cand_ids, cand_scores = [], []
        for i, seg in enumerate(self.segments):
            pos_parts, w_parts = [], []
            norm = self.norms[i]
            for t, span in enumerate(spans[i]):
                if span is None:
                    continue
                s, e = span
                pos = seg.indices[s:e]
                tf = seg.tf[s:e]
                w = tf / (tf + norm[pos])
                w *= idf32[t]
                pos_parts.append(pos)
                w_parts.append(w * qtf[t])
            if not pos_parts:
                continue
            pos = np.concatenate(pos_parts)
            wts = np.concatenate(w_parts)
            few = self.dead_pos[i].size <= FEW_DEAD
            if self.dead[i] is not None and not few:
                keep = ~self.dead[i][pos]
                pos, wts = pos[keep], wts[keep]
                if pos.size == 0:
                    continue
            cand, scores = accumulate_scores(pos, wts, seg.rows)
            positive = scores > 0
            if self.dead[i] is not None and few:  # drop tombstoned candidates (cand is ascending)
                positive &= ~_in_sorted(cand, self.dead_pos[i])
            cand_ids.append(seg.ids[cand[positive]])
            cand_scores.append(scores[positive])
        if not cand_ids:
            return empty
        return top_by_score(np.concatenate(cand_ids), np.concatenate(cand_scores), top_k, allowed_ids)


def _in_sorted(values: np.ndarray, few: np.ndarray) -> np.ndarray:
    """(len(values),) bool: which of ``values`` (ascending) are in ``few`` (ascending, small)."""
    out = np.zeros(values.shape[0], dtype=bool)
    if values.size and few.size:
        j = np.searchsorted(values, few)
        ok = j < values.size
        j = j[ok]
        out[j[values[j] == few[ok]]] = True
    return out


def _count_in(values: np.ndarray, few: np.ndarray) -> int:
    """How many of ``few`` (ascending, small) occur in ``values`` (ascending)."""
    if not values.size or not few.size:
        return 0
    j = np.minimum(np.searchsorted(values, few), values.size - 1)
    return int((values[j] == few).sum())


class _UnionTerms:
    """Term -> small int over the union of the segments' vocabularies, numbered on demand (the
    ``term_ids`` Mapping :func:`rag.index.sparse.query_terms` asks; one per query)."""

    def __init__(self, segments: Sequence[Segment]):
        self.segments = segments
        self.ids: dict[str, int] = {}
        self.names: list[str] = []

    def __contains__(self, term: object) -> bool:
        return any(term in s.term_ids for s in self.segments)

    def __getitem__(self, term: str) -> int:
        if term not in self.ids:
            self.ids[term] = len(self.names)
            self.names.append(term)
        return self.ids[term]


class DenseView:
    """What :class:`rag.index.store.Snapshot` offers as ``dense`` for a segmented generation:
    ``search``, ``ntotal`` (live rows), ``ids`` (live ids), ``kind`` (the largest segment's)."""

    def __init__(self, segs: SegmentSet):
        self._segs = segs

    @property
    def ntotal(self) -> int:
        return self._segs.n_live

    @property
    def ids(self) -> np.ndarray:
        return self._segs.all_live_ids()

    @property
    def kind(self) -> str:
        specs = self._segs.specs
        return max(specs, key=lambda s: s.rows).dense if specs else "flat"

    def search(self, queries: np.ndarray, top_k: int, allowed_ids: np.ndarray | None = None):
        return self._segs.dense_search(queries, top_k, allowed_ids)


class SparseView:
    """``sparse`` for a segmented generation: ``search``, ``n_docs``, ``ids``, ``avgdl``."""

    def __init__(self, segs: SegmentSet):
        self._segs = segs

    @property
    def n_docs(self) -> int:
        return self._segs.n_live

    @property
    def ids(self) -> np.ndarray:
        return self._segs.all_live_ids()

    @property
    def avgdl(self) -> float:
        return self._segs.avgdl

    @property
    def tokenizer(self):
        return self._segs.tokenizer

    def search(self, query: str, top_k: int, allowed_ids: np.ndarray | None = None):
        return self._segs.sparse_search(query, top_k, allowed_ids)


def open_segments(index_dir: Path, manifest: Mapping[str, Any]) -> SegmentSet:
    """The :class:`SegmentSet` of a format-3 manifest."""
    from ..config import BM25Config

    specs = [SegmentSpec.from_dict(s) for s in manifest["segments"]]
    bm25 = manifest.get("bm25") or {"k1": BM25Config.k1, "b": BM25Config.b}
    return SegmentSet(Path(index_dir), Path(index_dir) / manifest["gen_dir"], specs, bm25)


__all__ = ["DenseView", "SegmentSet", "SparseView", "open_segments"]
