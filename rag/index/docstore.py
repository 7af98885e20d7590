"""SQLite docstore: files, documents and chunks of one index generation.

Schema (``format_version`` 1)::

    files(source TEXT PK, content_hash TEXT, mtime REAL, size_bytes INT, n_documents INT)
    documents(id TEXT PK, source TEXT, content_hash TEXT, mtime REAL, title TEXT,
              metadata JSON TEXT, duplicate_of TEXT NULL, n_chunks INT)
    doc_acl(doc_id TEXT, grp TEXT)                       -- access groups; none = public
    chunks(id INTEGER PK (int64, = FAISS and BM25 id), doc_id TEXT, ordinal INT,
           start INT, end INT, page INT NULL, heading_path JSON TEXT, text TEXT,
           text_hash TEXT, metadata JSON TEXT)
    duplicates(key TEXT, kept_key TEXT, kind TEXT, similarity REAL, level TEXT)

A committed generation is immutable: readers open it with ``mode=ro&immutable=1`` so they never
take locks and never see a writer's changes. Writers work on a copy in a temporary folder.
Everything is JSON or scalar columns; nothing is pickled.
"""

from __future__ import annotations

import fnmatch
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import IndexFormatError
from ..types import Chunk

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
  source TEXT PRIMARY KEY, content_hash TEXT NOT NULL, mtime REAL, size_bytes INTEGER, n_documents INTEGER);
