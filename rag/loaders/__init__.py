"""Document loaders: walk paths, pick a loader by file suffix, return :class:`rag.types.Document`.

``iter_files`` finds files (deterministic order, symlink loops cut, hidden names skipped);
``load_file`` loads one file or raises :class:`rag.errors.LoaderError` with a one-line reason;
``iter_documents`` combines both and turns errors into :class:`Skipped` records.

Every loader sets ``metadata``: ``type``, ``mtime`` (UNIX seconds, float), ``size_bytes``,
``content_hash`` (SHA-256 hex of the raw file bytes; the pipeline compares it for incremental
ingest); record files add ``record_id``. All text goes through :func:`sanitise_text` before
section offsets are computed, so ``Section`` and chunk offsets index ``Document.text`` exactly.
Format libraries (pypdf, bs4, python-docx, charset-normalizer) are imported on first use.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import LoaderError
from ..types import Document
from ..hashing import sha256_file as file_sha256
from ..hashing import sha256_hex
from ._common import LoaderOptions, Skipped, decode_bytes, human_size, logger, sanitise_text

LoaderFunc = Callable[[Path, bytes, LoaderOptions, dict[str, Any]], list[Document]]


def _lazy(module: str, name: str) -> LoaderFunc:
    def call(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{module}"), name)(path, data, options, meta)

    call.__name__ = name
    call.__doc__ = f"Lazy reference to :func:`rag.loaders.{module}.{name}`."
    return call


LOADERS: dict[str, LoaderFunc] = {
    ".pdf": _lazy("pdf", "load_pdf"),
    ".html": _lazy("html", "load_html"),
    ".htm": _lazy("html", "load_html"),
    ".docx": _lazy("docx", "load_docx"),
    ".md": _lazy("text", "load_markdown"),
    ".markdown": _lazy("text", "load_markdown"),
    ".rst": _lazy("text", "load_rst"),
    ".txt": _lazy("text", "load_text"),
    ".text": _lazy("text", "load_text"),
    ".csv": _lazy("records", "load_csv"),
    ".jsonl": _lazy("records", "load_jsonl"),
    ".json": _lazy("records", "load_json"),
}
"""Registry: lower-case file suffix -> loader ``(path, raw_bytes, options, base_metadata) -> [Document]``."""

TEXT_FILE_NAMES = frozenset(
    "README LICENSE LICENCE COPYING COPYRIGHT NOTICE AUTHORS CONTRIBUTORS CHANGELOG CHANGES HISTORY "
    "NEWS INSTALL CONTRIBUTING TODO THANKS".split()
)
"""Extension-less file names (compared upper-case) loaded as plain text."""


def loader_for(path: Path) -> LoaderFunc | None:
    """The loader for ``path`` by its lower-case suffix (or well-known text file name), else None."""
    suffix = path.suffix.lower()
    if suffix in LOADERS:
        return LOADERS[suffix]
    if not suffix and path.name.upper() in TEXT_FILE_NAMES:
        return LOADERS[".txt"]
    return None


def _unsupported(path: Path) -> str:
    return f"unsupported file type {path.suffix.lower()}" if path.suffix else "unsupported file type (no extension)"


def _matches(patterns: Sequence[str], rel: str, name: str, full: str = "") -> bool:
    """True if a glob matches the path relative to the walked root, the basename, or the path as walked."""
    for pattern in patterns:
        pattern = pattern.replace(os.sep, "/")
        candidates = {pattern, pattern.rstrip("/")}
        if pattern.startswith("**/"):
            candidates.add(pattern[3:])
        for pat in candidates:
            if pat and (fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(name, pat) or (full and fnmatch.fnmatch(full, pat))):
                return True
    return False


def _selected(options: LoaderOptions, rel: str, name: str, full: str = "") -> bool:
    if options.include and not _matches(options.include, rel, name, full):
        return False
    return not (options.exclude and _matches(options.exclude, rel, name, full))


def iter_files(paths: Sequence[str | Path], options: LoaderOptions) -> Iterator[Path | Skipped]:
    """Yield the files to load under ``paths``, in a deterministic (sorted) order.

    Directories are walked recursively, following symbolic links but entering each real
    directory once (so link loops terminate) and yielding each real file once. Names starting
    with ``'.'`` are skipped unless ``options.include_hidden``; a file named explicitly is
    considered even if hidden. ``options.include`` / ``exclude`` globs are matched against the
    path relative to the walked root, the basename and the path as walked (``root/sub/x.md``);
    excluded directories are pruned.

    Yields :class:`pathlib.Path` for files with a loader and :class:`Skipped` for missing paths
    ("no such file or directory"), unsupported types ("unsupported file type .xyz") and names
    that are not valid UTF-8 (the index stores text keys; the name is shown with U+FFFD).
    Excluded or hidden files are left out silently. Never raises for bad paths.
    """
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()

    def file_item(path: Path) -> Path | Skipped | None:
        real = os.path.realpath(path)
        if real in seen_files:
            return None
        seen_files.add(real)
        try:
            real.encode("utf-8")
        except UnicodeEncodeError:  # bytes that are not UTF-8, kept by Python as lone surrogates
            return Skipped(printable_path(path), "file name is not valid UTF-8 (rename it)")
        return path if loader_for(path) is not None else Skipped(str(path), _unsupported(path))

    for raw in paths:
        root = Path(raw)
        if not root.exists():
            yield Skipped(str(root), "no such file or directory")
            continue
        if not root.is_dir():
            if not _selected(options, root.as_posix(), root.name):
                continue
            item = file_item(root)
            if item is not None:
                yield item
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=_walk_error):
            real_dir = os.path.realpath(dirpath)
            if real_dir in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(real_dir)
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir + "/"
            kept = []
            for d in sorted(dirnames):
                if not options.include_hidden and d.startswith("."):
                    continue
                if options.exclude and _matches(options.exclude, rel_dir + d, d, (Path(dirpath) / d).as_posix()):
                    continue
                if os.path.realpath(os.path.join(dirpath, d)) in seen_dirs:
                    logger.debug("%s: directory already visited (symlink loop?); skipped", os.path.join(dirpath, d))
                    continue
                kept.append(d)
            dirnames[:] = kept
            for name in sorted(filenames):
                if not options.include_hidden and name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if not _selected(options, rel_dir + name, name, path.as_posix()):
                    continue
                if not path.exists():  # dangling symlink
                    yield Skipped(str(path), "no such file or directory")
                    continue
                item = file_item(path)
                if item is not None:
                    yield item


def printable_path(path: str | Path) -> str:
    """``path`` as printable text: undecodable bytes of a file name become U+FFFD."""
    return os.fsencode(path).decode("utf-8", errors="replace")


def _walk_error(error: OSError) -> None:
    logger.warning("cannot read directory %s: %s", error.filename, error.strerror)


def load_file(path: str | Path, options: LoaderOptions | None = None) -> list[Document]:
    """Load one file into one or more documents (one per record for csv/jsonl/json).

    Document ids: ``str(path)`` for single-document files, ``f"{path}#{record_id}"`` for records;
    ``source`` is ``str(path)``. Raises :class:`rag.errors.LoaderError` with a one-line reason
    ("no such file or directory", "unsupported file type .xyz", "file too large (62 MB > 50 MB)",
    "empty file", "binary file", "no text", "encrypted PDF", "corrupt PDF: ...", ...).
    """
    options = options or LoaderOptions()
    path = Path(path)
    source = str(path)
    loader = loader_for(path)
    if loader is None:
        raise LoaderError(source, _unsupported(path))
    try:
        stat = path.stat()
        if not path.is_file():
            raise LoaderError(source, "not a regular file")
        if stat.st_size > options.max_file_bytes:
            raise LoaderError(source, f"file too large ({human_size(stat.st_size)} > {human_size(options.max_file_bytes)})")
        data = path.read_bytes()
    except FileNotFoundError:
        raise LoaderError(source, "no such file or directory") from None
    except PermissionError:
        raise LoaderError(source, "permission denied") from None
    except IsADirectoryError:
        raise LoaderError(source, "not a regular file") from None
    except OSError as e:
        raise LoaderError(source, f"cannot read file: {e.strerror or e}") from None
    if not data:
        raise LoaderError(source, "empty file")
    meta = {"mtime": stat.st_mtime, "size_bytes": len(data), "content_hash": sha256_hex(data)}
    try:
        docs = loader(path, data, options, meta)
    except LoaderError:
        raise
    except (MemoryError, RecursionError) as e:
        raise LoaderError(source, f"cannot parse file: {type(e).__name__}") from None
    if not docs:
        raise LoaderError(source, "no text")
    return docs


def iter_documents(paths: Sequence[str | Path], options: LoaderOptions | None = None) -> Iterator[Document | Skipped]:
    """Load everything under ``paths``: each file's documents, or a :class:`Skipped` with the reason."""
    options = options or LoaderOptions()
    for item in iter_files(paths, options):
        if isinstance(item, Skipped):
            yield item
            continue
        try:
            yield from load_file(item, options)
        except LoaderError as e:
            logger.info("skipped %s: %s", e.source, e.reason)
            yield Skipped(e.source, e.reason)


def supported_suffixes() -> tuple[str, ...]:
    """The file suffixes with a loader, sorted (``(".csv", ".docx", ...)``)."""
    return tuple(sorted(LOADERS))


__all__ = [
    "LOADERS", "LoaderOptions", "Skipped", "TEXT_FILE_NAMES", "decode_bytes", "file_sha256",
    "iter_documents", "iter_files", "load_file", "loader_for", "sanitise_text", "supported_suffixes",
]
