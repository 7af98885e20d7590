"""Loaders: real documents (docs-mixed, BEIR SciFact excerpt), broken and tricky files."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from rag.errors import LoaderError
from rag.loaders import LoaderOptions, Skipped, iter_documents, iter_files, load_file
from rag.loaders._common import decode_bytes, sanitise_text

DOCS = Path(__file__).resolve().parent / "data" / "docs"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIXED = SHARED / "docs-mixed"

needs_mixed = pytest.mark.skipif(not MIXED.is_dir(), reason="shared docs-mixed data not present")


def _check_sections(doc):
    prev_end = 0
    for s in doc.sections:
        assert 0 <= s.start <= s.end <= len(doc.text)
        assert s.start >= prev_end, "sections overlap"
        prev_end = s.end


# --------------------------------------------------------------------------- docs-mixed


@pytest.fixture(scope="module")
def mixed_results():
    """Every file of docs-mixed -> list of Documents or the LoaderError (loaded once, ~10 s: a 117-page PDF)."""
    out = {}
    for item in iter_files([MIXED], LoaderOptions()):
        assert not isinstance(item, Skipped), item
        try:
            out[item] = load_file(item, LoaderOptions())
        except LoaderError as e:
            out[item] = e
    return out


@needs_mixed
def test_every_docs_mixed_file_loads_or_has_a_reason(mixed_results):
    all_files = sorted(p for p in MIXED.rglob("*") if p.is_file())
    assert len(all_files) == 60  # 59 documents + PROVENANCE.md
    assert sorted(mixed_results) == all_files  # nothing silently dropped, deterministic order
    for path, result in mixed_results.items():
        if isinstance(result, LoaderError):
            assert result.reason and "\n" not in result.reason
            continue
        assert len(result) == 1
        doc = result[0]
        assert doc.text.strip() and doc.id == str(path) and doc.source == str(path)
        assert "\x00" not in doc.text and "\r" not in doc.text
        assert doc.metadata["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert doc.metadata["size_bytes"] == path.stat().st_size
        assert doc.metadata["mtime"] == pytest.approx(path.stat().st_mtime)
        json.dumps(doc.to_dict())  # JSON-safe
        _check_sections(doc)
    # All 60 real files have a text layer / text; none should be skipped.
    assert not [p for p, r in mixed_results.items() if isinstance(r, LoaderError)]


@needs_mixed
def test_docs_mixed_types_titles_and_structure(mixed_results):
    docs = {str(p.relative_to(MIXED)): r[0] for p, r in mixed_results.items()}
    types = {k: d.metadata["type"] for k, d in docs.items()}
    assert types["zlib-doc/LICENSE"] == "text"
    assert types["gutenberg/11-alice/11-h/11-h.htm"] == "html"
    assert sum(t == "pdf" for t in types.values()) == 5
    assert sum(t == "markdown" for t in types.values()) == 25
    assert sum(t == "rst" for t in types.values()) == 15

    # PDF: one section per page with text, 1-based pages, PDF metadata title.
    geo = docs["pdf/py-pdf-sample-files/GeoTopo-komprimiert.pdf"]
    assert geo.title == "Geometrie und Topologie"
    assert geo.metadata["pages"] == 117
    pages = [s.page for s in geo.sections]
    assert pages[0] == 1 and pages == sorted(pages) and max(pages) == 117
    w9 = docs["pdf/irs/fw9.pdf"]
    assert [s.page for s in w9.sections] == [1, 2, 3, 4, 5, 6]
    assert "Taxpayer Identification Number" in w9.text
    page2 = next(s for s in w9.sections if s.page == 2)
    assert w9.text[page2.start:page2.end].strip() == w9.text[page2.start:page2.end]
    assert docs["zlib-doc/zlib.3.pdf"].title == "zlib.3"  # no /Title -> stem

    # Markdown: heading paths from ATX headings, title from the first level-1 heading.
    qs = docs["httpx-docs/quickstart.md"]
    assert qs.title == "QuickStart"
    paths = [s.heading_path for s in qs.sections]
    assert ("QuickStart", "Passing Parameters in URLs") in paths
    sec = next(s for s in qs.sections if s.heading_path == ("QuickStart", "Response Content"))
    assert qs.text[sec.start:].startswith("## Response Content")
    assert docs["httpx-docs/index.md"].title == "HTTPX"  # from an HTML <h1> block

    # reST: PEP title from the header, sections from adornments with levels.
    pep8 = docs["python-peps/pep-0008.rst"]
    assert pep8.title == "Style Guide for Python Code"
    assert ("Code Lay-out", "Indentation") in [s.heading_path for s in pep8.sections]

    # HTML: <title>, heading paths h1 > h2 > h3.
    lua = docs["lua-5.4-doc/manual.html"]
    assert lua.title == "Lua 5.4 Reference Manual"
    assert ("2 – Basic Concepts", "2.1 – Values and Types") in [s.heading_path for s in lua.sections]
    assert "<p>" not in lua.text and "function" in lua.text

    # Plain text: UTF-8 Gutenberg, curly quotes intact.
    alice = docs["gutenberg/11-alice/11-0.txt"]
    assert "Alice’s Adventures in Wonderland" in alice.text and alice.title == "11-0"


# --------------------------------------------------------------------------- fixtures in tests/data/docs


def test_markdown_front_matter_setext_and_fences():
    (doc,) = load_file(DOCS / "notes.md")
    assert doc.title == "Field Notes"  # YAML front matter
    assert not doc.text.startswith("---") and doc.text.startswith("Intro paragraph")
    paths = [s.heading_path for s in doc.sections]
    assert paths == [
        (),
        ("Installing",),
        ("Installing", "Setext Section"),
        ("Installing", "Configuration"),
        ("Installing", "Configuration", "Proxies"),
        ("Second Top",),
    ]
    assert all(h != "this is a shell comment, not a heading" for p in paths for h in p)
    assert "# this is a shell comment" in doc.text  # code kept in the text
    _check_sections(doc)
    assert doc.sections[-1].end == len(doc.text)


def test_html_drops_boilerplate_keeps_main_and_headings():
    (doc,) = load_file(DOCS / "page.html")
    assert doc.title == "Widget Manual"
    for junk in ("SCRIPT_TEXT", "color: red", "NAV_TEXT", "ROLE_NAV_TEXT", "ASIDE_TEXT", "FOOTER_TEXT", "LOGO_TEXT"):
        assert junk not in doc.text
    assert "Widgets turn cranks. They are very useful." in doc.text  # inline whitespace collapsed
    assert "line one\n    indented line two" in doc.text  # <pre> kept verbatim
    assert "Turn the dial\nto zero." in doc.text  # <br>
    assert [s.heading_path for s in doc.sections] == [
        ("Widget Manual",),
        ("Widget Manual", "Setup"),
        ("Widget Manual", "Setup", "Calibration"),
        ("Widget Manual", "Café mode"),
    ]
    cafe = doc.sections[-1]
    assert doc.text[cafe.start:].startswith("Café mode")


def test_rst_sections():
    (doc,) = load_file(DOCS / "pep-0020.rst")
    assert doc.title == "The Zen of Python"
    assert [s.heading_path for s in doc.sections][1:] == [("Abstract",), ("The Zen of Python",), ("Easter Egg",), ("References",)]
    assert doc.metadata["type"] == "rst"


def test_rst_overline_levels_and_transitions(tmp_path):
    p = tmp_path / "t.rst"
    p.write_text("=====\nTitle\n=====\n\nIntro.\n\nPart A\n------\n\nText.\n\n----------\n\nSub\n~~~\n\nMore.\n\nPart B\n------\n\nEnd.\n")
    (doc,) = load_file(p)
    assert [s.heading_path for s in doc.sections] == [
        ("Title",), ("Title", "Part A"), ("Title", "Part A", "Sub"), ("Title", "Part B"),
    ]


def test_beir_corpus_excerpt():
    path = DOCS / "beir" / "corpus.jsonl"
    docs = load_file(path)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(docs) == len(records) == 20
    for doc, rec in zip(docs, records):
        assert doc.id == f"{path}#{rec['_id']}"
        assert doc.metadata["beir_id"] == doc.metadata["record_id"] == rec["_id"]
        assert doc.metadata["type"] == "beir"
        assert doc.title == rec["title"] and doc.text == rec["text"]
        assert doc.source == str(path)


def test_csv_with_custom_fields():
    opts = LoaderOptions(id_field="doc_no", title_field="headline", text_field="abstract", metadata_fields=("year", "lang"))
    docs = load_file(DOCS / "records.csv", opts)
    assert [d.metadata["record_id"] for d in docs] == ["A1", "A2"]  # A3 has no text
    assert docs[0].text == "The first abstract, with a comma."
    assert docs[1].text == "Second abstract\nspanning two lines."
    assert docs[1].title == "Second headline" and docs[1].metadata["year"] == "2021"
    assert docs[0].id == f"{DOCS / 'records.csv'}#A1" and docs[0].metadata["type"] == "csv"
    with pytest.raises(LoaderError, match="no record has text"):
        load_file(DOCS / "records.csv")  # default fields do not exist


def test_jsonl_and_json_records(tmp_path):
    jl = tmp_path / "items.jsonl"
    jl.write_text('{"id": 7, "content": "seven", "tag": ["x"]}\nnot json\n\n{"id": 8, "content": "eight"}\n[1, 2]\n')
    docs = load_file(jl, LoaderOptions(metadata_fields=("tag",)))
    assert [d.id for d in docs] == [f"{jl}#7", f"{jl}#8"]
    assert docs[0].metadata["tag"] == ["x"] and docs[0].metadata["type"] == "jsonl"
    js = tmp_path / "items.json"
    js.write_text(json.dumps({"data": [{"key": "a", "body": "alpha", "name": "A"}, {"key": "b", "body": "beta"}]}))
    docs = load_file(js, LoaderOptions(id_field="key", title_field="name"))
    assert [(d.id, d.title, d.text) for d in docs] == [(f"{js}#a", "A", "alpha"), (f"{js}#b", None, "beta")]
    one = tmp_path / "one.json"
    one.write_text('{"text": "single record"}')
    (doc,) = load_file(one)
    assert doc.id == f"{one}#1" and doc.text == "single record"
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(LoaderError, match="invalid JSON"):
        load_file(bad)


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("text, encoding", [
    ("Le café de la gare sert un crème brûlée à côté du théâtre.\n", "cp1252"),
    ("Grüße aus Köln, schöne Straße.", "latin-1"),
    ("Привет, как дела? Это тестовый текст на русском языке, довольно длинный для определения.", "cp1251"),
    ("これは日本語のテキストです。文字コードを判定します。", "shift_jis"),
])
def test_legacy_encodings_detected(tmp_path, text, encoding):
    p = tmp_path / "legacy.txt"
    p.write_bytes(text.encode(encoding))
    (doc,) = load_file(p)
    assert doc.text == text


def test_utf16_with_bom(tmp_path):
    p = tmp_path / "u16.txt"
    p.write_bytes("naïve résumé\r\nline two".encode("utf-16"))
    (doc,) = load_file(p)
    assert doc.text == "naïve résumé\nline two"


def test_invalid_utf8_is_replaced_not_fatal(tmp_path):
    p = tmp_path / "broken.txt"
    p.write_bytes("Grüße aus Köln – ".encode() + b"\xff\xc3(" + " Straße.\r\nEnde\r".encode())
    (doc,) = load_file(p)
    assert doc.text.startswith("Grüße aus Köln")  # still decoded as UTF-8
    assert "\ufffd" in doc.text and "Straße." in doc.text
    assert "\r" not in doc.text and doc.text.endswith("Ende\n")


def test_sanitiser_and_json_lone_surrogates(tmp_path):
    assert sanitise_text("\ufeffa\x00b\r\nc\rd\ud800e") == "ab\nc\nd\ufffde"
    p = tmp_path / "s.jsonl"
    p.write_text('{"id": "1", "text": "bad \\ud83d surrogate \\u0000 nul"}\n')
    (doc,) = load_file(p)
    assert doc.text == "bad \ufffd surrogate  nul"
    doc.text.encode("utf-8")  # does not raise


def test_decode_bytes_binary():
    with pytest.raises(LoaderError, match="binary file"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "x.txt")


# --------------------------------------------------------------------------- files to skip


def _reason(path, options=None):
    with pytest.raises(LoaderError) as info:
        load_file(path, options or LoaderOptions())
    assert info.value.source == str(path)
    return info.value.reason


def test_skip_reasons(tmp_path):
    (tmp_path / "empty.md").write_bytes(b"")
    assert _reason(tmp_path / "empty.md") == "empty file"
    (tmp_path / "blank.txt").write_text("  \n\t\n")
    assert _reason(tmp_path / "blank.txt") == "no text"
    (tmp_path / "image.txt").write_bytes(bytes(range(256)) * 4)
    assert _reason(tmp_path / "image.txt") == "binary file"
    (tmp_path / "big.txt").write_text("word " * 300)
    assert _reason(tmp_path / "big.txt", LoaderOptions(max_file_bytes=1000)) == "file too large (1.5 KB > 1000 bytes)"
    (tmp_path / "x.xyz").write_text("hello")
    assert _reason(tmp_path / "x.xyz") == "unsupported file type .xyz"
    assert _reason(tmp_path / "missing.md") == "no such file or directory"


def _pdf_bytes(text: str | None = None, pages: int = 1, password: str | None = None) -> bytes:
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    for _ in range(pages):
        page = writer.add_blank_page(width=300, height=300)
        if text is not None:
            font = DictionaryObject({
                NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            })
            page[NameObject("/Resources")] = DictionaryObject({
                NameObject("/Font"): DictionaryObject({NameObject("/F1"): writer._add_object(font)})
            })
            stream = DecodedStreamObject()
            stream.set_data(f"BT /F1 12 Tf 20 200 Td ({text}) Tj ET".encode("latin-1"))
            page[NameObject("/Contents")] = writer._add_object(stream)
    if password is not None:
        writer.encrypt(password, algorithm="RC4-128")
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def test_pdf_generated_text_pages(tmp_path):
    p = tmp_path / "two.pdf"
    p.write_bytes(_pdf_bytes("Hello PDF world", pages=2))
    (doc,) = load_file(p)
    assert [s.page for s in doc.sections] == [1, 2]
    assert [doc.text[s.start:s.end] for s in doc.sections] == ["Hello PDF world"] * 2
    assert doc.text == "Hello PDF world\n\nHello PDF world"


def test_pdf_broken_files(tmp_path):
    enc = tmp_path / "secret.pdf"
    enc.write_bytes(_pdf_bytes("Top secret", password="pw"))
    assert _reason(enc) == "encrypted PDF"
    owner_only = tmp_path / "owner-only.pdf"  # empty user password: readable
    owner_only.write_bytes(_pdf_bytes("Readable", password=""))
    assert load_file(owner_only)[0].text == "Readable"
    blank = tmp_path / "blank.pdf"
    blank.write_bytes(_pdf_bytes(None))
    assert _reason(blank) == "no text extracted (scanned PDF without a text layer?)"
    good = _pdf_bytes("Some text here", pages=3)
    trunc = tmp_path / "truncated.pdf"
    trunc.write_bytes(good[: len(good) // 3])
    assert _reason(trunc).startswith("corrupt PDF: ")
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"this is not a pdf at all")
    assert _reason(junk).startswith("corrupt PDF: ")


def test_docx_headings_and_tables(tmp_path):
    import docx

    d = docx.Document()
    d.core_properties.title = "Quarterly Report"
    d.add_heading("Overview", level=1)
    d.add_paragraph("Revenue grew.")
    d.add_heading("Details", level=2)
    d.add_paragraph("Costs fell.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "12"
    d.add_heading("Outlook", level=1)
    d.add_paragraph("Stable.")
    p = tmp_path / "report.docx"
    d.save(p)
    (doc,) = load_file(p)
    assert doc.title == "Quarterly Report" and doc.metadata["type"] == "docx"
    assert doc.text == "Overview\n\nRevenue grew.\n\nDetails\n\nCosts fell.\n\nRegion | Sales\nNorth | 12\n\nOutlook\n\nStable."
    assert [s.heading_path for s in doc.sections] == [("Overview",), ("Overview", "Details"), ("Outlook",)]
    broken = tmp_path / "broken.docx"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    assert _reason(broken).startswith("corrupt DOCX")


# --------------------------------------------------------------------------- walking


def _tree(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / ".hidden").mkdir()
    (root / "build").mkdir()
    (root / "a" / "one.md").write_text("# One\n\ntext")
    (root / "a" / "b" / "two.txt").write_text("two")
    (root / "a" / "b" / "data.bin").write_bytes(b"\x00\x01")
    (root / ".hidden" / "secret.md").write_text("secret")
    (root / ".dotfile.txt").write_text("dot")
    (root / "build" / "out.txt").write_text("built")
    (root / "README").write_text("readme text")
    return root


def test_iter_files_hidden_unsupported_sorted(tmp_path):
    root = _tree(tmp_path)
    items = list(iter_files([root], LoaderOptions()))
    rel = [(str(Path(i.source).relative_to(root)), i.reason) if isinstance(i, Skipped) else str(i.relative_to(root)) for i in items]
    assert rel == ["README", "a/one.md", ("a/b/data.bin", "unsupported file type .bin"), "a/b/two.txt", "build/out.txt"]
    hidden = [str(i.relative_to(root)) for i in iter_files([root], LoaderOptions(include_hidden=True)) if isinstance(i, Path)]
    assert ".dotfile.txt" in hidden and ".hidden/secret.md" in hidden
    # An explicitly named hidden file is loaded.
    assert list(iter_files([root / ".dotfile.txt"], LoaderOptions())) == [root / ".dotfile.txt"]
    missing = list(iter_files([root / "nope"], LoaderOptions()))
    assert missing == [Skipped(str(root / "nope"), "no such file or directory")]


def test_iter_files_include_exclude(tmp_path):
    root = _tree(tmp_path)
    rel = lambda opts: [str(i.relative_to(root)) for i in iter_files([root], opts) if isinstance(i, Path)]  # noqa: E731
    assert rel(LoaderOptions(include=("*.md",))) == ["a/one.md"]
    assert rel(LoaderOptions(include=("**/*.txt",))) == ["a/b/two.txt", "build/out.txt"]
    assert rel(LoaderOptions(exclude=("build",))) == ["README", "a/one.md", "a/b/two.txt"]
    assert rel(LoaderOptions(exclude=("a/b/*", "README"))) == ["a/one.md", "build/out.txt"]
    assert rel(LoaderOptions(include=(f"{root.as_posix()}/a/*",))) == ["a/one.md", "a/b/two.txt"]  # path as walked


def test_symlink_loop_terminates(tmp_path):
    root = _tree(tmp_path)
    os.symlink(root, root / "a" / "b" / "loop")  # directory loop
    os.symlink(root / "a" / "one.md", root / "alias.md")  # second name for a file
    items = [i for i in iter_files([root], LoaderOptions()) if isinstance(i, Path)]
    reals = [os.path.realpath(i) for i in items]
    assert len(reals) == len(set(reals)) == 4  # README, one.md (once), two.txt, out.txt


def test_iter_documents_reports_skips(tmp_path):
    root = _tree(tmp_path)
    (root / "empty.txt").write_bytes(b"")
    results = list(iter_documents([root]))
    skipped = {Path(s.source).name: s.reason for s in results if isinstance(s, Skipped)}
    assert skipped == {"data.bin": "unsupported file type .bin", "empty.txt": "empty file"}
    assert {d.metadata["type"] for d in results if not isinstance(d, Skipped)} == {"text", "markdown"}


def test_import_rag_loaders_is_light():
    import subprocess
    import sys

    code = "import sys, rag.loaders, rag.chunking, rag.dedup, rag.redact; print(sorted(m for m in ('torch','transformers','sentence_transformers','faiss','pypdf','bs4','docx','tokenizers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=True)
    assert out.stdout.strip() == "[]"
