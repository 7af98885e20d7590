"""HTML loader (``.html``, ``.htm``) built on Beautiful Soup 4.

Boilerplate is dropped (``script``, ``style``, ``nav``, ``aside``, page-level ``header`` /
``footer``, elements with ``role="navigation"``); when the page has a ``<main>`` (or exactly one
``<article>``) only that is kept. Block elements become paragraphs separated by blank lines,
``<pre>`` keeps its whitespace, and ``<h1>``-``<h6>`` become sections with heading paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import LoaderError
from ..types import Document, Section
from ._common import LoaderOptions, file_stem, heading_sections, require_text, sanitise_text

_DROP = ("script", "style", "noscript", "template", "nav", "aside", "svg", "canvas", "iframe",
         "object", "embed", "form", "button", "select", "head")
_BLOCK = frozenset(
    "address article blockquote body caption center dd details dialog div dl dt fieldset figcaption "
    "figure footer h1 h2 h3 h4 h5 h6 header hr html li main ol p pre section summary table tbody "
    "thead tfoot ul title".split()
)
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_WS = re.compile(r"\s+")


class _TextBuilder:
    """Accumulates text with collapsed inline whitespace and blank lines between blocks."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.pending = ""  # separator to emit before the next text ("", " ", "\n", "\n\n")

    def brk(self, sep: str) -> None:
        if self.length and len(sep) > len(self.pending) or (sep == "\n" and self.pending == " "):
            self.pending = sep

    def add(self, text: str, pre: bool = False) -> None:
        if not pre:
            if text[:1].isspace():
                self.brk(" ")
            stripped = _WS.sub(" ", text).strip()
            trailing = text[-1:].isspace()
            text = stripped
        else:
            trailing = False
        if not text:
            return
        if self.length and self.pending:
            self.parts.append(self.pending)
            self.length += len(self.pending)
        self.pending = ""
        self.parts.append(text)
        self.length += len(text)
        if trailing:
            self.pending = " "

    def text(self) -> str:
        return "".join(self.parts)


def _parse(data: bytes):
    from bs4 import BeautifulSoup

    try:
        import lxml  # noqa: F401  (faster, more lenient parser when installed)

        parser = "lxml"
    except ImportError:
        parser = "html.parser"
    return BeautifulSoup(data, parser)


def html_to_text(data: bytes) -> tuple[str, str | None, list[tuple[int, int, str]]]:
    """Extract ``(text, title, headings)`` from HTML bytes (encoding from ``<meta charset>`` or detection).

    ``headings`` are ``(offset, level, heading text)`` with offsets into the returned, sanitised text.
    """
    from bs4 import Comment, NavigableString, Tag
    from bs4.element import CData, Declaration, Doctype, ProcessingInstruction

    soup = _parse(data)
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else None

    for tag in soup.find_all(_DROP):
        tag.decompose()
    for tag in soup.find_all(attrs={"role": "navigation"}):
        tag.decompose()
    for tag in soup.find_all(["header", "footer"]):
        if tag.decomposed:
            continue
        if tag.find_parent(["article", "main"]) is None:
            tag.decompose()
    root = soup.find("main")
    if root is None:
        articles = soup.find_all("article")
        root = articles[0] if len(articles) == 1 else (soup.body or soup)

    skip_types = (Comment, CData, Declaration, Doctype, ProcessingInstruction)
    out = _TextBuilder()
    headings: list[tuple[int, int, str]] = []
    # Iterative walk (deeply nested pages would overflow recursion): items are nodes or end markers.
    stack: list[Any] = [root]
    pre_depth = 0
    while stack:
        node = stack.pop()
        if isinstance(node, tuple):  # ("end", tag)
            _, tag = node
            if tag.name == "pre":
                pre_depth -= 1
            if tag.name in _HEADINGS or tag.name in _BLOCK:
                out.brk("\n\n")
            elif tag.name in ("tr",):
                out.brk("\n")
            elif tag.name in ("td", "th"):
                out.brk(" ")
            continue
        if isinstance(node, NavigableString):
            if isinstance(node, skip_types):
                continue
            text = sanitise_text(str(node))
            out.add(text, pre=pre_depth > 0)
            continue
        if not isinstance(node, Tag):
            continue
        name = node.name
        if name == "br":
            out.brk("\n")
            continue
        if name in _HEADINGS:
            out.brk("\n\n")
            heading = " ".join(node.get_text(" ").split())
            if heading:
                # The heading text starts after the pending separator.
                offset = out.length + (len(out.pending) if out.length else 0)
                headings.append((offset, _HEADINGS[name], sanitise_text(heading)))
        elif name in _BLOCK:
            out.brk("\n\n")
        elif name == "tr":
            out.brk("\n")
        if name == "pre":
            pre_depth += 1
        stack.append(("end", node))
        stack.extend(reversed(node.contents))
    text = out.text()
    return text, title, headings


def load_html(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load an HTML page as one document with heading sections.

    Title: ``<title>``, else the first ``<h1>``, else the file stem. Raises
    :class:`rag.errors.LoaderError` ("no text", "corrupt HTML: ...").
    """
    try:
        text, title, headings = html_to_text(data)
    except LoaderError:
        raise
    except Exception as e:  # bs4 is very lenient; anything else is a broken file
        raise LoaderError(str(path), f"corrupt HTML: {type(e).__name__}: {e}"[:200]) from None
    require_text(text, str(path))
    if not title:
        title = next((h[2] for h in headings if h[1] == 1), None)
    sections = tuple(Section(start=s, end=e, heading_path=hp)
                     for s, e, hp in heading_sections(len(text), headings)) if headings else ()
    return [Document(id=str(path), text=text, source=str(path), title=title or file_stem(path),
                     metadata={**meta, "type": "html"}, sections=sections)]
