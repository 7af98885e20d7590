"""SQLite docstore: files, documents and chunks of one index generation.

Schema (``format_version`` 2; version 1 lacks ``documents.text_hash``, ``documents.body``,
``duplicates.doc_key`` and ``duplicates.kept_chunk``, which are added when a writer copies it)::

    files(source TEXT PK, content_hash TEXT, mtime REAL, size_bytes INT, n_documents INT)
    documents(id TEXT PK (document key), source TEXT, content_hash TEXT, mtime REAL, title TEXT,
              metadata JSON TEXT, duplicate_of TEXT NULL (alias of this kept key), n_chunks INT,
              text_hash TEXT, body JSON TEXT NULL (the Document, kept for aliases))
    doc_acl(doc_id TEXT, grp TEXT)                       -- access groups; none = public
    chunks(id INTEGER PK (int64, = FAISS and BM25 id), doc_id TEXT, ordinal INT,
           start INT, end INT, page INT NULL, heading_path JSON TEXT, text TEXT,
           text_hash TEXT, metadata JSON TEXT)
    duplicates(key TEXT, kept_key TEXT, kind TEXT, similarity REAL, level TEXT,
               doc_key TEXT (the document holding the link), kept_chunk INT NULL)

A committed generation is immutable: readers open it with ``mode=ro&immutable=1`` so they never
take locks and never see a writer's changes. Writers work on a copy in a temporary folder.
Everything is JSON or scalar columns; nothing is pickled.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import IndexFormatError
from ..types import Chunk, Document
from .backend import Duplicate, DocumentRecord, FileRecord, Filter

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
  similarity REAL, level TEXT NOT NULL, doc_key TEXT, kept_chunk INTEGER);
"""

V2_COLUMNS = (("documents", "text_hash", "TEXT"), ("documents", "body", "TEXT"),
              ("duplicates", "doc_key", "TEXT"), ("duplicates", "kept_chunk", "INTEGER"))
"""Columns format 2 added to format 1 (all nullable): added in place by :func:`_upgrade`."""