CREATE TABLE IF NOT EXISTS documents(
  id TEXT PRIMARY KEY, source TEXT NOT NULL, content_hash TEXT, mtime REAL, title TEXT,
  metadata TEXT NOT NULL DEFAULT '{}', duplicate_of TEXT, n_chunks INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS doc_acl(doc_id TEXT NOT NULL, grp TEXT NOT NULL, PRIMARY KEY(doc_id, grp));
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL, start INTEGER NOT NULL,
  "end" INTEGER NOT NULL, page INTEGER, heading_path TEXT NOT NULL DEFAULT '[]', text TEXT NOT NULL,
  text_hash TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE INDEX IF NOT EXISTS chunks_hash ON chunks(text_hash);
CREATE TABLE IF NOT EXISTS duplicates(key TEXT NOT NULL, kept_key TEXT NOT NULL, kind TEXT NOT NULL,
  similarity REAL, level TEXT NOT NULL);
"""

_CHUNK_COLS = 'c.id, c.doc_id, c.ordinal, c.start, c."end", c.page, c.heading_path, c.text, c.metadata, d.source, d.title'


def _row_to_chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        id=int(row[0]),
        doc_id=row[1],
        ordinal=int(row[2]),
        start=int(row[3]),
        end=int(row[4]),
        page=row[5],
        heading_path=tuple(json.loads(row[6])),
        text=row[7],
        metadata=json.loads(row[8]),
        source=row[9] or "",
        title=row[10],
    )


class DocStore:
    """One SQLite docstore file. Use :meth:`open_readonly` for committed generations."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> "DocStore":
        """Create (or open for writing) a docstore at ``path``."""
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        return cls(conn, path)

    @classmethod
    def open_readonly(cls, path: Path) -> "DocStore":
        """Open an immutable committed docstore. Raises IndexFormatError if it is not a docstore."""
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            conn.execute("SELECT count(*) FROM chunks").fetchone()
            conn.execute("SELECT count(*) FROM documents").fetchone()
        except sqlite3.DatabaseError as e:
            raise IndexFormatError(str(path), f"not a readable docstore ({e})") from None
        return cls(conn, path)

    def copy_to(self, path: Path) -> "DocStore":
        """Copy this docstore to a new writable file (SQLite online backup) and return it."""
        dst = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute("PRAGMA synchronous=FULL")
        dst.executescript(SCHEMA)
        return DocStore(dst, path)

    def close(self) -> None:
        self.conn.close()

    # ---- counts and reads ----------------------------------------------------------------
    def count_chunks(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def count_documents(self, include_duplicates: bool = False) -> int:
        q = "SELECT count(*) FROM documents" + ("" if include_duplicates else " WHERE duplicate_of IS NULL")
        return int(self.conn.execute(q).fetchone()[0])

    def chunk_ids(self) -> np.ndarray:
        """(n,) int64, ascending: every chunk id in the store."""
        rows = self.conn.execute("SELECT id FROM chunks ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def chunk_documents(self) -> tuple[np.ndarray, np.ndarray]:
        """``(chunk ids (n,) int64 ascending, document codes (n,) int64)``: the code is the
        document row's SQLite rowid, equal for all chunks of one document (per-document
        pooling without reading chunk texts)."""
        rows = self.conn.execute("SELECT c.id, d.rowid FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.id").fetchall()
        arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
        return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])

    def iter_index_texts(self) -> Iterator[tuple[int, str]]:
        """(chunk id, text to index) in id order; the text is ``title + "\\n" + chunk text``."""
        q = "SELECT c.id, d.title, c.text FROM chunks c JOIN documents d ON d.id = c.doc_id ORDER BY c.id"
        for cid, title, text in self.conn.execute(q):
            yield int(cid), index_text(title, text)

    def get_chunks(self, ids: Iterable[int]) -> dict[int, Chunk]:
        """Chunks by id (missing ids are absent from the result)."""
        ids = [int(i) for i in ids]
        out: dict[int, Chunk] = {}
        for start in range(0, len(ids), 900):
            part = ids[start : start + 900]
            q = f"SELECT {_CHUNK_COLS} FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE c.id IN ({','.join('?' * len(part))})"
            for row in self.conn.execute(q, part):
                ch = _row_to_chunk(row)
                out[ch.id] = ch
        return out

    def file_hashes(self) -> dict[str, str]:
        """source path -> content sha256 of every file in the store."""
        return dict(self.conn.execute("SELECT source, content_hash FROM files"))

    def document_hashes(self) -> dict[str, str]:
        """Kept (non-duplicate) document id -> normalised text hash stored in metadata."""
        out = {}
        for did, meta in self.conn.execute("SELECT id, metadata FROM documents WHERE duplicate_of IS NULL"):
            h = json.loads(meta).get("text_hash")
            if h:
                out[did] = h
        return out

    def chunk_hashes(self) -> dict[str, int]:
        """normalised chunk text hash -> a chunk id holding that text."""
        return {h: int(i) for h, i in self.conn.execute("SELECT text_hash, min(id) FROM chunks GROUP BY text_hash")}

    def sources(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT source FROM files ORDER BY source")]

    def chunk_ids_for_sources(self, sources: Sequence[str]) -> list[int]:
        out: list[int] = []
        for s in sources:
            out += [int(r[0]) for r in self.conn.execute(
                "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE d.source = ?", (s,))]
        return out

    def stats(self) -> dict[str, Any]:
        """Counts for ``rag info``: documents, chunks, duplicates, sources by type."""
        by_type: dict[str, int] = {}
        for meta, in self.conn.execute("SELECT metadata FROM documents WHERE duplicate_of IS NULL"):
            t = json.loads(meta).get("type", "unknown")
            by_type[t] = by_type.get(t, 0) + 1
        return {
            "files": int(self.conn.execute("SELECT count(*) FROM files").fetchone()[0]),
            "documents": self.count_documents(),
            "duplicate_documents": int(self.conn.execute("SELECT count(*) FROM documents WHERE duplicate_of IS NOT NULL").fetchone()[0]),
            "chunks": self.count_chunks(),
            "documents_by_type": dict(sorted(by_type.items())),
        }

    # ---- filters and access control -------------------------------------------------------
    def allowed_ids(self, filters: Mapping[str, Any] | None = None, principals: Sequence[str] | None = None) -> np.ndarray | None:
        """Sorted int64 chunk ids that pass ``filters`` and the caller's access groups.

        ``filters``: ``{"source": "docs/*.md"}`` (glob on the source path, fnmatch rules),
        ``{"page": 3}``, ``{"title": ...}`` or any document metadata key (``{"lang": "en"}``);
        a value containing ``* ? [`` is a glob, a list means any of. All keys must match (AND).
        ``principals``: the caller's groups; a document with access groups is visible only to
        callers sharing one of them; documents without groups are public. ``None`` means no
        access control (the library caller is trusted); ``[]`` sees public documents only.
        Returns None when nothing restricts the search.
        """
        if not filters and principals is None:
            return None
        where: list[str] = []
        params: list[Any] = []
        for key, value in (filters or {}).items():
            values = value if isinstance(value, (list, tuple, set)) else [value]
            if key == "source":
                col = "d.source"
                values = [_source_pattern(str(v)) for v in values]
            elif key == "title":
                col = "d.title"
            elif key == "page":
                col = "c.page"
            elif key == "doc_id":
                col = "d.id"
            else:
                col = "coalesce(json_extract(c.metadata, ?), json_extract(d.metadata, ?))"
                path = "$." + json.dumps(str(key))
            ors = []
            for v in values:
                colsql = col
                colparams: list[Any] = [path, path] if col.startswith("coalesce") else []
                if isinstance(v, str) and any(ch in v for ch in "*?["):
                    ors.append(f"CAST({colsql} AS TEXT) GLOB ?")
                    params += colparams + [_glob_to_sqlite(v)]
                else:
                    ors.append(f"{colsql} = ?")
                    params += colparams + [v if not isinstance(v, bool) else int(v)]
            where.append("(" + " OR ".join(ors) + ")")
        if principals is not None:
            groups = [str(g) for g in principals]
            cond = "NOT EXISTS (SELECT 1 FROM doc_acl a WHERE a.doc_id = d.id)"
            if groups:
                cond += f" OR EXISTS (SELECT 1 FROM doc_acl a WHERE a.doc_id = d.id AND a.grp IN ({','.join('?' * len(groups))}))"
                params += groups
            where.append("(" + cond + ")")
        q = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE " + " AND ".join(where) + " ORDER BY c.id"
        rows = self.conn.execute(q, params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # ---- writes (temporary generation only) ------------------------------------------------
    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def delete_source(self, source: str) -> list[int]:
        """Remove a file with its documents, ACLs and chunks; returns the removed chunk ids."""
        ids = self.chunk_ids_for_sources([source])
        docs = [r[0] for r in self.conn.execute("SELECT id FROM documents WHERE source = ?", (source,))]
        for d in docs:
            self.conn.execute("DELETE FROM chunks WHERE doc_id = ?", (d,))
            self.conn.execute("DELETE FROM doc_acl WHERE doc_id = ?", (d,))
            self.conn.execute("DELETE FROM duplicates WHERE key = ? OR kept_key = ?", (d, d))
        self.conn.execute("DELETE FROM documents WHERE source = ?", (source,))
        self.conn.execute("DELETE FROM files WHERE source = ?", (source,))
        return ids

    def put_file(self, source: str, content_hash: str, mtime: float, size_bytes: int, n_documents: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO files(source, content_hash, mtime, size_bytes, n_documents) VALUES(?,?,?,?,?)",
            (source, content_hash, mtime, size_bytes, n_documents),
        )

    def put_document(self, doc_id: str, source: str, content_hash: str | None, mtime: float | None, title: str | None,
                     metadata: Mapping[str, Any], duplicate_of: str | None, n_chunks: int, acl: Sequence[str] = ()) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO documents(id, source, content_hash, mtime, title, metadata, duplicate_of, n_chunks) VALUES(?,?,?,?,?,?,?,?)",
            (doc_id, source, content_hash, mtime, title, json.dumps(metadata, ensure_ascii=False, default=str), duplicate_of, n_chunks),
        )
        self.conn.execute("DELETE FROM doc_acl WHERE doc_id = ?", (doc_id,))
        for g in sorted(set(acl)):
            self.conn.execute("INSERT INTO doc_acl(doc_id, grp) VALUES(?, ?)", (doc_id, str(g)))

    def put_chunks(self, chunks: Sequence[Chunk], text_hashes: Sequence[str]) -> None:
        self.conn.executemany(
            'INSERT INTO chunks(id, doc_id, ordinal, start, "end", page, heading_path, text, text_hash, metadata) VALUES(?,?,?,?,?,?,?,?,?,?)',
            [
                (c.id, c.doc_id, c.ordinal, c.start, c.end, c.page, json.dumps(list(c.heading_path), ensure_ascii=False), c.text, h,
                 json.dumps(c.metadata, ensure_ascii=False, default=str))
                for c, h in zip(chunks, text_hashes)
            ],
        )

    def put_duplicate(self, key: str, kept_key: str, kind: str, similarity: float, level: str) -> None:
        self.conn.execute("INSERT INTO duplicates(key, kept_key, kind, similarity, level) VALUES(?,?,?,?,?)",
                          (key, kept_key, kind, similarity, level))

    def duplicates(self) -> list[dict[str, Any]]:
        return [dict(zip(("key", "kept_key", "kind", "similarity", "level"), r))
                for r in self.conn.execute("SELECT key, kept_key, kind, similarity, level FROM duplicates")]


def index_text(title: str | None, text: str) -> str:
    """The text that is embedded and BM25-indexed for a chunk: its document title, then the chunk.

    Titles carry much of a short document's topic (BEIR titles, page titles); the chunk text and
    its char offsets stay exact in the docstore.
    """
    if title:
        return f"{title[:300]}\n{text}"
    return text


def _source_pattern(pattern: str) -> str:
    """Sources are stored as absolute paths; a user's pattern is relative to the working folder
    (``docs/*.md``), a bare name or glob matches in any folder (``*.md``, ``notes.md``)."""
    if pattern.startswith("/") or "://" in pattern:
        return pattern
    if "/" in pattern:
        import os

        return os.path.abspath(pattern)
    return pattern if pattern.startswith("*") else "*/" + pattern


def _glob_to_sqlite(pattern: str) -> str:
    """fnmatch-style glob -> SQLite GLOB (same syntax except ``[!...]`` is ``[^...]``)."""
    return pattern.replace("[!", "[^")


def source_matches(source: str, pattern: str) -> bool:
    """True when ``source`` matches ``pattern`` (fnmatch) or lies under it as a folder prefix."""
    if fnmatch.fnmatchcase(source, pattern):
        return True
    p = pattern.rstrip("/")
    return source == p or source.startswith(p + "/")
