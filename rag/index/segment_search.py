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

Per-query cost does not grow with the number of segments beyond a few slices per segment and
term: BM25 is one scoring pass over a global row space (segments' rows concatenated), and
the small flat segments are searched as one fused flat index built once per generation
(why and figures: ``docs/segments.md``). Flat segments (the manifest's ``dense: "flat"``) are
searched in numpy over their memory-mapped ``vectors.npy``
(:class:`~rag.index.dense.NumpyFlatIndex`); only HNSW segments use FAISS.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import IndexFormatError
from .segment import SEGMENTS, TOMBSTONES, Segment, _load_npy, load_segment
from .segments import SegmentSpec, term_major

OVERFETCH_MAX = 512
"""A segment with at most this many tombstoned rows is searched with those ids excluded inside
the search (flat: their scores masked; HNSW: FAISS's ``IDSelectorNot``, the walk keeps its
beam, so deleting a few rows costs nothing), or,
should an HNSW walk come back short, for ``k + dead`` neighbours with the dead dropped; with
more, its live ids become a filter."""
FEW_DEAD = 4096
"""Up to this many tombstoned rows per segment, BM25 counts them in each posting list by binary
search (O(dead log P)) for the document frequencies; beyond it, a row mask is gathered per
posting (O(P)). The first costs nothing measurable for a few deletions in a 1M-row segment."""
FUSE_MAX_ROWS = 20_000
"""The smallest segments, while their rows add up to at most this many, are searched as one:
one fused numpy flat index over their live rows (30 MB of 384-d vectors at most, copied once
per generation) and one BM25 part with their live postings merged, so nine 100-row commits
cost one search call and one posting lookup per query term, not nine; tombstones left out."""


class SegmentSet:
    """The live segments of one generation with its tombstones (read-only, thread-safe).

    ``specs`` from the manifest, ``tombstones`` (t,) int64 ascending, ``bm25`` ``{"k1", "b"}``.
    The global BM25 row space: ``offsets`` (S + 1,) int64 (segment i's rows are
    ``offsets[i]:offsets[i + 1]``), ``row_ids`` (n_rows,) int64, ``row_dead`` (n_rows,) bool or
    None and ``row_dead_pos`` its ascending positions, built once per generation (O(rows), 9 MB
    at 1M rows).
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
        # BM25 parts: every segment, except that the small ones are one fused part of live rows
        small = _smallest_first([(seg.rows, i) for i, seg in enumerate(self.segments) if seg.rows])
        self.parts: list[_Part] = [_Part.of(seg, self.dead[i], self.dead_pos[i])
                                   for i, seg in enumerate(self.segments) if i not in small]
        if small:
            self.parts.append(_Part.fused([self.segments[i] for i in small], [self.dead[i] for i in small]))
        self.norms = [(self.k1 * (1.0 - self.b + self.b * part.doc_lengths / denom)).astype(np.float32) for part in self.parts]
        # global row space for BM25: part i's rows are offsets[i]:offsets[i + 1]
        self.offsets = np.zeros(len(self.parts) + 1, dtype=np.int64)
        np.cumsum([part.rows for part in self.parts], out=self.offsets[1:])
        self.n_rows = int(self.offsets[-1])
        self._pos_type = np.int32 if self.n_rows < 2**31 else np.int64
        self.row_ids = (self.parts[0].ids if len(self.parts) == 1 else
                        np.concatenate([part.ids for part in self.parts]) if self.parts else np.zeros(0, np.int64))
        self.row_dead = (np.concatenate([np.zeros(part.rows, bool) if part.dead is None else part.dead for part in self.parts])
                         if any(part.dead is not None for part in self.parts) else None)
        self.row_dead_pos = np.flatnonzero(self.row_dead) if self.row_dead is not None else np.zeros(0, np.int64)
        self.ids_ascending = bool(np.all(self.row_ids[1:] > self.row_ids[:-1]))  # what disjoint ascending segments give
        self._live_ids: list[np.ndarray | None] = [None] * len(self.segments)
        self._fused: tuple[Any, list[int], int, int] | None = None
        self._fused_lock = threading.Lock()
        from .analysis import BM25Tokenizer

        tok = self.segments[0].tokenizer if self.segments else {}
        self.tokenizer = BM25Tokenizer.from_dict(tok) if tok else BM25Tokenizer()

    def live_ids(self, i: int) -> np.ndarray:
        """(m,) int64 ascending live ids of segment ``i``."""
        if self._live_ids[i] is None:
            seg, dead = self.segments[i], self.dead[i]
            self._live_ids[i] = seg.ids if dead is None else seg.ids[~dead]
        return self._live_ids[i]  # type: ignore[return-value]

    def dead_ids(self, i: int) -> np.ndarray:
        """(d,) int64 ascending tombstoned ids of segment ``i``."""
        return self.segments[i].ids[self.dead_pos[i]]

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
    def _fused_flat(self) -> tuple[Any, list[int], int, int] | None:
        """``(NumpyFlatIndex over the live rows of the fused segments, their positions in
        :attr:`segments`, min id, max id)``, or None when fewer than two flat segments fit in
        :data:`FUSE_MAX_ROWS`. Built on first use and kept for the generation. The stored
        vectors (``vectors.npy``) are copied as they are (not normalised again), and numpy
        scores each row independently of its position, so scores equal each segment's own
        flat search bit for bit."""
        if self._fused is None:
            with self._fused_lock:
                if self._fused is None:
                    self._fused = self._build_fused()
        return self._fused or None

    def _build_fused(self):
        from .dense import NumpyFlatIndex

        members = _smallest_first([(seg.rows, i) for i, (spec, seg) in enumerate(zip(self.specs, self.segments))
                                   if spec.dense == "flat" and seg.rows])
        if not members:
            return ()
        vecs, ids = [], []
        for i in members:
            stored = self.segments[i].flat.vectors  # memory-mapped vectors.npy
            dead = self.dead[i]
            vecs.append(stored if dead is None else stored[~dead])
            ids.append(self.live_ids(i))
        fused = NumpyFlatIndex(np.concatenate(vecs), np.concatenate(ids))
        return (fused, members, int(self.specs[members[0]].min_id), int(self.specs[members[-1]].max_id))

    def dense_search(self, queries: np.ndarray, top_k: int, allowed_ids: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`rag.index.dense.DenseIndex.search` over the live rows of every segment:
        ``(scores (m, k) float32, ids (m, k) int64)``, best first, padded with -inf / -1.
        Searches the fused small flat segments (:meth:`_fused_flat`) with one call and every
        other segment with its own index (:meth:`Segment.searcher`: numpy for a flat segment,
        FAISS for HNSW); the top ``k`` of all, ties by id."""
        q = np.asarray(queries, dtype=np.float32)
        q = q.reshape(1, -1) if q.ndim == 1 else q
        m, k = q.shape[0], int(top_k)
        all_s, all_i = [], []
        allowed = None if allowed_ids is None else np.asarray(allowed_ids, dtype=np.int64).reshape(-1)
        fused = self._fused_flat()
        skip = set(fused[1]) if fused else ()
        if fused:
            index, _, lo_id, hi_id = fused
            if allowed is None:
                s, ids = index.search(q, min(k, index.ntotal))
                all_s.append(s)
                all_i.append(ids)
            else:
                lo, hi = np.searchsorted(allowed, [lo_id, hi_id + 1])
                if hi > lo:  # ids of other segments in that range are simply not in the fused index
                    s, ids = index.search(q, min(k, int(hi - lo), index.ntotal), allowed_ids=allowed[lo:hi])
                    all_s.append(s)
                    all_i.append(ids)
        for i, (spec, seg) in enumerate(zip(self.specs, self.segments)):
            if i in skip:
                continue
            dense = seg.searcher(spec.dense)
            dead = self.dead[i]
            if allowed is not None:
                lo, hi = np.searchsorted(allowed, [spec.min_id, spec.max_id + 1])
                sub = allowed[lo:hi]
                if sub.size == 0:
                    continue
                s, ids = dense.search(q, min(k, int(sub.size)), allowed_ids=sub)
            elif dead is None:
                if seg.rows == 0:
                    continue
                s, ids = dense.search(q, min(k, seg.rows))
            else:
                dead_rows = self.dead_pos[i]  # precomputed: no per-query pass over the segment
                n_dead = int(dead_rows.size)
                live = seg.rows - n_dead
                if live == 0:
                    continue
                if n_dead <= OVERFETCH_MAX:
                    kk = min(k, live)
                    s, ids = dense.search(q, kk, excluded_ids=self.dead_ids(i))
                    if ((ids >= 0).sum(axis=1) < kk).any():  # an HNSW walk came back short: overfetch
                        s, ids = dense.search(q, min(k + n_dead, seg.rows))
                        gone = np.isin(ids, self.dead_ids(i))
                        s, ids = np.where(gone, -np.inf, s).astype(np.float32), np.where(gone, -1, ids)
                else:
                    s, ids = dense.search(q, min(k, live), allowed_ids=self.live_ids(i))
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
        float32 (m,), ids int64 (m,))``, score > 0, sorted by score descending then id.

        One scoring pass for all segments: each query term's postings in every segment are
        weighted with that segment's length norms and placed at the segment's offset in the
        global row space, then summed (in query-term order, as a rebuild sums them) and cut
        once; tombstoned rows are dropped among the candidates."""
        from .sparse import accumulate_scores, query_terms, top_by_score

        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, not {top_k}")
        empty = (np.zeros(0, np.float32), np.zeros(0, np.int64))
        if self.n_live == 0:
            return empty
        terms = _UnionTerms(self.parts)
        tids, qtf = query_terms(self.tokenizer, terms, query)
        if tids.size == 0:
            return empty
        # (term, segment, start, end) of every non-empty posting list; df over live rows
        df = np.zeros(tids.size, dtype=np.float64)
        spans: list[tuple[int, int, int, int]] = []
        for t, tid in enumerate(tids.tolist()):
            w = terms.names[tid]
            for i, part in enumerate(self.parts):
                lt = part.term_ids.get(w)
                if lt is None:
                    continue
                s, e = int(part.indptr[lt]), int(part.indptr[lt + 1])
                if s == e:
                    continue
                spans.append((t, i, s, e))
                n_t = e - s
                if part.dead is not None:
                    n_t -= _count_in(part.indices[s:e], part.dead_pos) if part.dead_pos.size <= FEW_DEAD \
                        else int(part.dead[part.indices[s:e]].sum())
                df[t] += n_t
        if not spans:
            return empty
        n = self.n_live
        # as BM25Index.build: idf in float64, then float32 (factor 1.0 for the Lucene idf)
        idf32 = (np.log1p((n - df + 0.5) / (df + 0.5)) * 1.0).astype(np.float32)
        pos_parts, w_parts = [], []
        for t, i, s, e in spans:
            part = self.parts[i]
            rows, tf = part.indices[s:e], part.tf[s:e]
            w = self.norms[i][rows]  # the float32 operations of BM25Index.build, then the query's qtf
            w += tf
            np.divide(tf, w, out=w)
            w *= idf32[t]
            w *= qtf[t]
            off = self.offsets[i]
            pos_parts.append(rows if off == 0 else rows + self._pos_type(off))  # stays int32 below 2**31 rows
            w_parts.append(w)
        pos = pos_parts[0] if len(pos_parts) == 1 else np.concatenate(pos_parts)
        wts = w_parts[0] if len(w_parts) == 1 else np.concatenate(w_parts)
        cand, scores = accumulate_scores(pos, wts, self.n_rows)  # every score > 0: Lucene idf, tf, qtf > 0
        if self.row_dead is not None:  # tombstoned candidates (cand is ascending) get -1: last, then cut off
            if self.row_dead_pos.size <= FEW_DEAD:
                scores[_where_in_sorted(cand, self.row_dead_pos)] = -1.0  # O(dead log m), no pass over m
            else:
                scores[self.row_dead[cand]] = -1.0
        if allowed_ids is None and self.ids_ascending:
            # rows in id order: ties by row are ties by id, so cut on rows and look up k ids
            s, rows = top_by_score(cand, scores, top_k)
            ids = self.row_ids[rows]
        else:
            s, ids = top_by_score(self.row_ids[cand], scores, top_k, allowed_ids)
        if s.size and s[-1] < 0:  # fewer than top_k live candidates
            keep = s > 0
            s, ids = s[keep], ids[keep]
        return s, ids


def _smallest_first(sizes: Sequence[tuple[int, int]]) -> list[int]:
    """Ascending positions of the segments to fuse, from ``(rows, position)`` pairs: smallest
    first while their rows add up to at most :data:`FUSE_MAX_ROWS`; [] when fewer than two fit."""
    members, total = [], 0
    for rows, i in sorted(sizes):
        if total + rows > FUSE_MAX_ROWS:
            break
        members.append(i)
        total += rows
    return sorted(members) if len(members) >= 2 else []


class _Part:
    """The BM25 view of one segment, or of several small ones fused over their live rows:
    ``term_ids`` (term -> row of ``indptr``), term-major ``indptr`` int64 / ``indices`` int32
    (rows of this part, ascending per term) / ``tf`` float32, ``doc_lengths`` int32 and ``ids``
    int64 per row, ``dead`` (rows,) bool or None and ``dead_pos`` its positions."""

    __slots__ = ("term_ids", "indptr", "indices", "tf", "doc_lengths", "ids", "dead", "dead_pos", "rows")

    @classmethod
    def of(cls, seg: Segment, dead: np.ndarray | None, dead_pos: np.ndarray) -> "_Part":
        p = cls()
        p.term_ids, p.indptr, p.indices, p.tf = seg.term_ids, seg.indptr, seg.indices, seg.tf
        p.doc_lengths, p.ids, p.dead, p.dead_pos, p.rows = seg.doc_lengths, seg.ids, dead, dead_pos, seg.rows
        return p

    @classmethod
    def fused(cls, segs: Sequence[Segment], deads: Sequence[np.ndarray | None]) -> "_Part":
        """The live rows of ``segs`` (in order) as one part; the postings of each term stay in
        row order (segments in order, rows ascending in each), so sums match a rebuild's."""
        names: dict[str, int] = {}
        terms, rows, tfs, lengths, ids = [], [], [], [], []
        base = 0
        for seg, dead in zip(segs, deads):
            vocab = sorted(seg.term_ids, key=seg.term_ids.__getitem__)
            tmap = np.fromiter((names.setdefault(t, len(names)) for t in vocab), dtype=np.int64, count=len(vocab))
            t = np.repeat(tmap, np.diff(seg.indptr))
            r, f = seg.indices.astype(np.int64), seg.tf
            live = seg.ids.size
            if dead is not None:
                keep = ~dead[r]
                renum = np.cumsum(~dead) - 1
                t, r, f = t[keep], renum[r[keep]], f[keep]
                live = int((~dead).sum())
            terms.append(t)
            rows.append(r + base)
            tfs.append(f)
            lengths.append(seg.doc_lengths if dead is None else seg.doc_lengths[~dead])
            ids.append(seg.ids if dead is None else seg.ids[~dead])
            base += live
        order, indptr = term_major(np.concatenate(terms), len(names))
        p = cls()
        p.term_ids, p.indptr = names, indptr
        p.indices = np.concatenate(rows)[order].astype(np.int32)
        p.tf = np.concatenate(tfs)[order]
        p.doc_lengths, p.ids = np.concatenate(lengths), np.concatenate(ids)
        p.dead, p.dead_pos, p.rows = None, np.zeros(0, np.int64), base
        return p


def _where_in_sorted(values: np.ndarray, few: np.ndarray) -> np.ndarray:
    """Ascending indices into ``values`` (ascending) of the elements also in ``few`` (ascending,
    small): O(len(few) log len(values)), not a pass over ``values``."""
    if not values.size or not few.size:
        return np.zeros(0, np.int64)
    few = few.astype(values.dtype, copy=False)  # int32 postings: else searchsorted copies them to int64
    j = np.minimum(np.searchsorted(values, few), values.size - 1)
    return j[values[j] == few]


def _count_in(values: np.ndarray, few: np.ndarray) -> int:
    """How many of ``few`` (ascending, small) occur in ``values`` (ascending)."""
    return int(_where_in_sorted(values, few).size)


class _UnionTerms:
    """Term -> small int over the union of the segments' vocabularies, numbered on demand (the
    ``term_ids`` Mapping :func:`rag.index.sparse.query_terms` asks; one per query)."""

    def __init__(self, segments: Sequence[Any]):
        self.segments = segments  # anything with ``term_ids``: segments or BM25 parts
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
