"""Conversation records: one row per answered question, in one SQLite file.

A record holds who asked (user id, session, turn), when (UTC, ISO 8601), what (question,
rewritten query, answer, route ``kind``), with what evidence (citations: chunk ids, document
ids, sources, quotes), whether the answer abstained, the latency of each stage (seconds), the
index generation it was answered from, and the feedback given later. ``rag ask``, ``rag chat``,
:class:`rag.Conversation` and ``rag serve`` all write through :meth:`RecordStore.add`, so
``rag stats`` and ``rag history`` read one table whatever the entry point.

Where the file lives (:func:`records_path`): an explicit path (``--records PATH`` or config
``[records] path``), else ``<index>/records.sqlite``; when the index folder is read-only, a
per-user file under ``$RAG_DATA_DIR`` (default ``~/.local/share/rag``) named after the index.
Records are user data, not index state: they survive re-ingests, rollbacks and repairs.

Schema version 2 (``PRAGMA user_version``). Files of version 1 (``sessions.sqlite`` with a
``turns`` table, written before records existed) are migrated on open: the file is renamed to
``records.sqlite`` and its turns become records (generation and per-stage timings unknown).
Deleted rows are overwritten on disk (``PRAGMA secure_delete``), so :meth:`forget_user` erases.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError

log = logging.getLogger("rag")

RECORDS_FILE = "records.sqlite"
LEGACY_FILE = "sessions.sqlite"
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions(
  session_id TEXT PRIMARY KEY, user_id TEXT, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records(
  record_id INTEGER PRIMARY KEY AUTOINCREMENT,
  session_id TEXT, turn INTEGER, user_id TEXT, created TEXT NOT NULL,
  question TEXT NOT NULL, query TEXT, answer TEXT NOT NULL, kind TEXT, abstained INTEGER NOT NULL,
  citations TEXT NOT NULL, latency_s REAL, timings TEXT NOT NULL, generation INTEGER, index_dir TEXT,
  feedback TEXT, feedback_note TEXT, feedback_at TEXT,
  UNIQUE(session_id, turn));
CREATE INDEX IF NOT EXISTS records_user ON records(user_id);
CREATE INDEX IF NOT EXISTS records_created ON records(created);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

FIELDS = ("record_id", "session_id", "turn", "user_id", "created", "question", "query", "answer", "kind", "abstained",
          "citations", "latency_s", "timings", "generation", "index_dir", "feedback", "feedback_note", "feedback_at")
"""The keys of every record dict (:meth:`RecordStore.records`), in column order."""


LOCAL_USER = "local"
"""The user id of a person at this machine who gave none: ``rag ask``/``rag chat`` without
``--user``, the same name ``rag serve`` without API keys records (so one person is one user,
and ``rag history --forget-user local`` erases them)."""


def daily_session(user_id: str, day: str | None = None) -> str:
    """The session a one-off question joins when none is named: ``ask-<user_id>-<YYYY-MM-DD>``
    (``day``, default today in UTC). Why one per user and day: ``rag ask`` calls are separate
    processes, and a session per call would bury ``rag history`` in one-turn sessions; the
    user is in the id so that erasing one user never touches another's day."""
    return f"ask-{user_id}-{day or utc_now()[:10]}"


