"""The one SHA-256 helper: of bytes, of text (UTF-8) and of a file's bytes.

Used for file content hashes (incremental ingest), normalised text hashes (exact dedup),
embedding cache keys and the manifest's per-file checksums, so each is the same digest.
"""

from __future__ import annotations

import hashlib
import os

BLOCK_BYTES = 2**20
"""Files are hashed in 1 MiB blocks (memory stays flat for large files)."""


def sha256_hex(data: bytes | str) -> str:
    """64 lowercase hex characters: SHA-256 of ``data`` (a str is encoded as UTF-8; lone
    surrogates, e.g. from undecodable file names, are kept with ``surrogatepass``)."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, block_bytes: int = BLOCK_BYTES) -> str:
    """SHA-256 hex of a file's bytes. Raises OSError when the file cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            h.update(block)
    return h.hexdigest()
