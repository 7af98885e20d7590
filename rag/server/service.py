"""What the routes of ``rag serve`` ask of the one shared :class:`rag.RAG`.

Every method here is blocking (the routes run them in a worker thread) and request-scoped:
nothing about one request is kept on the shared engine. The engine is shared by all requests;
reads of one request come from one committed index state, and commits (by the job worker,
:mod:`rag.server.jobs`) never disturb readers.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import RagError
from ..types import Answer, Hit, SearchResult
from .schemas import Display

log = logging.getLogger("rag")


@dataclass(frozen=True)
class Sources:
    """The first event of an answer stream: the retrieved hits (numbered 1..n in this order,
    the numbers ``[n]`` markers use), the query actually searched (a follow-up rewritten with
    the history) and the index generation they come from."""

    query: str
    hits: tuple[Hit, ...]
    generation: int | None


def document_id(source: str) -> str:
    """The id of an indexed file on the wire: the first 16 hex chars of sha256(source key).
    Why not the path: it goes in URLs and must not show the server's folders."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


class Service:
    """The engine adapter of one server: search, answer streams, document listing, records.

    ``rag``: the shared :class:`rag.RAG` (opened or created on the index folder).
    ``uploads_dir``: where uploaded files are kept (their path is their document key).
    ``generation_slots``: answers generated at once; more wait their turn (FIFO-ish) after
    their sources are sent. Why: generation is CPU-bound and each one already uses every core
    PyTorch is given, so running several at once only makes each slower (and searches with
    them); 1 suits a CPU, more suit a GPU or a remote generator.
    """

    def __init__(self, rag, uploads_dir: str | Path, records=None, generation_slots: int = 1):
        self.rag = rag
        self.generation_slots = int(generation_slots)
        self._slots = threading.BoundedSemaphore(self.generation_slots)
        self.uploads_dir = Path(uploads_dir)
        self.display = Display(self.uploads_dir)
        self._records = records
        self._records_lock = threading.Lock()
        self.ready = threading.Event()
        self.warm_up_error: str | None = None
        self.warm_up_s: float | None = None

    # ---- start-up ---------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load every model once (:meth:`rag.RAG.warm_up`) and open the record store, before
        ``/health`` says ready. Errors are kept in ``warm_up_error`` (``/health`` reports them)
        rather than raised."""
        t0 = time.perf_counter()
        try:
            self.rag.warm_up()
            self.records()
        except RagError as e:
            self.warm_up_error = str(e).splitlines()[0]
            log.error("warm-up failed: %s", self.warm_up_error)
        except Exception as e:  # noqa: BLE001 - reported by /health, not a crash of the server
            self.warm_up_error = f"{e.__class__.__name__}: {e}"
            log.exception("warm-up failed")
        self.warm_up_s = time.perf_counter() - t0
        self.ready.set()

    def has_index(self) -> bool:
        return bool(self.rag.store.exists())

    def generation(self) -> int:
        """The committed generation readers see now. Raises IndexNotFoundError before the
        first commit."""
        return int(self.rag.generation)

    # ---- reads --------------------------------------------------------------------------------
    def search(self, query: str, *, top_k: int | None, mode: str | None, filters: Mapping[str, Any] | None,
               principals: Sequence[str] | None) -> tuple[list[Hit], int | None, dict[str, float]]:
        """Hits (best first), the generation they all come from, and timings in seconds."""
        res = self.rag.search_result(query, top_k, mode=mode, filters=filters, principals=principals)
        return list(res.hits), res.generation, dict(res.timings)

    def answer_events(self, question: str, *, history: Sequence[Mapping[str, str]], top_k: int | None,
                      filters: Mapping[str, Any] | None, principals: Sequence[str] | None,
                      stop: threading.Event | None = None) -> Iterator[Sources | str | Answer]:
        """Yield :class:`Sources` first, then the answer's text pieces, then the final Answer:
        the steps and results of :meth:`rag.RAG.stream`, with the hits announced before the
        first piece. Between the two the answer waits for a generation slot (see the class);
        ``stop`` set while waiting ends the iterator. Closing the iterator stops generation at
        the next piece."""
        events = self._answer_events(question, history=history, top_k=top_k, filters=filters, principals=principals)
        held = False
        try:
            first = next(events, None)
            if first is None:
                return
            yield first  # the Sources: retrieval needs no slot
            while not self._slots.acquire(timeout=0.2):
                if stop is not None and stop.is_set():
                    return
            held = True
            yield from events
        finally:
            events.close()
            if held:
                self._slots.release()

    def _answer_events(self, question: str, *, history: Sequence[Mapping[str, str]], top_k: int | None,
                       filters: Mapping[str, Any] | None, principals: Sequence[str] | None) -> Iterator[Sources | str | Answer]:
        # QueryEngine.stream_events: the same steps as RAG.stream, the retrieval announced first.
        events = self.rag.engine.stream_events(question, top_k, history=list(history), filters=filters,
                                               principals=principals)
        try:
            for ev in events:
                if isinstance(ev, SearchResult):
                    yield Sources(query=ev.query or question, hits=tuple(ev.hits), generation=ev.generation)
                else:
                    yield ev
        finally:
            events.close()

    def documents(self, principals: Sequence[str] | None) -> list[dict[str, Any]]:
        """The indexed files the caller may see, one dict per file: ``id``, ``source`` (shown
        form), ``title``, ``type``, ``documents``, ``chunks``, ``groups``, ``mtime``. A file
        is visible when at least one of its documents is."""
        if not self.has_index():
            return []
        by_source: dict[str, dict[str, Any]] = {}
        for d in self._document_records():
            if principals is not None and d.acl and not set(d.acl) & set(principals):
                continue
            f = by_source.setdefault(d.source, {
                "id": document_id(d.source), "source": self.display(d.source), "title": d.title,
                "type": (d.metadata or {}).get("type"), "documents": 0, "chunks": 0, "groups": set(), "mtime": d.mtime,
                "duplicate_of": None})
            f["documents"] += 1
            f["chunks"] += int(d.n_chunks)
            f["groups"].update(d.acl)
            if d.alias_of and f["chunks"] == 0:
                f["duplicate_of"] = "another document"
        out = []
        for src, f in sorted(by_source.items(), key=lambda kv: kv[1]["source"]):
            f["groups"] = sorted(f["groups"])
            f["_key"] = src
            out.append(f)
        return out

    def _document_records(self) -> list[Any]:
        """Every document of the current committed state, kept and aliases
        (:class:`rag.index.backend.DocumentRecord`: source, title, metadata, acl, n_chunks, ...)."""
        with self.rag.lease() as reader:
            return list(reader.documents())

    # ---- records (sessions, feedback) ------------------------------------------------------------
    def records(self):
        """The conversation record store of this index (:mod:`rag.records`), opened once."""
        with self._records_lock:
            if self._records is None:
                from ..conversation import default_store

                self._records = default_store(self.rag)
            return self._records

    def session_owner(self, session_id: str) -> str | None:
        """The user who started ``session_id`` (None when there is no such session)."""
        s = self.records().session(session_id)
        return None if s is None else s["user_id"]

    def record_turn(self, answer: Answer, *, owner: str, user_id: str, session_id: str, latency_s: float) -> int | None:
        """Store one answered turn in ``session_id`` (created for ``owner`` if new); returns its
        turn number."""
        from ..conversation import record_answer

        store = self.records()
        store.ensure_session(session_id, owner)
        rec = record_answer(store, self.rag, answer, user_id=user_id, session_id=session_id, latency_s=latency_s)
        return rec.get("turn")
