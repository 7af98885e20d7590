"""Word (``.docx``) loader built on python-docx: paragraphs and tables in body order."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from ..errors import LoaderError
from ..types import Document, Section
from ._common import LoaderOptions, file_stem, heading_sections, require_text, sanitise_text

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


def load_docx(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load a .docx file: paragraphs separated by blank lines, table rows as ``cell | cell`` lines.

    Paragraphs styled "Heading N" (Word's built-in heading styles) open sections at level N;
    the "Title" style opens a level-0 section. Title: the core property ``title``, else the first
    "Title"-styled paragraph, else the first heading, else the stem. Raises
    :class:`rag.errors.LoaderError` ("corrupt DOCX: ...", "no text").
    """
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    source = str(path)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks = list(document.iter_inner_content())
    except Exception as e:  # BadZipFile, KeyError, ValueError, PackageNotFoundError, lxml errors
        raise LoaderError(source, f"corrupt DOCX: {type(e).__name__}: {e}"[:200]) from None

    parts: list[str] = []
    headings: list[tuple[int, int, str]] = []
    pos = 0
    style_title: str | None = None

    def emit(text: str) -> int:
        nonlocal pos
        if parts:
            pos += 2
        start = pos
        parts.append(text)
        pos += len(text)
        return start

    for block in blocks:
        if isinstance(block, Paragraph):
            text = sanitise_text(block.text).strip()
            if not text:
                continue
            style = (block.style.name if block.style is not None else "") or ""
            start = emit(text)
            m = _HEADING_STYLE.match(style)
            if m:
                headings.append((start, int(m.group(1)), " ".join(text.split())))
            elif style.lower() == "title":
                headings.append((start, 0, " ".join(text.split())))
                style_title = style_title or " ".join(text.split())
        elif isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells = [" ".join(sanitise_text(c.text).split()) for c in row.cells]
                # Merged cells repeat; keep each distinct neighbour once.
                dedup = [c for i, c in enumerate(cells) if c and (i == 0 or c != cells[i - 1])]
                if dedup:
                    rows.append(" | ".join(dedup))
            if rows:
                emit("\n".join(rows))
    text = "\n\n".join(parts)
    require_text(text, source)
    title = None
    try:
        title = (document.core_properties.title or "").strip() or None
    except Exception:  # pragma: no cover - damaged core properties
        title = None
    title = title or style_title or (headings[0][2] if headings else None) or file_stem(path)
    sections = tuple(Section(start=s, end=e, heading_path=hp)
                     for s, e, hp in heading_sections(len(text), headings)) if headings else ()
    return [Document(id=source, text=text, source=source, title=title,
                     metadata={**meta, "type": "docx"}, sections=sections)]
