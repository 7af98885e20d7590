"""Dense vector index on FAISS (Johnson, Douze & Jégou 2019; Douze et al. 2024, "The Faiss library").

Cosine similarity as inner product on L2-normalised float32 vectors. Exact search
(``IndexFlatIP``) below a size threshold, HNSW graph search (Malkov & Yashunin 2018,
``IndexHNSWFlat``) at or above it, both inside ``IndexIDMap2`` so the vector ids are the chunk
ids. ``faiss`` is imported lazily: ``import rag`` never loads it. :class:`NumpyFlatIndex` is the
same exact search in numpy over stored vectors, for flat segments (no FAISS at all).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError

log = logging.getLogger("rag")

# HNSW parameters, chosen by measurement (the sweep in the DenseIndex docstring): the cheapest
# build whose recall@10 against exact search clears 0.95 with a margin.
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96

DEFAULT_ANN_THRESHOLD = 50_000
"""Vectors at or above which ``build`` makes an HNSW index (see :class:`DenseIndex`)."""

EXACT_FILTER_MAX = 20_000
"""An HNSW search whose filter allows at most this many vectors is answered exactly over the
allowed vectors (gathered from the HNSW's flat storage); graph search with a very selective
filter visits many rejected nodes and can return fewer than ``top_k``."""

_ADD_BATCH = 65_536
_faiss_module = None


def _faiss():
    """Import faiss once; size its OpenMP pool to the CPUs we may use unless the user chose.

    OpenMP's default counts all host cores, which oversubscribes a CPU-limited container; an
    explicit ``OMP_NUM_THREADS`` is left alone.
    """
    global _faiss_module
    if _faiss_module is None:
        import faiss

        if "OMP_NUM_THREADS" not in os.environ:
            try:
                n = len(os.sched_getaffinity(0))
            except AttributeError:  # pragma: no cover - not Linux
                n = os.cpu_count() or 1
            faiss.omp_set_num_threads(max(1, n))
        _faiss_module = faiss
    return _faiss_module


def _normalized(x: np.ndarray) -> np.ndarray:
    """Row-wise L2-normalised float32 C-contiguous copy (zero rows stay zero)."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


class DenseIndex:
    """Cosine (inner product on L2-normalised float32 vectors) k-nearest-neighbour search.

    ``kind`` is ``"flat"`` (``IndexIDMap2(IndexFlatIP)``, exact) below ``ann_threshold``
    vectors and ``"hnsw"`` (``IndexIDMap2(IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT))``) at or
    above it. Vectors are L2-normalised on the way in (queries too), so scores are cosines in
    [-1, 1]. Ids are arbitrary unique int64 chunk ids.

    HNSW parameters M=32, efConstruction=80, efSearch=96 (module constants): the smallest graph
    that kept recall@10 >= .98 against exact search up to 1M MiniLM-like vectors; the
    measurements are in ``docs/index-tuning.md``.
    The flat/HNSW threshold (``ann_threshold``, default 50,000 from
    ``RetrievalConfig.ann_threshold``) trades exact results for latency: a flat search reads
    every vector (100k x 384 float32 = 147 MiB per query) while HNSW reads a few thousand.

    Attributes: ``ntotal`` (vectors held), ``dim``, ``kind``, ``ef_search``.
    """

    def __init__(self, index, kind: str, ef_search: int = HNSW_EF_SEARCH):
        self._index = index
        self.kind = kind
        self.ef_search = int(ef_search)
        self._id_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"DenseIndex(kind={self.kind!r}, ntotal={self.ntotal}, dim={self.dim})"

    @property
    def ntotal(self) -> int:
        """Number of vectors held."""
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        """Vector dimension d."""
        return int(self._index.d)

    # ------------------------------------------------------------------ build
    @classmethod
    def empty(cls, dim: int, kind: str = "flat", *, hnsw_m: int = HNSW_M,
              ef_construction: int = HNSW_EF_CONSTRUCTION, ef_search: int = HNSW_EF_SEARCH
              ) -> "DenseIndex":
        """An empty index of ``kind`` "flat" or "hnsw" for ``dim``-dimensional vectors.

        Raises ValueError on an unknown kind or ``dim < 1``.
        """
        faiss = _faiss()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, not {dim}")
        if kind == "flat":
            inner = faiss.IndexFlatIP(int(dim))
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(int(dim), int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = int(ef_construction)
            inner.hnsw.efSearch = int(ef_search)
        else:
            raise ValueError(f"kind must be 'flat' or 'hnsw', not {kind!r}")
        return cls(faiss.IndexIDMap2(inner), kind, ef_search)

    @classmethod
    def build(cls, vectors: np.ndarray, ids: np.ndarray, ann_threshold: int = DEFAULT_ANN_THRESHOLD,
              **hnsw_params) -> "DenseIndex":
        """Index ``vectors`` ((n, d) float32) under ``ids`` ((n,) int64, unique, arbitrary).

        HNSW when ``n >= ann_threshold``, flat otherwise; ``hnsw_params`` (``hnsw_m``,
        ``ef_construction``, ``ef_search``) override the measured defaults. Rows are normalised
        in batches of 65,536 so the extra memory is one batch. Raises ValueError on shape
        mismatch or repeated ids.
        """
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-d (n, d), not shape {vectors.shape}")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"{vectors.shape[0]} vectors but {ids.shape[0]} ids")
        if np.unique(ids).shape[0] != ids.shape[0]:
            raise ValueError("vector ids must be unique")
        kind = "hnsw" if vectors.shape[0] >= ann_threshold else "flat"
        index = cls.empty(vectors.shape[1], kind, **hnsw_params)
        index.reserve(vectors.shape[0])
        index._add(vectors, ids)
        log.debug("built %s", index)
        return index

    def reserve(self, n: int) -> None:
        """Pre-allocate vector storage for ``n`` vectors in total.

        ``std::vector`` growth during batched adds briefly holds the old and the new buffer
        (peak up to 2x the stored vectors); after ``reserve(n)`` adds up to ``n`` vectors never
        reallocate, so peak memory is the final size (``docs/index-tuning.md``). The memory is
        touched (resident) immediately.
        """
        faiss = _faiss()
        inner = faiss.downcast_index(self._index.index)
        flat = inner if self.kind == "flat" else faiss.downcast_index(inner.storage)
        want = int(n) * self.dim * 4
        have = flat.codes.size()
        if want > have:
            flat.codes.resize(want)  # grows capacity (zero-filled) ...
            flat.codes.resize(have)  # ... and shrinking keeps that capacity

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        for s in range(0, vectors.shape[0], _ADD_BATCH):
            self._index.add_with_ids(_normalized(vectors[s:s + _ADD_BATCH]),
                                     np.ascontiguousarray(ids[s:s + _ADD_BATCH], dtype=np.int64))
        self._id_cache = None

    def add(self, vectors: np.ndarray, ids: np.ndarray, check_ids: bool = True) -> None:
        """Append ``vectors`` ((m, d) float32) under new unique ``ids`` ((m,) int64).

        The kind does not change; rebuild with :meth:`build` when the size crosses the
        threshold. Adding in batches keeps memory at the index plus one batch. Raises
        ValueError on a wrong shape, or (``check_ids``, O(ntotal)) an id already present or
        repeated.
        """
        vectors = np.asarray(vectors)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected ({ids.shape[0]}, {self.dim}) vectors, got {vectors.shape}")
        if check_ids and (np.unique(ids).shape[0] != ids.shape[0] or np.isin(ids, self.ids).any()):
            raise ValueError("vector ids must be unique and not already in the index")
        self._add(vectors, ids)

    def add_normalized(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Append rows that are already stored L2-normalised (another index's
        :meth:`_storage`, (m, d) float32) under new unique ``ids`` ((m,) int64), as they are:
        normalising again could move the last bit, and a fused copy must score exactly as
        the original (:mod:`rag.index.segment_search`). Ids are not checked."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected ({ids.shape[0]}, {self.dim}) vectors, got {vectors.shape}")
        self._index.add_with_ids(vectors, ids)
        self._id_cache = None

    # ------------------------------------------------------------------ ids and vectors
    @property
    def ids(self) -> np.ndarray:
        """(ntotal,) int64 ids in insertion order (a copy)."""
        return _faiss().vector_to_array(self._index.id_map).astype(np.int64, copy=False)

    def _positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(internal positions, the ids found) of ``ids``; ids not present are dropped."""
        if self._id_cache is None or self._id_cache[0] != self.ntotal:
            ext = self.ids
            order = np.argsort(ext, kind="stable")
            self._id_cache = (self.ntotal, ext[order], order)
        _, sorted_ext, order = self._id_cache
        if sorted_ext.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        j = np.minimum(np.searchsorted(sorted_ext, ids), sorted_ext.size - 1)
        found = sorted_ext[j] == ids
        return order[j[found]], ids[found]

    def _storage(self) -> np.ndarray:
        """(ntotal, d) float32 zero-copy view of the stored (normalised) vectors."""
        faiss = _faiss()
        inner = faiss.downcast_index(self._index.index)
        flat = inner if self.kind == "flat" else faiss.downcast_index(inner.storage)
        n, d = self.ntotal, self.dim
        if n == 0:
            return np.zeros((0, d), np.float32)
        return faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)

    def get_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored normalised vectors of ``ids``: ``(vectors (k, d) float32, found_ids (k,) int64)``.

        Ids not in the index are left out of both arrays.
        """
        pos, found = self._positions(np.asarray(ids, dtype=np.int64).reshape(-1))
        return self._storage()[pos].copy(), found

    def remove(self, ids: np.ndarray) -> int:
        """Remove ``ids``; returns how many were present. Flat: in place. HNSW (no deletion
        in a graph): rebuilt from the remaining stored vectors with the same parameters."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if self.kind == "flat":
            removed = int(self._index.remove_ids(_faiss().IDSelectorBatch(ids)))
            self._id_cache = None
            return removed
        all_ids = self.ids
        keep = ~np.isin(all_ids, ids)
        removed = int((~keep).sum())
        if removed:
            vectors = self._storage()[keep].copy()
            inner = _faiss().downcast_index(self._index.index)
            new = DenseIndex.empty(self.dim, "hnsw", hnsw_m=inner.hnsw.nb_neighbors(1),
                                   ef_construction=inner.hnsw.efConstruction, ef_search=self.ef_search)
            new._add(vectors, all_ids[keep])
            self._index, self._id_cache = new._index, None
        return removed

    # ------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, top_k: int, allowed_ids: np.ndarray | None = None,
               excluded_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours by cosine; see :meth:`_search` for shapes and errors.

        A single query runs on one OpenMP thread (unless ``OMP_NUM_THREADS`` is set): FAISS
        parallelises over queries, and an idle pool spinning beside the embedder's slows both
        (``docs/index-tuning.md``). ``omp_set_num_threads`` sets the calling thread's OpenMP
        value only, so concurrent requests do not disturb each other.
        """
        q = np.asarray(queries)
        single = q.ndim == 1 or q.shape[0] == 1
        if not single or "OMP_NUM_THREADS" in os.environ:
            return self._search(queries, top_k, allowed_ids, excluded_ids)
        faiss = _faiss()
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._search(queries, top_k, allowed_ids, excluded_ids)
        finally:
            faiss.omp_set_num_threads(before)

    def _search(self, queries: np.ndarray, top_k: int, allowed_ids: np.ndarray | None = None,
                excluded_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours by cosine.

        ``queries``: (m, d) (or (d,)) float32, normalised here. Returns ``(scores (m, k)
        float32, ids (m, k) int64)``, ``k = top_k``, best first; where fewer than ``k`` vectors
        exist (or are allowed) the rest of the row is id -1 with score -inf.
        ``allowed_ids`` (int64, sorted unique): only these ids may be returned. The filter acts
        inside the search (``IDSelectorBatch`` via ``SearchParameters``), so ``top_k`` come back
        whenever that many are allowed: a filter allowing few vectors (flat: under a quarter;
        HNSW: at most :data:`EXACT_FILTER_MAX`) is answered exactly over the allowed vectors,
        and an HNSW filtered search that still returns too few is redone that way.
        ``excluded_ids`` (int64, only without ``allowed_ids``): these ids are never returned
        (``IDSelectorNot`` inside the search, HNSW beam unchanged): for a few deleted rows,
        cheaper than searching for ``k + excluded`` and dropping them. An HNSW row may then
        come back short of ``k`` (the caller checks).
        Raises ValueError on a wrong query dimension or ``top_k < 1``.
        """
        faiss = _faiss()
        q = _query_matrix(queries, top_k, self.dim)
        m, k = q.shape[0], int(top_k)
        if allowed_ids is None:
            if self.ntotal == 0:
                return _padded(m, k)
            params, batch = None, None
            if excluded_ids is not None and len(excluded_ids):
                batch = faiss.IDSelectorBatch(np.ascontiguousarray(excluded_ids, dtype=np.int64))
                sel = faiss.IDSelectorNot(batch)  # holds a pointer to batch: keep both alive below
                params = (faiss.SearchParametersHNSW(sel=sel, efSearch=max(self.ef_search, k)) if self.kind == "hnsw"
                          else faiss.SearchParameters(sel=sel))
            elif self.kind == "hnsw":
                params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
            scores, ids = self._index.search(q, k, params=params)
            del batch
            return _clean(scores, ids)
        allowed = np.asarray(allowed_ids, dtype=np.int64).reshape(-1)
        if allowed.size == 0 or self.ntotal == 0:
            return _padded(m, k)
        few = allowed.size * 4 < self.ntotal if self.kind == "flat" else allowed.size <= EXACT_FILTER_MAX
        if few:
            return self._exact_subset(q, k, allowed)
        selector = faiss.IDSelectorBatch(allowed)
        if self.kind == "flat":
            params = faiss.SearchParameters(sel=selector)
        else:
            # rejected nodes still guide the walk; widen the beam as the filter gets tighter
            ef = max(self.ef_search, k, min(4096, math.ceil(k * self.ntotal / allowed.size)))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        scores, ids = _clean(*self._index.search(q, k, params=params))
        if self.kind == "hnsw":
            need = min(k, allowed.size)
            short = (ids >= 0).sum(axis=1) < need
            if short.any():
                s2, i2 = self._exact_subset(q[short], k, allowed)
                scores[short], ids[short] = s2, i2
        return scores, ids

    def _exact_subset(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, ext = self._positions(allowed)
        if pos.size == 0:
            return _padded(q.shape[0], k)
        sims = q @ self._storage()[pos].T  # (m, a)
        kk = min(k, pos.size)
        if kk < pos.size:
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        else:
            top = np.broadcast_to(np.arange(pos.size), (q.shape[0], pos.size))
        top_s = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_s, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        scores, ids = _padded(q.shape[0], k)
        scores[:, :kk] = np.take_along_axis(sims, top, axis=1)
        ids[:, :kk] = ext[top]
        return scores, ids

    # ------------------------------------------------------------------ persistence
    def save(self, path: Path) -> None:
        """Write the FAISS index to ``path`` (``faiss.write_index``; no pickle)."""
        _faiss().write_index(self._index, str(path))

    @classmethod
    def load(cls, path: Path) -> "DenseIndex":
        """Read an index written by :meth:`save`.

        Raises :class:`rag.errors.IndexFormatError` (``path``, one-line reason) when the file
        is missing, truncated or garbled, or is not an ``IndexIDMap2`` over an inner-product
        flat or HNSW index.
        """
        faiss = _faiss()
        path = Path(path)
        if not path.is_file():
            raise IndexFormatError(str(path), "missing")
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, MemoryError, OSError) as e:
            raise IndexFormatError(str(path), f"unreadable FAISS index ({_one_line(e)})") from None
        if not isinstance(index, faiss.IndexIDMap2):
            raise IndexFormatError(str(path), f"expected IndexIDMap2, found {type(index).__name__}")
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            kind, ef = "hnsw", int(inner.hnsw.efSearch)
        elif isinstance(inner, faiss.IndexFlatIP):
            kind, ef = "flat", HNSW_EF_SEARCH
        else:
            raise IndexFormatError(str(path), f"unsupported inner index {type(inner).__name__}")
        if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexFormatError(str(path), "metric is not inner product")
        if index.id_map.size() != index.ntotal:
            raise IndexFormatError(str(path), "id map and vector count disagree")
        return cls(index, kind, ef)


class NumpyFlatIndex:
    """Exact inner-product k-nearest-neighbour search in numpy over stored vectors: what a
    flat segment needs, without FAISS.

    ``vectors``: (n, d) float32 rows already L2-normalised (a segment's memory-mapped
    ``vectors.npy`` is used as it is, never copied); ``ids``: (n,) int64 unique chunk ids, rows as
    ``vectors``. :meth:`search` keeps :meth:`DenseIndex.search`'s contract: queries (m, d) or
    (d,) float32, L2-normalised here; returns ``(scores (m, k) float32, ids (m, k) int64)``,
    ``k = top_k``, best first, ties by ascending id, the rest of a row padded with -inf / -1;
    ``allowed_ids`` (sorted unique int64: only these may come back) or ``excluded_ids`` (never
    returned); ValueError on a wrong query dimension or ``top_k < 1``.
    Why: a flat search is a matrix-vector product, and numpy over the memory-mapped file
    spares a one-shot process the FAISS import and ``dense.faiss`` read (~50-80 ms).
    Scores are row-wise ``np.einsum`` dot products (single-threaded, not BLAS): a row's score
    does not depend on its position in the matrix, so a gathered subset or a fused copy of
    several segments scores bit for bit as the segment itself.

    Attributes: ``vectors``, ``ntotal``, ``dim``, ``kind`` (``"flat"``).
    """

    kind = "flat"

    def __init__(self, vectors: np.ndarray, ids: np.ndarray):
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if vectors.ndim != 2 or vectors.shape[0] != ids.shape[0]:
            raise ValueError(f"expected ({ids.shape[0]}, d) vectors, got shape {vectors.shape}")
        self.vectors = vectors
        self._ids = ids
        ascending = ids.size < 2 or bool(np.all(ids[1:] > ids[:-1]))
        self._order = None if ascending else np.argsort(ids, kind="stable")  # positions in id order
        self._sorted = ids if ascending else ids[self._order]

    def __repr__(self) -> str:
        return f"NumpyFlatIndex(ntotal={self.ntotal}, dim={self.dim})"

    @property
    def ntotal(self) -> int:
        return int(self._ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def ids(self) -> np.ndarray:
        """(ntotal,) int64 ids, rows in order (a copy)."""
        return self._ids.copy()

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Rows of ``ids`` (ascending where ``ids`` is); ids not present are dropped."""
        if self._sorted.size == 0 or ids.size == 0:
            return np.zeros(0, np.int64)
        j = np.minimum(np.searchsorted(self._sorted, ids), self._sorted.size - 1)
        j = j[self._sorted[j] == ids]
        return j if self._order is None else self._order[j]

    def search(self, queries: np.ndarray, top_k: int, allowed_ids: np.ndarray | None = None,
               excluded_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest neighbours by cosine; the contract is the class docstring's."""
        q = _query_matrix(queries, top_k, self.dim)
        m, k = q.shape[0], int(top_k)
        scores, ids = _padded(m, k)
        if self.ntotal == 0:
            return scores, ids
        rows, dead = None, None  # rows: the allowed rows (None: all); dead: excluded rows
        if allowed_ids is not None:
            rows = self._positions(np.asarray(allowed_ids, dtype=np.int64).reshape(-1))
            if rows.size == 0:
                return scores, ids
        elif excluded_ids is not None and len(excluded_ids):
            dead = self._positions(np.asarray(excluded_ids, dtype=np.int64).reshape(-1))
        few = rows is not None and rows.size * 4 < self.ntotal  # gather the few rows, else score all
        cand = self.vectors[rows] if few else self.vectors
        cand_ids = self._ids[rows] if rows is not None else self._ids
        for r in range(m):
            sims = np.einsum("ij,j->i", cand, q[r])
            if rows is not None and not few:
                sims = sims[rows]
            if dead is not None and dead.size:
                sims[dead] = -np.inf
            s, i = _top_k(sims, cand_ids, k)
            scores[r, :s.size], ids[r, :s.size] = s, i
        ids[scores == -np.inf] = -1
        return scores, ids


def _top_k(sims: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``min(k, a)`` of one row: ``sims`` (a,) float32, ``ids`` (a,) int64 ->
    (scores, ids) by score descending, ties by ascending id. ``argpartition`` finds the k-th
    score; every row scoring at least that (ties at the cut included) is then ordered, so which
    tied rows are kept does not depend on the partition."""
    a = sims.shape[0]
    if k < a:
        cut = sims[np.argpartition(sims, a - k)[a - k]]
        pick = np.flatnonzero(sims >= cut)
    else:
        pick = np.arange(a)
    pick = pick[np.lexsort((ids[pick], -sims[pick]))[:k]]
    return sims[pick], ids[pick]


def _query_matrix(queries: np.ndarray, top_k: int, dim: int) -> np.ndarray:
    """(m, dim) float32 L2-normalised copy of ``queries`` ((m, dim) or (dim,)); ValueError on
    another shape or ``top_k < 1``."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, not {top_k}")
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q.reshape(1, -1)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must have shape (m, {dim}), not {np.shape(queries)}")
    return _normalized(q)


def _padded(m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)


def _clean(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    scores[ids < 0] = -np.inf
    return scores, ids


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else type(e).__name__)
    msg = " ".join(msg.split())
    return msg[:200]
