"""One segment folder, read-only: its file layout and :class:`Segment` (see
:mod:`rag.index.segments` for the whole layout, commits, merges and garbage collection).

Readers (:mod:`rag.index.segment_search`) need only this module; writing lives in
:mod:`rag.index.segments`.
"""

from __future__ import annotations

import json
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError

SEGMENTS = "segments"
IDS = "ids.npy"
VECTORS = "vectors.npy"
DENSE = "dense.faiss"
POSTINGS = "postings.npz"
VOCAB = "vocab.json"
PARAMS = "params.json"
TOMBSTONES = "tombstones.npy"
SEGMENT_LIST = "segments.json"
FORMAT = "rag-segment"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- one segment
class Segment:
    """One immutable segment folder, loaded read-only (thread-safe after load).

    ``ids`` (n,) int64 ascending; ``doc_lengths`` (n,) int32; the posting arrays as in the
    module docstring; ``term_ids`` term -> row of ``indptr``. The FAISS index loads on first
    use (:attr:`dense`); vectors are memory-mapped on request (:meth:`vectors`), and a flat
    segment is searched over them in numpy (:attr:`flat`, :meth:`searcher`) without FAISS.
    Raises IndexFormatError naming the bad file.
    """

    def __init__(self, folder: Path):
        self.dir = Path(folder)
        self.name = self.dir.name
        params = _read_json(self.dir / PARAMS)
        if not isinstance(params, dict) or params.get("format") != FORMAT or params.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(str(self.dir / PARAMS), f"not a {FORMAT} version {FORMAT_VERSION} parameter file")
        self.tokenizer = dict(params.get("tokenizer") or {})
        self.ids = _load_npy(self.dir / IDS, np.int64)
        want = {"indptr": np.int64, "indices": np.int32, "tf": np.float32, "doc_lengths": np.int32}
        p = self.dir / POSTINGS
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in want}
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise IndexFormatError(str(p), f"unreadable postings ({type(e).__name__}: {e})".replace("\n", " ")) from None
        for k, dt in want.items():
            if arrays[k].dtype != dt or arrays[k].ndim != 1:
                raise IndexFormatError(str(p), f"array {k!r} is not 1-d {np.dtype(dt)}")
        self.indptr, self.indices, self.tf, self.doc_lengths = (arrays[k] for k in want)
        vocab = _read_json(self.dir / VOCAB)
        if not isinstance(vocab, list) or len(vocab) + 1 != self.indptr.shape[0]:
            raise IndexFormatError(str(self.dir / VOCAB), f"expected {self.indptr.shape[0] - 1} terms")
        n = self.ids.shape[0]
        if self.doc_lengths.shape[0] != n or self.indptr[-1] != self.indices.shape[0] or self.tf.shape[0] != self.indices.shape[0]:
            raise IndexFormatError(str(p), f"postings do not fit the {n} rows of {IDS}")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise IndexFormatError(str(p), "row position out of range")
        if n > 1 and np.any(np.diff(self.ids) <= 0):
            raise IndexFormatError(str(self.dir / IDS), "ids are not ascending")
        self.term_ids = {t: i for i, t in enumerate(vocab)}
        self.total_length = int(self.doc_lengths.sum(dtype=np.int64))
        self._dense = None
        self._flat = None
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dense(self):
        """The segment's :class:`~rag.index.dense.DenseIndex` (loaded once)."""
        if self._dense is None:
            with self._lock:
                if self._dense is None:
                    from .dense import DenseIndex

                    d = DenseIndex.load(self.dir / DENSE)
                    if d.ntotal != self.rows:
                        raise IndexFormatError(str(self.dir / DENSE), f"holds {d.ntotal} vectors for {self.rows} rows")
                    self._dense = d
        return self._dense

    @property
    def flat(self):
        """A :class:`~rag.index.dense.NumpyFlatIndex` over the memory-mapped :meth:`vectors`
        and :attr:`ids` (made once): exact search for a segment the manifest lists as
        ``"flat"``, with the results of its FAISS flat index but no FAISS import or read. The
        mapping keeps the file readable after a later commit collects the folder."""
        if self._flat is None:
            with self._lock:
                if self._flat is None:
                    from .dense import NumpyFlatIndex

                    self._flat = NumpyFlatIndex(self.vectors(), self.ids)
        return self._flat

    def searcher(self, kind: str):
        """What dense search uses for this segment given its manifest ``kind``
        (:attr:`SegmentSpec.dense`): :attr:`flat` for ``"flat"``, :attr:`dense` (FAISS) else."""
        return self.flat if kind == "flat" else self.dense

    def vectors(self) -> np.ndarray:
        """(n, dim) float32 memory-mapped stored vectors, rows as :attr:`ids`."""
        v = _load_npy(self.dir / VECTORS, np.float32, ndim=2, mmap=True)
        if v.shape[0] != self.rows:
            raise IndexFormatError(str(self.dir / VECTORS), f"holds {v.shape[0]} vectors for {self.rows} rows")
        return v


_CACHE: "weakref.WeakValueDictionary[tuple, Segment]" = weakref.WeakValueDictionary()
_CACHE_LOCK = threading.Lock()


def load_segment(folder: Path) -> Segment:
    """The loaded segment at ``folder``; one instance per folder per process while any
    snapshot uses it (segments never change, so a reopened generation reuses what is loaded)."""
    folder = Path(folder)
    try:
        st = (folder / IDS).stat()
    except FileNotFoundError:
        raise IndexFormatError(str(folder / IDS), "missing file") from None
    key = (str(folder.resolve()), st.st_ino, st.st_mtime_ns, st.st_size)
    with _CACHE_LOCK:
        seg = _CACHE.get(key)
    if seg is None:
        seg = Segment(folder)
        with _CACHE_LOCK:
            seg = _CACHE.setdefault(key, seg)
    return seg


# ---------------------------------------------------------------------------- helpers
def _load_npy(path: Path, dtype: Any, ndim: int = 1, mmap: bool = False) -> np.ndarray:
    try:
        a = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFormatError(str(path), "missing file") from None
    except (ValueError, OSError) as e:
        raise IndexFormatError(str(path), f"not a readable array file ({e})".replace("\n", " ")) from None
    if a.dtype != dtype or a.ndim != ndim:
        raise IndexFormatError(str(path), f"expected a {ndim}-d {np.dtype(dtype)} array, found {a.ndim}-d {a.dtype}")
    return a


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(str(path), "missing file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise IndexFormatError(str(path), f"unreadable ({type(e).__name__})") from None


__all__ = ["Segment", "load_segment"]
