"""PDF loader built on pypdf: the text layer page by page, one section per page (1-based)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..errors import LoaderError
from ..types import Document, Section
from ._common import LoaderOptions, file_stem, logger, sanitise_text

PAGE_SEPARATOR = "\n\n"
"""Joins the text of consecutive pages in ``Document.text``."""


def _short(e: Exception) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return (f"{type(e).__name__}: {msg}" if msg else type(e).__name__)[:120]


def load_pdf(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load a PDF's text layer with pypdf (``page.extract_text()``), pages joined by a blank line.

    Sections: one per page with text, ``page`` 1-based. Title: the PDF's ``/Title`` metadata,
    else the file stem. ``metadata["pages"]`` is the page count. A PDF encrypted with an empty
    user password (restrictions only) is opened. A page whose text cannot be extracted is logged
    and left empty.

    Raises :class:`rag.errors.LoaderError`: "encrypted PDF" (a password is needed, or the
    cipher needs an optional crypto package), "corrupt PDF: <error>", and "no text extracted
    (scanned PDF without a text layer?)" when no page has text (OCR is out of scope).
    """
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    source = str(path)
    try:
        reader = PdfReader(io.BytesIO(data))
    except (DependencyError, FileNotDecryptedError):
        raise LoaderError(source, "encrypted PDF") from None
    except Exception as e:  # PdfReadError, PdfStreamError, ValueError, ... from a damaged file
        raise LoaderError(source, f"corrupt PDF: {_short(e)}") from None
    try:
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")
            except (DependencyError, NotImplementedError, FileNotDecryptedError, PdfReadError):
                ok = 0
            if not ok:
                raise LoaderError(source, "encrypted PDF")
        pages = list(reader.pages)
    except LoaderError:
        raise
    except (DependencyError, FileNotDecryptedError):
        raise LoaderError(source, "encrypted PDF") from None
    except Exception as e:
        raise LoaderError(source, f"corrupt PDF: {_short(e)}") from None
    if not pages:
        raise LoaderError(source, "corrupt PDF: no pages")

    parts: list[str] = []
    sections: list[Section] = []
    pos = 0
    for number, page in enumerate(pages, start=1):
        try:
            page_text = sanitise_text(page.extract_text() or "").strip()
        except Exception as e:  # one bad page must not lose the others
            logger.warning("%s: page %d: text extraction failed (%s)", source, number, _short(e))
            page_text = ""
        if parts:
            pos += len(PAGE_SEPARATOR)
        parts.append(page_text)
        if page_text:
            sections.append(Section(start=pos, end=pos + len(page_text), page=number))
        pos += len(page_text)
    text = PAGE_SEPARATOR.join(parts)
    if not sections:
        raise LoaderError(source, "no text extracted (scanned PDF without a text layer?)")

    title = None
    try:
        info = reader.metadata
        if info is not None and info.title:
            title = " ".join(sanitise_text(str(info.title)).split()) or None
    except Exception as e:  # broken /Info dictionary: keep the text
        logger.debug("%s: unreadable PDF metadata (%s)", source, _short(e))
    return [Document(id=source, text=text, source=source, title=title or file_stem(path),
                     metadata={**meta, "type": "pdf", "pages": len(pages)}, sections=tuple(sections))]
