"""Multi-turn conversations for chatbots.

``Conversation`` keeps a session's history, rewrites follow-up questions into standalone
queries (via :meth:`rag.RAG.ask` with ``history``) and writes every answered turn as one record
(:mod:`rag.records`: user, session, UTC time, question, rewritten query, answer, citations,
per-stage latency, index generation, feedback). Sessions survive restarts and re-ingests;
resuming a ``session_id`` reloads its turns as history.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .records import RecordStore
from .types import Answer

SessionStore = RecordStore
"""The name this store had before records existed (``SessionStore.for_index(dir)``)."""


def generation_of(rag) -> int | None:
    """The generation ``rag`` answers from now (None when it cannot tell): the fallback for
    an :class:`Answer` whose ``generation`` is unset."""
    try:
        return int(rag.generation)
    except Exception:  # noqa: BLE001 - a record must never fail because of this
        return None


def default_store(rag, path: str | Path | None = None) -> RecordStore:
    """The record store of ``rag``'s index: ``path``, else config ``records.path``, else
    :func:`rag.records.records_path` beside the index."""
    if path is None:
        path = getattr(getattr(rag.config, "records", None), "path", None)
    return RecordStore.for_index(rag.index_dir, path)


def record_answer(store: RecordStore, rag, answer: Answer, *, user_id: str | None = None,
                  session_id: str | None = None, latency_s: float | None = None) -> dict[str, Any]:
    """Write one record for ``answer`` produced by ``rag`` (the library entry point for
    callers without a :class:`Conversation`, e.g. ``rag ask`` and the server). Returns it."""
    gen = answer.generation if answer.generation is not None else generation_of(rag)
    return store.add(answer, user_id=user_id, session_id=session_id, latency_s=latency_s, generation=gen,
                     index_dir=str(Path(rag.index_dir).resolve()))


class Conversation:
    """A chat session over a :class:`rag.RAG`.

    ``ask(question)`` answers with the conversation so far as history (follow-ups are rewritten
    into standalone queries before retrieval) and records the turn; ``last_record`` is that
    record (its ``turn`` numbers feedback). ``store``: a :class:`rag.records.RecordStore`
    (default: :func:`default_store`). Thread-safety: one Conversation per session and thread.
    """

    def __init__(self, rag, session_id: str | None = None, user_id: str | None = None, *, top_k: int | None = None,
                 filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None,
                 store: RecordStore | None = None, max_history_turns: int = 6, records_path: str | Path | None = None):
        self.rag = rag
        self.store = store or default_store(rag, records_path)
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.user_id = user_id
        self.top_k = top_k
        self.filters = filters
        self.principals = principals
        self.max_history_turns = max_history_turns
        self.last_record: dict[str, Any] | None = None
        self.store.ensure_session(self.session_id, user_id)
        self.history: list[dict[str, str]] = []
        for t in self.store.turns(session_id=self.session_id):
            self.history += [{"role": "user", "content": t["question"]}, {"role": "assistant", "content": t["answer"]}]

    def _recent(self) -> list[dict[str, str]]:
        return self.history[-2 * self.max_history_turns:]

    def ask(self, question: str) -> Answer:
        """Answer with history; records the turn. Returns the Answer."""
        t = time.perf_counter()
        ans = self.rag.ask(question, top_k=self.top_k, history=self._recent(), filters=self.filters, principals=self.principals)
        self._record(question, ans, time.perf_counter() - t)
        return ans

    def stream(self, question: str) -> Iterator[str | Answer]:
        """Like :meth:`RAG.stream` with history; records the turn when the Answer arrives."""
        t = time.perf_counter()
        for piece in self.rag.stream(question, top_k=self.top_k, history=self._recent(), filters=self.filters,
                                     principals=self.principals):
            if isinstance(piece, Answer):
                self._record(question, piece, time.perf_counter() - t)
            yield piece

    def _record(self, question: str, ans: Answer, latency_s: float) -> None:
        self.last_record = record_answer(self.store, self.rag, ans, user_id=self.user_id, session_id=self.session_id,
                                         latency_s=latency_s)
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": ans.text}]

    def feedback(self, turn: int, rating: str, note: str | None = None) -> dict[str, Any]:
        """Rate ``turn`` (1-based) of this session "up" or "down"; returns the updated record."""
        return self.store.set_feedback(self.session_id, turn, rating, note)
