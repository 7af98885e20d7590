"""Overlapped ingest: loading and planning in a producer thread, embedding in the caller's.

Why: ONNX Runtime releases the GIL while it embeds a batch, and on a 2-core machine its two
intra-op threads leave gaps (operator boundaries, the Python between batches); loading, redaction,
deduplication and chunking of the next documents (single-threaded Python, about 8 % of the CPU
time of a SciFact ingest) fill them instead of running before the first batch
(``benchmarks/ingest_throughput.py`` measures the overhead over pure embedding).

:func:`background` runs a generator in a daemon thread behind a bounded queue (at most
``maxsize`` items ahead, so memory stays bounded whatever the corpus size) and re-raises the
producer's exception in the consumer. :class:`WindowEmbedder` embeds the texts of planned
documents a window at a time: cache lookups, each unique text once, one embedder call per window
(which sorts by length, so batches carry little padding), then yields each document with its
vectors in input order.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger("rag")

_END = object()


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


def background(items: Iterable[Any], maxsize: int = 16) -> Iterator[Any]:
    """Iterate over ``items`` produced by a daemon thread, at most ``maxsize`` items ahead.

    An exception raised by the producer is raised here (after the items it produced before);
    leaving the loop early (``break``, an exception in the consumer, ``close()``) stops the
    producer at its next item. ``maxsize`` >= 1."""
    q: queue.Queue = queue.Queue(maxsize=max(1, int(maxsize)))
    stop = threading.Event()

    def put(x: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in items:
                if not put(x):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failure(e))
            return
        put(_END)

    t = threading.Thread(target=run, name="rag-ingest-producer", daemon=True)
    t.start()
    try:
        while True:
            x = q.get()
            if x is _END:
                return
            if isinstance(x, _Failure):
                raise x.error
            yield x
    finally:
        stop.set()
        t.join(timeout=5.0)


class WindowEmbedder:
    """Vectors for planned documents, a window of at least ``window_texts`` texts at a time.

    ``embedder``: the document embedder (:meth:`embed_documents`, (n, dim) float32 rows in input
    order, batched by the embedder itself), called once per window; ``cache``: an
    :class:`rag.index.embcache.EmbeddingCache` or None; ``report``: counts ``chunks_embedded`` (unique texts embedded) and
    ``chunks_from_cache`` (texts whose vector came from the cache); ``progress``: the ingest's
    progress function (stage "embedding"; the total grows as documents are planned).

    Counts and vectors equal one window over all texts: a text is looked up in the cache the
    first time it appears in this run and embedded at most once per run, whichever window it is
    in. Only the caller's thread uses it."""

    def __init__(self, embedder, cache, *, window_texts: int, report, dim: int,
                 progress: Callable[[str, int, int], None] | None = None):
        from .index.embcache import embed_key

        self.embedder, self.cache, self.report, self.progress = embedder, cache, report, progress
        self.window_texts, self.dim = max(1, int(window_texts)), int(dim)
        self._key = embed_key
        self._vectors: dict[str, np.ndarray] = {}  # every vector of this run, by text key
        self._from_cache: set[str] = set()
        self._pending: list[Any] = []
        self._pending_texts = 0
        self._todo_texts = 0
        self._done_texts = 0

    def add(self, planned: Iterable[Any]) -> Iterator[tuple[Any, np.ndarray]]:
        """Queue planned documents (each with ``.texts``); yields ``(planned, (n, dim) float32)``
        for every queued document once a full window is embedded, in the order added."""
        for p in planned:
            self._pending.append(p)
            self._pending_texts += len(p.texts)
        if self._pending_texts >= self.window_texts:
            yield from self.flush()

    def flush(self) -> Iterator[tuple[Any, np.ndarray]]:
        """Embed whatever is queued and yield it (see :meth:`add`)."""
        window, self._pending, self._pending_texts = self._pending, [], 0
        if not window:
            return
        keys = [[self._key(t) for t in p.texts] for p in window]
        texts: dict[str, str] = {}
        for p, ks in zip(window, keys):
            for k, t in zip(ks, p.texts):
                if k not in self._vectors:
                    texts.setdefault(k, t)
        if texts:
            found = self.cache.get_many(list(texts)) if self.cache is not None else {}
            self._from_cache.update(found)
            self._vectors.update(found)
            # one call per window: the embedder sorts the texts by word pieces into batches of
            # similar length, so little padding is embedded (rows come back in input order)
            todo = [k for k in texts if k not in found]
            self._todo_texts += len(todo)
            self._report_progress()
            if todo:
                vecs = np.asarray(self.embedder.embed_documents([texts[k] for k in todo]), dtype=np.float32)
                if self.cache is not None:
                    self.cache.put_many(todo, vecs)
                self._vectors.update(zip(todo, vecs))
                self._done_texts += len(todo)
                self._report_progress()
            self.report.chunks_embedded += len(todo)
        self.report.chunks_from_cache += sum(1 for ks in keys for k in ks if k in self._from_cache)
        for p, ks in zip(window, keys):
            vec = np.stack([self._vectors[k] for k in ks]).astype(np.float32, copy=False) if ks \
                else np.zeros((0, self.dim), dtype=np.float32)
            yield p, vec

    def _report_progress(self) -> None:
        if self.progress:
            self.progress("embedding", self._done_texts, self._todo_texts)
