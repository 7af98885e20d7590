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

def cache_dir() -> Path:
    """Folder for derived model files: ``$RAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/rag``, else
    ``~/.cache/rag``."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def file_key(path: str | Path) -> str:
    """20 hex digits identifying a file's content: the start of its sha256.

    The same model file installed in two virtual environments gets the same key (so one derived
    copy serves both), and any change of content gets a new one. Hashing a 100 MB model costs
    0.2-0.3 s, so the digest is remembered in ``cache_dir()/file-keys/`` under the file's
    resolved path, size, mtime, ctime and inode: a later cold start costs one ``stat`` and one
    small read, and any write to the file (which changes its ctime) is hashed again.
    Raises OSError when the file cannot be read."""
    p = Path(path).resolve()
    st = p.stat()
    stamp = f"{p}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    memo = cache_dir() / "file-keys" / hashlib.sha256(stamp.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    try:
        known = memo.read_text(encoding="ascii").strip()
        if len(known) == 20:
            return known
    except (OSError, UnicodeDecodeError):
        pass
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    key = h.hexdigest()[:20]
    remember(memo, key)  # a read-only cache only costs the hash next time
    return key


def remember(path: Path, text: str) -> bool:
    """Write a small cache note ``text`` to ``path`` atomically (a temporary name beside it,
    then ``os.replace``), making its folder; False when the cache cannot be written (the note
    is only an optimisation, so callers go on without it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        return True
    except OSError:
        return False


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