def utc_now() -> str:
    """Now in UTC, ISO 8601 with milliseconds and ``+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _data_dir() -> Path:
    return Path(os.environ.get("RAG_DATA_DIR") or Path.home() / ".local" / "share" / "rag")


def fallback_path(index_dir: str | Path) -> Path:
    """The per-user records file for an index folder that cannot be written: one file per
    resolved index path (``<name>-<sha256[:10]>.sqlite`` under ``$RAG_DATA_DIR/records``)."""
    p = Path(index_dir).resolve()
    h = hashlib.sha256(str(p).encode("utf-8")).hexdigest()[:10]
    return _data_dir() / "records" / f"{p.name or 'index'}-{h}.sqlite"


def _writable_dir(d: Path) -> bool:
    return d.is_dir() and os.access(d, os.W_OK | os.X_OK)


def records_path(index_dir: str | Path, path: str | Path | None = None) -> Path:
    """Where the records of ``index_dir`` live.

    ``path`` (from ``--records`` or config ``records.path``) wins. Otherwise
    ``<index>/records.sqlite`` (or the legacy ``sessions.sqlite`` there, migrated on open) when
    it exists or the folder is writable; else :func:`fallback_path` (read-only index folders).
    """
    if path:
        return Path(path)
    d = Path(index_dir)
    own = d / RECORDS_FILE
    if own.exists() and os.access(own, os.W_OK):
        return own
    if (d / LEGACY_FILE).exists() and _writable_dir(d):
        return own
    if _writable_dir(d) or not d.exists():
        return own
    return fallback_path(d)


def find_records(index_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """The existing records file of ``index_dir`` (see :func:`records_path`), or None when no
    question has been recorded for it yet. Never creates anything."""
    if path:
        return Path(path) if Path(path).exists() else None
    d = Path(index_dir)
    for p in (d / RECORDS_FILE, d / LEGACY_FILE, fallback_path(d)):
        if p.exists():
            return p
    return None


def citations_of(answer) -> list[dict[str, Any]]:
    """JSON-safe citations of an :class:`rag.Answer` (n, chunk_id, doc_id, source, page, title, quote)."""
    return [c.to_dict() for c in answer.citations]


class RecordStore:
    """Sessions and records in one SQLite file (WAL mode: several processes may write).

    Thread-safe: one connection guarded by a lock. Raises :class:`rag.errors.ConfigError`
    naming the file when it cannot be opened or written (for example a read-only location).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        legacy = self.path.with_name(LEGACY_FILE)
        if self.path.name == RECORDS_FILE and not self.path.exists() and legacy.exists():
            _rename_legacy(legacy, self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA secure_delete=ON")
            self._migrate()
        except (sqlite3.Error, OSError) as e:
            raise ConfigError(f"{self.path}: cannot open the records file ({e}); "
                              "choose another place with --records PATH or [records] path") from None

    @classmethod
    def for_index(cls, index_dir: str | Path, path: str | Path | None = None) -> "RecordStore":
        """The store of ``index_dir`` at :func:`records_path` (created on first write)."""
        return cls(records_path(index_dir, path))

    # ---- schema -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        c = self.conn
        version = int(c.execute("PRAGMA user_version").fetchone()[0])
        has_turns = c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='turns'").fetchone() is not None
        if version >= SCHEMA_VERSION and not has_turns:
            return
        c.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    c.execute(stmt)
            if has_turns:  # version 1: sessions + turns
                n = c.execute(
                    "INSERT INTO records(session_id, turn, user_id, created, question, query, answer, kind, abstained, "
                    "citations, latency_s, timings, generation, index_dir, feedback, feedback_note) "
                    "SELECT t.session_id, t.turn, s.user_id, t.created, t.question, t.query, t.answer, NULL, t.abstained, "
                    "t.citations, t.latency_s, '{}', NULL, NULL, t.feedback, t.feedback_note "
                    "FROM turns t LEFT JOIN sessions s ON s.session_id = t.session_id ORDER BY t.created, t.turn").rowcount
                c.execute("DROP TABLE turns")
                log.info("%s: migrated %d conversation turn(s) to records", self.path, n)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # ---- writing ----------------------------------------------------------------------------
    def ensure_session(self, session_id: str, user_id: str | None) -> None:
        """Create the session row if missing (its user is the first one given)."""
        with self._lock:
            now = utc_now()
            self.conn.execute("INSERT OR IGNORE INTO sessions(session_id, user_id, created, updated) VALUES(?,?,?,?)",
                              (session_id, user_id, now, now))

    def add(self, answer, *, user_id: str | None = None, session_id: str | None = None, latency_s: float | None = None,
            generation: int | None = None, index_dir: str | Path | None = None, question: str | None = None) -> dict[str, Any]:
        """Record one answered question; returns the stored record (see :data:`FIELDS`).

        ``answer``: the :class:`rag.Answer`. ``session_id``: the conversation it belongs to
        (None: a record outside any session, which ``rag history`` does not list; ``rag ask``
        passes :func:`daily_session`); turns are numbered 1, 2, ... per session.
        ``latency_s``: end-to-end seconds as the caller saw them (default
        ``answer.timings["total_s"]``). ``generation``: the index generation, when
        ``answer.generation`` is None.
        """
        timings = {k: float(v) for k, v in (answer.timings or {}).items() if isinstance(v, (int, float))}
        if latency_s is None:
            latency_s = timings.get("total_s")
        gen = answer.generation if answer.generation is not None else generation
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                now = utc_now()
                turn = None
                if session_id is not None:
                    self.conn.execute("INSERT OR IGNORE INTO sessions(session_id, user_id, created, updated) VALUES(?,?,?,?)",
                                      (session_id, user_id, now, now))
                    self.conn.execute("UPDATE sessions SET updated = ? WHERE session_id = ?", (now, session_id))
                    turn = int(self.conn.execute("SELECT coalesce(max(turn), 0) + 1 FROM records WHERE session_id = ?",
                                                 (session_id,)).fetchone()[0])
                cur = self.conn.execute(
                    "INSERT INTO records(session_id, turn, user_id, created, question, query, answer, kind, abstained, "
                    "citations, latency_s, timings, generation, index_dir) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (session_id, turn, user_id, now, question if question is not None else answer.question, answer.query,
                     answer.text, answer.kind, int(bool(answer.abstained)),
                     json.dumps(citations_of(answer), ensure_ascii=False), latency_s, json.dumps(timings),
                     None if gen is None else int(gen), None if index_dir is None else str(index_dir)))
                rid = int(cur.lastrowid)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return self.record(rid)

    def set_feedback(self, session_id: str | None, turn: int | None, rating: str, note: str | None = None, *,
                     record_id: int | None = None) -> dict[str, Any]:
        """Store "up" or "down" (and a note) on a record, found by ``(session_id, turn)`` or by
        ``record_id``; a later rating replaces an earlier one. Returns the updated record.
        Raises ConfigError for another rating or when no such record exists."""
        if rating not in ("up", "down"):
            raise ConfigError(f"feedback must be 'up' or 'down', not {rating!r}")
        if record_id is not None:
            where, params = "record_id = ?", [int(record_id)]
            what = f"no record {record_id}"
        else:
            where, params = "session_id = ? AND turn = ?", [session_id, int(turn)]  # type: ignore[arg-type]
            what = f"no turn {turn} in session {session_id!r}"
        with self._lock:
            cur = self.conn.execute(f"UPDATE records SET feedback = ?, feedback_note = ?, feedback_at = ? WHERE {where}",
                                    [rating, note, utc_now(), *params])
            if cur.rowcount == 0:
                raise ConfigError(f"{what} ({self.path})")
            rid = self.conn.execute(f"SELECT record_id FROM records WHERE {where}", params).fetchone()[0]
        return self.record(int(rid))

    # ---- reading ----------------------------------------------------------------------------
    def record(self, record_id: int) -> dict[str, Any]:
        """One record by id. Raises ConfigError when there is none."""
        rows = self._select("record_id = ?", [int(record_id)])
        if not rows:
            raise ConfigError(f"no record {record_id} ({self.path})")
        return rows[0]

    def records(self, *, session_id: str | None = None, user_id: str | None = None, since: str | None = None,
                until: str | None = None) -> list[dict[str, Any]]:
        """Records oldest first, as dicts with the keys of :data:`FIELDS` (``citations`` a list,
        ``timings`` a dict of seconds, ``abstained`` a bool). ``since``/``until``: ISO dates or
        times (UTC) compared with ``created``; ``until`` is exclusive."""
        where, params = [], []
        for col, val in (("session_id", session_id), ("user_id", user_id)):
            if val is not None:
                where.append(f"{col} = ?")
                params.append(val)
        if since:
            where.append("created >= ?")
            params.append(since)
        if until:
            where.append("created < ?")
            params.append(until)
        return self._select(" AND ".join(where) or "1", params)

    def turns(self, session_id: str | None = None, user_id: str | None = None) -> list[dict[str, Any]]:
        """The records that belong to sessions (``turn`` is set), oldest first."""
        return [r for r in self.records(session_id=session_id, user_id=user_id) if r["session_id"] is not None]

    def _select(self, where: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        q = f"SELECT {', '.join(FIELDS)} FROM records WHERE {where} ORDER BY created, record_id"
        with self._lock:
            rows = self.conn.execute(q, list(params)).fetchall()
        out = []
        for row in rows:
            d = dict(zip(FIELDS, row))
            d["abstained"] = bool(d["abstained"])
            d["citations"] = json.loads(d["citations"])
            d["timings"] = json.loads(d["timings"] or "{}")
            out.append(d)
        return out

    def sessions(self, user_id: str | None = None) -> list[dict[str, Any]]:
        """Sessions, most recently updated first: session_id, user_id, created, updated, turns."""
        q = ("SELECT s.session_id, s.user_id, s.created, s.updated, count(r.record_id) FROM sessions s "
             "LEFT JOIN records r ON r.session_id = s.session_id")
        params: list[Any] = []
        if user_id is not None:
            q += " WHERE s.user_id = ?"
            params.append(user_id)
        q += " GROUP BY s.session_id ORDER BY s.updated DESC"
        with self._lock:
            rows = self.conn.execute(q, params).fetchall()
        return [dict(zip(("session_id", "user_id", "created", "updated", "turns"), r)) for r in rows]

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One session (session_id, user_id, created, updated, turns), or None when unknown."""
        q = ("SELECT s.session_id, s.user_id, s.created, s.updated, count(r.record_id) FROM sessions s "
             "LEFT JOIN records r ON r.session_id = s.session_id WHERE s.session_id = ? GROUP BY s.session_id")
        with self._lock:
            row = self.conn.execute(q, (session_id,)).fetchone()
        return None if row is None else dict(zip(("session_id", "user_id", "created", "updated", "turns"), row))

    def users(self) -> list[str]:
        """Every user id found in records or sessions, sorted."""
        with self._lock:
            rows = self.conn.execute("SELECT user_id FROM records WHERE user_id IS NOT NULL UNION "
                                     "SELECT user_id FROM sessions WHERE user_id IS NOT NULL").fetchall()
        return sorted(r[0] for r in rows)

    # ---- erasure and export -----------------------------------------------------------------
    def forget_user(self, user_id: str) -> dict[str, int]:
        """Delete every record and session of ``user_id``, the feedback on them, and the other
        users' turns in that user's sessions. Returns ``{"records", "sessions", "feedback"}``
        counts. Deleted content is overwritten (secure_delete) and the WAL is checkpointed, so
        nothing of it stays in the file."""
        with self._lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                sids = [r[0] for r in self.conn.execute("SELECT session_id FROM sessions WHERE user_id = ?", (user_id,))]
                cond = "user_id = ? OR session_id IN (SELECT session_id FROM sessions WHERE user_id = ?)"
                fb = int(self.conn.execute(f"SELECT count(*) FROM records WHERE ({cond}) AND feedback IS NOT NULL",
                                           (user_id, user_id)).fetchone()[0])
                n = self.conn.execute(f"DELETE FROM records WHERE {cond}", (user_id, user_id)).rowcount
                self.conn.executemany("DELETE FROM sessions WHERE session_id = ?", [(s,) for s in sids])
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        log.info("%s: forgot user %r: %d record(s), %d session(s)", self.path, user_id, n, len(sids))
        return {"records": int(n), "sessions": len(sids), "feedback": fb}

    def salt(self, given: str | None = None) -> str:
        """The salt for anonymised exports: ``given``, else the one stored in this file's
        ``meta`` table (32 random bytes, hex, created on first use) so that exports stay
        joinable across runs without revealing user ids."""
        if given:
            return given
        with self._lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'export_salt'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(32)
            self.conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES('export_salt', ?)", (value,))
            return self.conn.execute("SELECT value FROM meta WHERE key = 'export_salt'").fetchone()[0]

    def export(self, records: Iterable[Mapping[str, Any]] | None = None, *, anonymise: bool = False,
               salt: str | None = None) -> list[dict[str, Any]]:
        """Records ready for JSONL. ``anonymise``: user ids become ``anonymise_user(id, salt)``
        and question, query, answer and feedback note pass through :func:`rag.redact.redact`
        (e-mails, phone numbers, card numbers)."""
        rows = [dict(r) for r in (records if records is not None else self.records())]
        if not anonymise:
            return rows
        from .redact import KINDS, redact

        s = self.salt(salt)
        for r in rows:
            if r.get("user_id") is not None:
                r["user_id"] = anonymise_user(r["user_id"], s)
            for k in ("question", "query", "answer", "feedback_note"):
                if r.get(k):
                    r[k] = redact(r[k], KINDS)[0]
        return rows

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def anonymise_user(user_id: str, salt: str) -> str:
    """``"u-" + sha256(salt + ":" + user_id)[:16]`` (hex): stable for one salt, not reversible
    without it (a guessed id must be hashed with the salt to be matched)."""
    return "u-" + hashlib.sha256(f"{salt}:{user_id}".encode("utf-8")).hexdigest()[:16]


def _rename_legacy(legacy: Path, new: Path) -> None:
    """Move a version-1 ``sessions.sqlite`` to ``records.sqlite`` (WAL folded in first; the
    rename is atomic, the schema migration then runs in one transaction)."""
    try:
        conn = sqlite3.connect(str(legacy), timeout=30)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
        finally:
            conn.close()
        os.replace(legacy, new)
        for ext in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(str(legacy) + ext)
        log.info("renamed %s to %s (conversation records)", legacy, new)
    except (sqlite3.Error, OSError) as e:
        raise ConfigError(f"{legacy}: cannot migrate to {new.name} ({e})") from None
