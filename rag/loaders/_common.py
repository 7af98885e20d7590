"""Shared pieces of the loaders: options, the skip record, the text sanitiser and decoding.

Only the standard library is imported here; format libraries are imported lazily by the loaders.
"""

from __future__ import annotations

import codecs
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LoaderError

logger = logging.getLogger("rag")


@dataclass
class LoaderOptions:
    """What to load and how to read record files.

    ``include`` / ``exclude``: shell-style glob patterns (:mod:`fnmatch`) matched against the
    path relative to the walked root (POSIX separators) and against the basename; empty
    ``include`` means every supported file. An ``exclude`` pattern that matches a directory prunes
    it. ``include_hidden``: also walk names starting with ``'.'``. ``max_file_bytes``: larger files
    are skipped (bytes, default 50 MiB).

    Record files (``.csv``, ``.jsonl``, ``.json``): ``id_field`` (auto: ``_id`` then ``id``, else
    the 1-based record number), ``title_field`` (auto: ``title``), ``text_field`` (auto:
    ``text``, ``content``, ``body``), ``metadata_fields`` copied into ``Document.metadata``.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    include_hidden: bool = False
    max_file_bytes: int = 50 * 2**20
    id_field: str | None = None
    title_field: str | None = None
    text_field: str | None = None
    metadata_fields: tuple[str, ...] = ()


@dataclass
class Skipped:
    """A file that was not loaded: ``source`` is the path, ``reason`` a one-line phrase."""

    source: str
    reason: str


_SURROGATES = re.compile("[\ud800-\udfff]")


def sanitise_text(text: str) -> str:
    """Return ``text`` safe to store and index; every loader passes its text through here.

    Removes NUL characters and a leading byte-order mark, replaces lone surrogate code points
    (U+D800-U+DFFF, which cannot be encoded as UTF-8) with U+FFFD, and normalises ``\\r\\n`` and
    ``\\r`` to ``\\n``. Loaders call it *before* computing section offsets, so offsets index into
    ``Document.text`` exactly. Never raises.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        text = text.replace("\x00", "")
    text = _SURROGATES.sub("\ufffd", text)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: its BOM starts with FF FE as well
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_bytes(data: bytes, source: str) -> str:
    """Decode the raw bytes of a text file into sanitised ``str``.

    Order: a byte-order mark decides (UTF-8/16/32); NUL bytes in the first 64 KiB mean a binary
    file; strict UTF-8 is tried next; a file that is UTF-8 with a few invalid bytes (more valid
    multi-byte sequences than invalid bytes) is decoded as UTF-8 with U+FFFD replacements;
    otherwise charset-normalizer detects the encoding (e.g. cp1251, Shift-JIS), preferring
    Windows-1252 when it fits about as well (short Western texts are ambiguous). Raises
    :class:`LoaderError` ``"binary file"`` when charset-normalizer finds no plausible text
    encoding. Invalid bytes are never fatal.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return sanitise_text(data.decode(encoding, errors="replace"))
    if b"\x00" in data[:65536]:
        raise LoaderError(source, "binary file")
    try:
        return sanitise_text(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    replaced = data.decode("utf-8", errors="replace")
    n_bad = replaced.count("\ufffd")
    n_multibyte = sum(1 for ch in replaced if ord(ch) > 127) - n_bad
    if n_multibyte > n_bad:
        logger.debug("%s: UTF-8 with %d invalid bytes; replaced with U+FFFD", source, n_bad)
        return sanitise_text(replaced)
    import charset_normalizer

    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        raise LoaderError(source, "binary file")
    # Short texts are ambiguous between single-byte code pages (charset-normalizer may pick
    # cp775 or cp1257 for a French sentence). Windows-1252 is by far the most common legacy
    # encoding and the WHATWG Encoding Standard's fallback for Western text: take it when it
    # decodes the bytes about as cleanly (mess ratio within 0.05) as the best guess.
    for match in results:
        if "cp1252" in match.could_be_from_charset and match.chaos <= best.chaos + 0.05:
            logger.debug("%s: decoded as cp1252 (detector's best guess: %s)", source, best.encoding)
            return sanitise_text(data.decode("cp1252", errors="replace"))
    logger.debug("%s: detected encoding %s", source, best.encoding)
    return sanitise_text(str(best))


def human_size(n_bytes: int) -> str:
    """Format a size for messages: ``"512 bytes"``, ``"3.2 KB"``, ``"62 MB"`` (1 KB = 1024 bytes)."""
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n_bytes >= scale:
            value = n_bytes / scale
            return f"{value:.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"
    return f"{n_bytes} bytes"  # pragma: no cover


def require_text(text: str, source: str) -> None:
    """Raise :class:`LoaderError` ``"no text"`` when ``text`` is empty or only whitespace."""
    if not text.strip():
        raise LoaderError(source, "no text")


def heading_sections(
    text_length: int, headings: list[tuple[int, int, str]]
) -> tuple[tuple[int, int, tuple[str, ...]], ...]:
    """Turn headings into non-overlapping section spans covering ``[0, text_length)``.

    ``headings``: ``(offset, level, title)`` sorted by offset, ``level`` 1 = outermost. Each
    section runs from its heading's offset to the next heading's offset; its heading path is the
    chain of open headings (a heading closes every heading of the same or deeper level). Text
    before the first heading becomes a section with an empty path. Returns
    ``(start, end, heading_path)`` triples; empty spans are dropped.
    """
    spans: list[tuple[int, int, tuple[str, ...]]] = []
    first = headings[0][0] if headings else text_length
    if first > 0:
        spans.append((0, first, ()))
    stack: list[tuple[int, str]] = []
    for i, (offset, level, title) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = headings[i + 1][0] if i + 1 < len(headings) else text_length
        if end > offset:
            spans.append((offset, end, tuple(t for _, t in stack)))
    return tuple(spans)


def json_safe(value: Any) -> Any:
    """Return ``value`` if it is JSON-safe (str, int, float, bool, None, lists/dicts of them), else ``str(value)``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return sanitise_text(value) if isinstance(value, str) else value
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    return str(value)


def file_stem(path: Path) -> str:
    """The file name without its last suffix (``"guide"`` for ``docs/guide.md``), or the name."""
    return path.stem or path.name
