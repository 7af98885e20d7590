"""Plain-text family: ``.txt`` (and README/LICENSE-like names), Markdown, reStructuredText.

The text is kept as written (markup included), so chunk offsets and citation quotes show the
source exactly; headings only become :class:`rag.types.Section` spans with heading paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..types import Document, Section
from ._common import LoaderOptions, decode_bytes, file_stem, heading_sections, logger, require_text


def _document(path: Path, text: str, title: str | None, meta: dict[str, Any], kind: str,
              headings: list[tuple[int, int, str]]) -> Document:
    sections = tuple(
        Section(start=s, end=e, heading_path=hp) for s, e, hp in heading_sections(len(text), headings)
    ) if headings else ()
    return Document(id=str(path), text=text, source=str(path), title=title,
                    metadata={**meta, "type": kind}, sections=sections)


def load_text(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load a plain-text file: encoding detected (see :func:`decode_bytes`), one document, no sections.

    Title: the file stem. Raises :class:`rag.errors.LoaderError` ("binary file", "no text").
    """
    text = decode_bytes(data, str(path))
    require_text(text, str(path))
    return [_document(path, text, file_stem(path), meta, "text", [])]


# --------------------------------------------------------------------------- Markdown

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_HTML_HEADING = re.compile(r"<h([1-6])\b[^>]*>(.*?)</h\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_BLOCK_START = re.compile(r"^ {0,3}(?:[-+*>]|\d{1,9}[.)]|#{1,6}(?:[ \t]|$)|```|~~~|<)")
_INLINE_MARKUP = re.compile(r"[*_`]+")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _clean_heading(text: str) -> str:
    text = _LINK.sub(r"\1", text)
    text = _INLINE_MARKUP.sub("", text)
    return " ".join(text.split())


def _front_matter(text: str) -> tuple[int, str | None]:
    """Return (end offset of a YAML front-matter block, its title) or (0, None) if there is none."""
    if not text.startswith("---\n"):
        return 0, None
    m = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.M).search(text, 4)
    if not m:
        return 0, None
    block = text[4:m.start()]
    end = m.end() + 1 if m.end() < len(text) and text[m.end()] == "\n" else m.end()
    title: str | None = None
    try:
        import yaml  # PyYAML: the reference YAML parser; safe_load builds plain data only

        data = yaml.safe_load(block)
        if isinstance(data, dict) and isinstance(data.get("title"), (str, int, float)):
            title = str(data["title"]).strip() or None
    except ImportError:
        tm = re.search(r"^title:[ \t]*(.+?)[ \t]*$", block, re.M)
        if tm:
            title = tm.group(1).strip("'\"").strip() or None
    except Exception as e:  # yaml.YAMLError and friends: not front matter we understand
        logger.debug("front matter not parsed: %s", e)
    return end, title


def markdown_headings(text: str, start: int = 0) -> list[tuple[int, int, str]]:
    """Find Markdown headings in ``text[start:]`` as ``(offset, level, title)``.

    Follows CommonMark (https://spec.commonmark.org/0.31.2/): ATX headings (``# Title``, up to 3
    spaces of indentation, optional closing ``#``s), setext headings (a paragraph underlined
    with ``===`` for level 1 or ``---`` for level 2; ``---`` after a blank line is a thematic
    break), and single- or multi-line HTML ``<h1>``-``<h6>`` blocks. Lines inside fenced code blocks
    (````` or ``~~~``, closed by a fence of the same character at least as long) are never headings.
    """
    headings: list[tuple[int, int, str]] = []
    fence: tuple[str, int] | None = None
    para_start: int | None = None  # offset of the first line of the current paragraph
    para_lines: list[str] = []
    code_ranges: list[tuple[int, int]] = []
    fence_open = 0
    pos = start
    for line in text[start:].split("\n"):
        line_start, pos = pos, pos + len(line) + 1
        fm = _FENCE.match(line)
        if fence is not None:
            if fm and fm.group(1)[0] == fence[0] and len(fm.group(1)) >= fence[1] and not fm.group(2).strip():
                fence = None
                code_ranges.append((fence_open, pos))
            continue
        if fm and not (fm.group(1)[0] == "`" and "`" in fm.group(2)):
            fence = (fm.group(1)[0], len(fm.group(1)))
            fence_open = line_start
            para_start, para_lines = None, []
            continue
        if not line.strip():
            para_start, para_lines = None, []
            continue
        am = _ATX.match(line)
        if am:
            headings.append((line_start, len(am.group(1)), _clean_heading(am.group(2) or "")))
            para_start, para_lines = None, []
            continue
        sm = _SETEXT.match(line)
        if sm and para_start is not None:
            headings.append((para_start, 1 if sm.group(1)[0] == "=" else 2, _clean_heading(" ".join(para_lines))))
            para_start, para_lines = None, []
            continue
        if para_start is None:
            if line.startswith("    ") or line.startswith("\t") or _BLOCK_START.match(line):
                continue  # indented code, lists, quotes, HTML: not a setext heading's text
            para_start = line_start
        para_lines.append(line.strip())
    if fence is not None:
        code_ranges.append((fence_open, len(text)))
    for m in _HTML_HEADING.finditer(text, start):
        if any(a <= m.start() < b for a, b in code_ranges):
            continue
        title = " ".join(_TAG.sub(" ", m.group(2)).split())
        if title:
            headings.append((m.start(), int(m.group(1)), title))
    headings = [h for h in headings if h[2]]
    headings.sort(key=lambda h: h[0])
    return headings


