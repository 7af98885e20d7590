"""Multi-turn conversations for chatbots, persisted in SQLite.

``Conversation`` keeps the history, rewrites follow-up questions into standalone queries (via
:meth:`rag.RAG.ask` with ``history``) and records every turn: UTC timestamp, question, rewritten
query, answer, citations, latency and feedback. Sessions live in ``sessions.sqlite`` beside the
index generations (user data, not index state), so they survive restarts and re-ingests.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .errors import ConfigError
from .types import Answer

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(session_id TEXT PRIMARY KEY, user_id TEXT, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS turns(
  session_id TEXT NOT NULL, turn INTEGER NOT NULL, created TEXT NOT NULL, question TEXT NOT NULL, query TEXT,
  answer TEXT NOT NULL, abstained INTEGER NOT NULL, citations TEXT NOT NULL, latency_s REAL,
  feedback TEXT, feedback_note TEXT, PRIMARY KEY(session_id, turn));
"""


def _utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class SessionStore:
    """Sessions and turns in one SQLite file (WAL mode; safe for several processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    @classmethod
    def for_index(cls, index_dir: str | Path) -> "SessionStore":
        return cls(Path(index_dir) / "sessions.sqlite")

    def ensure_session(self, session_id: str, user_id: str | None) -> None:
        with self._lock:
            now = _utc()
            self.conn.execute("INSERT OR IGNORE INTO sessions(session_id, user_id, created, updated) VALUES(?,?,?,?)",
                              (session_id, user_id, now, now))

    def add_turn(self, session_id: str, question: str, answer: Answer, latency_s: float) -> int:
        """Append a turn; returns its 1-based number."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                n = int(self.conn.execute("SELECT coalesce(max(turn), 0) + 1 FROM turns WHERE session_id = ?",
                                          (session_id,)).fetchone()[0])
                now = _utc()
                self.conn.execute(
                    "INSERT INTO turns(session_id, turn, created, question, query, answer, abstained, citations, latency_s) "
                    "VALUES(?,?,?,?,?,?,?,?,?)",
                    (session_id, n, now, question, answer.query, answer.text, int(answer.abstained),
                     json.dumps([c.to_dict() for c in answer.citations], ensure_ascii=False), latency_s))
                self.conn.execute("UPDATE sessions SET updated = ? WHERE session_id = ?", (now, session_id))
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return n

    def set_feedback(self, session_id: str, turn: int, rating: str, note: str | None = None) -> None:
        """Record "up" or "down" for a turn. Raises ConfigError when the turn does not exist."""
        if rating not in ("up", "down"):
            raise ConfigError(f"feedback must be 'up' or 'down', not {rating!r}")
        with self._lock:
            cur = self.conn.execute("UPDATE turns SET feedback = ?, feedback_note = ? WHERE session_id = ? AND turn = ?",
                                    (rating, note, session_id, int(turn)))
        if cur.rowcount == 0:
            raise ConfigError(f"no turn {turn} in session {session_id!r} ({self.path})")

    def turns(self, session_id: str | None = None, user_id: str | None = None) -> list[dict[str, Any]]:
        """Turns as dicts (citations decoded), oldest first."""
        q = ("SELECT t.session_id, s.user_id, t.turn, t.created, t.question, t.query, t.answer, t.abstained, t.citations, "
             "t.latency_s, t.feedback, t.feedback_note FROM turns t JOIN sessions s ON s.session_id = t.session_id")
        where, params = [], []
        if session_id:
            where.append("t.session_id = ?")
            params.append(session_id)
        if user_id:
            where.append("s.user_id = ?")
            params.append(user_id)
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY t.created, t.turn"
        keys = ("session_id", "user_id", "turn", "created", "question", "query", "answer", "abstained", "citations",
                "latency_s", "feedback", "feedback_note")
        out = []
        for row in self.conn.execute(q, params):
            d = dict(zip(keys, row))
            d["abstained"] = bool(d["abstained"])
            d["citations"] = json.loads(d["citations"])
            out.append(d)
        return out

    def sessions(self, user_id: str | None = None) -> list[dict[str, Any]]:
        q = ("SELECT s.session_id, s.user_id, s.created, s.updated, count(t.turn) FROM sessions s "
             "LEFT JOIN turns t ON t.session_id = s.session_id")
        params: list[Any] = []
        if user_id:
            q += " WHERE s.user_id = ?"
            params.append(user_id)
        q += " GROUP BY s.session_id ORDER BY s.updated DESC"
        return [dict(zip(("session_id", "user_id", "created", "updated", "turns"), r)) for r in self.conn.execute(q, params)]

    def close(self) -> None:
        self.conn.close()


class Conversation:
    """A chat session over a :class:`rag.RAG`.

    ``ask(question)`` answers with the conversation so far as history (follow-ups are rewritten
    into standalone queries before retrieval) and records the turn. Resuming a ``session_id``
    reloads its turns as history.
    """

    def __init__(self, rag, session_id: str | None = None, user_id: str | None = None, *, top_k: int | None = None,
                 filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None,
                 store: SessionStore | None = None, max_history_turns: int = 6):
        self.rag = rag
        self.store = store or SessionStore.for_index(rag.index_dir)
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.user_id = user_id
        self.top_k = top_k
        self.filters = filters
        self.principals = principals
        self.max_history_turns = max_history_turns
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
        self.store.add_turn(self.session_id, question, ans, latency_s)
        self.history += [{"role": "user", "content": question}, {"role": "assistant", "content": ans.text}]

    def feedback(self, turn: int, rating: str, note: str | None = None) -> None:
        self.store.set_feedback(self.session_id, turn, rating, note)
