"""Embedding cache: (embedder model id, sha256 of the embedded text) -> float32 vector.

A renamed or moved file, a re-run after a crash, or a file whose other chunks changed costs no
embedding for text already seen. It lives beside the generations in ``embcache.sqlite``; it is
a cache, not index state (losing it costs time, never correctness). Vectors are stored as raw
little-endian float32 bytes, never pickled.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Sequence

import numpy as np

from ..hashing import sha256_hex


def embed_key(text: str) -> str:
    """sha256 hex of the exact text given to the embedder."""
    return sha256_hex(text)


class EmbeddingCache:
    """SQLite-backed cache. Safe across processes (SQLite locking) and crashes (journal)."""

    def __init__(self, path: Path, model_id: str, dim: int | None = None):
        self.path = Path(path)
        self.model_id = model_id
        self.dim = dim
        self.conn = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("CREATE TABLE IF NOT EXISTS emb(model TEXT NOT NULL, key TEXT NOT NULL, dim INTEGER NOT NULL, "
                          "vec BLOB NOT NULL, PRIMARY KEY(model, key))")

    def get_many(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """key -> (dim,) float32 for the keys present."""
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 900):
            part = list(keys[start : start + 900])
            q = f"SELECT key, dim, vec FROM emb WHERE model = ? AND key IN ({','.join('?' * len(part))})"
            for key, dim, blob in self.conn.execute(q, [self.model_id, *part]):
                v = np.frombuffer(blob, dtype="<f4")
                if v.shape[0] == dim:
                    out[key] = v.astype(np.float32)
        return out

    def put_many(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store (n, dim) float32 vectors under ``keys`` in one transaction."""
        vecs = np.asarray(vectors, dtype="<f4")
        self.conn.execute("BEGIN")
        self.conn.executemany(
            "INSERT OR REPLACE INTO emb(model, key, dim, vec) VALUES(?,?,?,?)",
            [(self.model_id, k, int(v.shape[0]), v.tobytes()) for k, v in zip(keys, vecs)],
        )
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