INDEXES_V2 = """
CREATE INDEX IF NOT EXISTS documents_dup ON documents(duplicate_of);
CREATE INDEX IF NOT EXISTS duplicates_kept ON duplicates(kept_key);
CREATE INDEX IF NOT EXISTS duplicates_chunk ON duplicates(kept_chunk);
"""


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a writable format-1 docstore to format 2 (adds nullable columns and indexes;
    ``text_hash`` is copied out of the metadata JSON where format 1 kept it)."""
    for table, col, typ in V2_COLUMNS:
        if col not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")
            if (table, col) == ("documents", "text_hash"):
                conn.execute("UPDATE documents SET text_hash = json_extract(metadata, '$.text_hash')")
            if (table, col) == ("duplicates", "doc_key"):
                conn.execute("UPDATE duplicates SET doc_key = key WHERE level = 'document'")
    conn.executescript(INDEXES_V2)

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
        cols = _columns(conn, "duplicates")
        self.has_chunk_links = "kept_chunk" in cols
        self.has_bodies = "body" in _columns(conn, "documents")
        self.immutable = False  # opened read-only as a committed file (open_readonly)

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path) -> "DocStore":
        """Create (or open for writing) a docstore at ``path``."""
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        _upgrade(conn)
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
        ds = cls(conn, path)
        ds.immutable = True
        return ds

    def copy_to(self, path: Path) -> "DocStore":
        """Copy this docstore to a new writable file and return it.

        A committed docstore never changes and is self-contained (rollback journal, no WAL), so
        a plain file copy (the kernel's copy_file_range/sendfile) is a consistent copy; it is
        ~8x faster than SQLite's page-by-page online backup (``docs/segments.md``). A store
        opened for writing is copied with the online backup."""
        import shutil

        if self.immutable:
            shutil.copyfile(self.path, path)
            dst = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        else:
            dst = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.conn.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.execute("PRAGMA synchronous=FULL")
        dst.executescript(SCHEMA)
        _upgrade(dst)
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

    def files(self) -> dict[str, FileRecord]:
        """Every file row by source key."""
        return {r[0]: FileRecord(source=r[0], content_hash=r[1], mtime=float(r[2] or 0.0), size_bytes=int(r[3] or 0),
                                 n_documents=int(r[4] or 0))
                for r in self.conn.execute("SELECT source, content_hash, mtime, size_bytes, n_documents FROM files")}

    def documents(self, sources: Sequence[str] | None = None, keys: Sequence[str] | None = None) -> list[DocumentRecord]:
        """Document rows (kept and aliases) of the given sources or keys (None: all), by key,
        with their access groups, alias links and stored body."""
        body = "d.body" if self.has_bodies else "NULL"
        th = "d.text_hash" if self.has_bodies else "json_extract(d.metadata, '$.text_hash')"
        q = (f"SELECT d.id, d.source, d.content_hash, {th}, d.title, d.metadata, d.duplicate_of, d.n_chunks, d.mtime, {body} "
             "FROM documents d")
        rows: list[Any] = []
        if sources is None and keys is None:
            rows = self.conn.execute(q + " ORDER BY d.id").fetchall()
        else:
            col, vals = ("d.source", list(sources)) if sources is not None else ("d.id", list(keys or ()))
            for start in range(0, len(vals), 900):
                part = vals[start:start + 900]
                rows += self.conn.execute(q + f" WHERE {col} IN ({','.join('?' * len(part))})", part).fetchall()
            rows.sort(key=lambda r: r[0])
        out = []
        for r in rows:
            acl = tuple(g for g, in self.conn.execute("SELECT grp FROM doc_acl WHERE doc_id = ? ORDER BY grp", (r[0],)))
            out.append(DocumentRecord(key=r[0], source=r[1], content_hash=r[2] or "", text_hash=r[3] or "", title=r[4],
                                      metadata=json.loads(r[5] or "{}"), acl=acl, alias_of=r[6], n_chunks=int(r[7] or 0),
                                      mtime=float(r[8] or 0.0), duplicates=tuple(self.links_of(r[0])),
                                      body=Document.from_dict(json.loads(r[9])) if r[9] else None))
        return out

    def links_of(self, doc_key: str) -> list[Duplicate]:
        """Alias links held by one document (its own document-level link, chunk-level links)."""
        if self.has_chunk_links:
            rows = self.conn.execute("SELECT key, kept_key, kind, similarity, level, kept_chunk FROM duplicates "
                                     "WHERE doc_key = ? ORDER BY key", (doc_key,))
        else:
            rows = self.conn.execute("SELECT key, kept_key, kind, similarity, level, NULL FROM duplicates "
                                     "WHERE key = ? OR key LIKE ? ORDER BY key", (doc_key, doc_key + "#%"))
        return [Duplicate(key=k, kept_key=kk, kind=kind, similarity=float(sim or 0.0), level=lvl,
                          kept_chunk=None if kc is None else int(kc)) for k, kk, kind, sim, lvl, kc in rows]

    def linked_to(self, kept_keys: Sequence[str]) -> list[str]:
        """Keys of documents holding an alias link (document or chunk level) to any of
        ``kept_keys``: the documents whose own text must come back when those go."""
        out: set[str] = set()
        keys = list(kept_keys)
        for start in range(0, len(keys), 900):
            part = keys[start:start + 900]
            marks = ",".join("?" * len(part))
            out.update(r[0] for r in self.conn.execute(f"SELECT id FROM documents WHERE duplicate_of IN ({marks})", part))
            if self.has_chunk_links:
                out.update(r[0] for r in self.conn.execute(
                    f"SELECT doc_key FROM duplicates WHERE kept_key IN ({marks}) AND doc_key IS NOT NULL", part))
        return sorted(out - set(keys))

    def chunk_hashes(self) -> dict[str, int]:
        """normalised chunk text hash -> a chunk id holding that text."""
        return {h: int(i) for h, i in self.conn.execute("SELECT text_hash, min(id) FROM chunks GROUP BY text_hash")}

    def sources(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT source FROM files ORDER BY source")]

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
    def allowed_ids(self, flt: "Filter") -> np.ndarray | None:
        """Sorted (m,) int64 chunk ids that pass ``flt`` (a :class:`rag.index.backend.Filter`),
        or None when the filter restricts nothing.

        A chunk passes when its chunk-level conditions hold (``page``) and its document, OR an
        alias of its document (a duplicate kept as a link), OR the document of a chunk-level
        duplicate of it, passes the document-level conditions (source globs, fields, access
        groups), each judged on its own source, metadata and groups.
        """
        if flt.unrestricted:
            return None
        chunk_sql, chunk_params = [], []
        page = flt.values_for("page")
        if page is not None:
            chunk_sql.append("c.page IN (" + ",".join("?" * len(page)) + ")")
            chunk_params += [int(v) if isinstance(v, bool) else v for v in page]

        def doc_cond(x: str, with_chunk_meta: bool) -> tuple[str, list[Any]]:
            where: list[str] = []
            params: list[Any] = []
            if flt.sources:
                ors = []
                for pat in flt.sources:
                    ors.append(f"{x}.source GLOB ? OR {x}.source GLOB ?")
                    params += [_glob_to_sqlite(pat), _glob_to_sqlite(pat.rstrip("/")) + "/*"]
                where.append("(" + " OR ".join(ors) + ")")
            for key, values in flt.fields:
                if key == "page":
                    continue
                if key == "title":
                    col, cp = f"{x}.title", []
                elif key == "doc_id":
                    col, cp = f"{x}.id", []
                else:
                    path = "$." + json.dumps(str(key))
                    if with_chunk_meta:
                        col, cp = f"coalesce(json_extract(c.metadata, ?), json_extract({x}.metadata, ?))", [path, path]
                    else:
                        col, cp = f"json_extract({x}.metadata, ?)", [path]
                ors = []
                for v in values:
                    if isinstance(v, str) and any(ch in v for ch in "*?["):
                        ors.append(f"CAST({col} AS TEXT) GLOB ?")
                        params += cp + [_glob_to_sqlite(v)]
                    elif v is None:
                        ors.append(f"{col} IS NULL")
                        params += cp
                    else:
                        ors.append(f"{col} = ?")
                        params += cp + [int(v) if isinstance(v, bool) else v]
                where.append("(" + " OR ".join(ors) + ")")
            for key, values in flt.exclude:  # rag.tags: a document with one of these values fails
                path = "$." + json.dumps(str(key))
                col = f"json_extract({x}.metadata, ?)"
                where.append(f"({col} IS NULL OR {col} NOT IN ({','.join('?' * len(values))}))")
                params += [path, path] + [int(v) if isinstance(v, bool) else v for v in values]
            if flt.principals is not None:
                groups = list(flt.principals)
                cond = f"NOT EXISTS (SELECT 1 FROM doc_acl a WHERE a.doc_id = {x}.id)"
                if groups:
                    cond += (f" OR EXISTS (SELECT 1 FROM doc_acl a WHERE a.doc_id = {x}.id AND a.grp IN "
                             f"({','.join('?' * len(groups))}))")
                    params += groups
                where.append("(" + cond + ")")
            return (" AND ".join(where) or "1"), params

        own, own_p = doc_cond("d", True)
        ali, ali_p = doc_cond("al", False)
        ors = [f"({own})", f"EXISTS (SELECT 1 FROM documents al WHERE al.duplicate_of = d.id AND {ali})"]
        params = own_p + ali_p
        if self.has_chunk_links:
            cl, cl_p = doc_cond("al2", False)
            ors.append("EXISTS (SELECT 1 FROM duplicates u JOIN documents al2 ON al2.id = u.doc_key "
                       f"WHERE u.kept_chunk = c.id AND {cl})")
            params += cl_p
        where = chunk_sql + ["(" + " OR ".join(ors) + ")"]
        q = "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.doc_id WHERE " + " AND ".join(where) + " ORDER BY c.id"
        rows = self.conn.execute(q, chunk_params + params).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    # ---- writes (temporary generation only) ------------------------------------------------
    def begin(self) -> None:
        self.conn.execute("BEGIN")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def delete_documents(self, keys: Sequence[str]) -> list[int]:
        """Remove documents (kept or aliases) with their chunks, groups and alias links (held
        and pointing at them); returns the removed chunk ids."""
        removed: list[int] = []
        for k in keys:
            removed += [int(r[0]) for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ?", (k,))]
            self.conn.execute("DELETE FROM chunks WHERE doc_id = ?", (k,))
            self.conn.execute("DELETE FROM doc_acl WHERE doc_id = ?", (k,))
            if self.has_chunk_links:
                self.conn.execute("DELETE FROM duplicates WHERE doc_key = ? OR kept_key = ?", (k, k))
            else:
                self.conn.execute("DELETE FROM duplicates WHERE key = ? OR kept_key = ?", (k, k))
            self.conn.execute("DELETE FROM documents WHERE id = ?", (k,))
        return removed

    def delete_file(self, source: str) -> list[int]:
        """Remove a file row with all its documents; returns the removed chunk ids."""
        keys = [r[0] for r in self.conn.execute("SELECT id FROM documents WHERE source = ?", (source,))]
        removed = self.delete_documents(keys)
        self.conn.execute("DELETE FROM files WHERE source = ?", (source,))
        return removed

    def put_file(self, f: FileRecord) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO files(source, content_hash, mtime, size_bytes, n_documents) VALUES(?,?,?,?,?)",
            (f.source, f.content_hash, f.mtime, f.size_bytes, f.n_documents),
        )

    def put_document(self, doc: DocumentRecord) -> None:
        """Create or replace one document row with its groups and the alias links it holds."""
        body = json.dumps(doc.body.to_dict(), ensure_ascii=False) if doc.body is not None else None
        meta = dict(doc.metadata, text_hash=doc.text_hash)
        self.conn.execute(
            "INSERT OR REPLACE INTO documents(id, source, content_hash, mtime, title, metadata, duplicate_of, n_chunks, "
            "text_hash, body) VALUES(?,?,?,?,?,?,?,?,?,?)",
            (doc.key, doc.source, doc.content_hash, doc.mtime, doc.title, json.dumps(meta, ensure_ascii=False, default=str),
             doc.alias_of, doc.n_chunks, doc.text_hash, body),
        )
        self.conn.execute("DELETE FROM doc_acl WHERE doc_id = ?", (doc.key,))
        for g in sorted(set(doc.acl)):
            self.conn.execute("INSERT INTO doc_acl(doc_id, grp) VALUES(?, ?)", (doc.key, str(g)))
        self.conn.execute("DELETE FROM duplicates WHERE doc_key = ?", (doc.key,))
        for d in doc.duplicates:
            self.conn.execute("INSERT INTO duplicates(key, kept_key, kind, similarity, level, doc_key, kept_chunk) "
                              "VALUES(?,?,?,?,?,?,?)", (d.key, d.kept_key, d.kind, d.similarity, d.level, doc.key, d.kept_chunk))

    def put_chunks(self, chunks: Sequence[Chunk], text_hashes: Sequence[str]) -> None:
        self.conn.executemany(
            'INSERT INTO chunks(id, doc_id, ordinal, start, "end", page, heading_path, text, text_hash, metadata) VALUES(?,?,?,?,?,?,?,?,?,?)',
            [
                (c.id, c.doc_id, c.ordinal, c.start, c.end, c.page, json.dumps(list(c.heading_path), ensure_ascii=False), c.text, h,
                 json.dumps(c.metadata, ensure_ascii=False, default=str))
                for c, h in zip(chunks, text_hashes)
            ],
        )

    def rekey_sources(self, key_of) -> int:
        """Format-1 migration: rename every file whose stored source differs from
        ``key_of(source)`` (resolved absolute path, NFC) in files, documents and chunks.
        Returns how many files were renamed."""
        n = 0
        for old in self.sources():
            new = key_of(old)
            if new == old or self.conn.execute("SELECT 1 FROM files WHERE source = ?", (new,)).fetchone():
                continue
            n += 1
            for (did,) in self.conn.execute("SELECT id FROM documents WHERE source = ?", (old,)).fetchall():
                nid = new + did[len(old):] if did.startswith(old) else did
                self.conn.execute("UPDATE chunks SET doc_id = ? WHERE doc_id = ?", (nid, did))
                self.conn.execute("UPDATE doc_acl SET doc_id = ? WHERE doc_id = ?", (nid, did))
                self.conn.execute("UPDATE documents SET duplicate_of = ? WHERE duplicate_of = ?", (nid, did))
                self.conn.execute("UPDATE duplicates SET doc_key = ? WHERE doc_key = ?", (nid, did))
                self.conn.execute("UPDATE duplicates SET kept_key = ? WHERE kept_key = ?", (nid, did))
                self.conn.execute("UPDATE duplicates SET key = ? || substr(key, ?) WHERE key = ? OR key LIKE ?",
                                  (nid, len(did) + 1, did, did + "#%"))
                self.conn.execute("UPDATE documents SET id = ?, source = ? WHERE id = ?", (nid, new, did))
            self.conn.execute("UPDATE files SET source = ? WHERE source = ?", (new, old))
        return n

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


def _glob_to_sqlite(pattern: str) -> str:
    """fnmatch-style glob -> SQLite GLOB (same syntax except ``[!...]`` is ``[^...]``)."""
    return pattern.replace("[!", "[^")
