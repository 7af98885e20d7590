"""``manifest.json``: the one file that says which generation of an index is current.

The manifest is written last, atomically (temp file, fsync, ``os.replace``, fsync of the
folder), so a reader sees either the previous or the next complete state. It is JSON data
only, never executed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import IndexFormatError
from ..hashing import sha256_file

FORMAT = "rag-index"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
"""Format 1 (before document identity and aliases) opens read-only as it is and is upgraded by
its next write. Format 3 lists ``segments`` (:mod:`rag.index.segments`); a format-2 generation
(one set of files in its folder) opens as it is and becomes segment 0 on its next commit."""
MANIFEST = "manifest.json"

CHEAP_HASH_MAX_BYTES = 64 * 2**20
"""Files up to this size (bytes) get their sha256 checked on every open; larger ones by size
only, and in full by ``rag verify``."""


def fsync_dir(path: Path) -> None:
    """fsync a folder so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically: temp file in the same folder, fsync, os.replace, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_manifest(index_dir: Path) -> dict[str, Any]:
    """Parse and check ``manifest.json``. Raises IndexFormatError naming the file."""
    path = index_dir / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(str(path), "missing manifest") from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(str(path), f"manifest is not valid JSON ({e.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise IndexFormatError(str(path), f"not a {FORMAT} manifest")
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise IndexFormatError(str(path), f"format version {version!r} is not supported (this rag reads versions "
                                          f"{', '.join(map(str, READABLE_VERSIONS))}); rebuild it: move the folder "
                                          f"away and run `rag ingest PATHS --index {index_dir}`")
    for key in ("generation", "files", "counts", "embedder"):
        if key not in data:
            raise IndexFormatError(str(path), f"manifest lacks {key!r}")
    if not isinstance(data["files"], dict):
        raise IndexFormatError(str(path), "manifest 'files' must be an object")
    for rel in data["files"]:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise IndexFormatError(str(path), f"manifest names a file outside the index: {rel!r}")
    return data


def check_files(index_dir: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Check that every file in the manifest exists with its size and sha256.

    ``full=False`` hashes files up to CHEAP_HASH_MAX_BYTES (a truncated or swapped file is caught
    on open); ``full=True`` hashes everything. Raises IndexFormatError naming the first bad file.
    """
    for rel, info in sorted(manifest["files"].items()):
        p = index_dir / rel
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            raise IndexFormatError(str(p), "missing file") from None
        if size != info.get("size"):
            raise IndexFormatError(str(p), f"size {size} bytes does not match the manifest ({info.get('size')} bytes): truncated or replaced")
        if full or size <= CHEAP_HASH_MAX_BYTES:
            if sha256_file(p) != info.get("sha256"):
                raise IndexFormatError(str(p), "checksum mismatch: the file was changed or replaced")