def load_markdown(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load Markdown: one document whose sections follow the headings (see :func:`markdown_headings`).

    YAML front matter (``---`` ... ``---`` at the top) is left out of the text; its ``title`` is
    the document title, else the first level-1 heading, else the first heading, else the stem.
    """
    raw = decode_bytes(data, str(path))
    fm_end, fm_title = _front_matter(raw)
    text = raw[fm_end:]
    require_text(text, str(path))
    headings = markdown_headings(text)
    title = fm_title or next((h[2] for h in headings if h[1] == 1), None) or (headings[0][2] if headings else None)
    return [_document(path, text, title or file_stem(path), meta, "markdown", headings)]


# --------------------------------------------------------------------------- reStructuredText

_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1+[ \t]*$")
_PEP_HEADER = re.compile(r"^([A-Za-z][A-Za-z-]*):[ \t]*(.*)$")


def rst_headings(text: str) -> list[tuple[int, int, str]]:
    """Find reStructuredText section titles as ``(offset, level, title)``.

    Per the reST spec (docutils "Sections"): a title is a text line underlined (and optionally
    overlined) by a line of one repeated punctuation character at least as long as the title;
    an underline-only title starts at column 0 and follows a blank line (or the file start).
    Levels are assigned in the order adornment styles (character, with/without overline) first
    appear. A lone adornment line between blank lines is a transition, not a title.
    """
    lines = text.split("\n")
    offsets = []
    pos = 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    styles: dict[tuple[str, bool], int] = {}
    headings: list[tuple[int, int, str]] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        over = _ADORNMENT.match(line)
        # overline + title + underline
        if over and i + 2 < n and (i == 0 or not lines[i - 1].strip()):
            title, under = lines[i + 1], _ADORNMENT.match(lines[i + 2])
            if (title.strip() and not _ADORNMENT.match(title) and under and under.group(1) == over.group(1)
                    and len(line.rstrip()) >= len(title.rstrip())):
                level = styles.setdefault((over.group(1), True), len(styles) + 1)
                headings.append((offsets[i], level, " ".join(title.split())))
                i += 3
                continue
        # title + underline
        if (i + 1 < n and line.strip() and not line[0].isspace() and not _ADORNMENT.match(line)
                and (i == 0 or not lines[i - 1].strip())):
            under = _ADORNMENT.match(lines[i + 1])
            if under and len(lines[i + 1].rstrip()) >= len(line.rstrip()):
                level = styles.setdefault((under.group(1), False), len(styles) + 1)
                headings.append((offsets[i], level, " ".join(line.split())))
                i += 2
                continue
        i += 1
    return headings


def _pep_title(text: str) -> str | None:
    """The ``Title:`` of an RFC 822-style header block at the top (as in Python PEPs), if any."""
    for line in text.split("\n", 40)[:40]:
        if not line.strip():
            return None
        m = _PEP_HEADER.match(line)
        if m and m.group(1).lower() == "title":
            return m.group(2).strip() or None
    return None


def load_rst(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load reStructuredText: sections from title adornments (see :func:`rst_headings`).

    Title: a PEP-style ``Title:`` header field, else the first section title, else the stem.
    """
    text = decode_bytes(data, str(path))
    require_text(text, str(path))
    headings = rst_headings(text)
    title = _pep_title(text) or (headings[0][2] if headings else None) or file_stem(path)
    return [_document(path, text, title, meta, "rst", headings)]
