"""Where derived model files live, how they are keyed, and how they are written.

Derived files (the embedder's ONNX graphs, the generator's safetensors copy) are made locally
from model files the user already has, once, and reused by later processes. They live in
:func:`cache_dir`, never in an index folder (an index may be read-only or shared). A derived
file's name carries :func:`file_key` of its source, so replacing the source file makes a new
derived copy instead of silently reusing a stale one. Writes are atomic (a temporary name in the
same folder, then ``os.replace``), so a crash leaves either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SAMPLE_BYTES = 1 << 20
"""Bytes hashed from the start and from the end of a source file by :func:`file_key`."""


def cache_dir() -> Path:
    """Folder for derived model files: ``$RAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/rag``, else
    ``~/.cache/rag``."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def file_key(path: str | Path) -> str:
    """20 hex digits identifying one version of a file: sha256 over its size, mtime (ns), and its
    first and last :data:`SAMPLE_BYTES`. Costs two 1 MiB reads (hashing a whole 100 MB model on
    every cold start would cost 0.2-0.3 s); any replacement of the file changes its mtime.
    Raises OSError when the file cannot be read."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    with open(p, "rb") as fh:
        h.update(fh.read(SAMPLE_BYTES))
        if st.st_size > 2 * SAMPLE_BYTES:
            fh.seek(-SAMPLE_BYTES, os.SEEK_END)
            h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()[:20]


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``target``; on a clean exit it replaces ``target``
    in one rename (an existing ``target`` is removed first), on an exception it is deleted.

    Readers therefore see either no folder or a complete one. Raises OSError when the parent
    cannot be created."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(target.name + f".old-{os.getpid()}")
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
