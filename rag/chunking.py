"""Structure-aware, token-counted chunking.

A document is split on its sections (headings, PDF pages) first, then on paragraphs (blank
lines), sentences and lines; consecutive pieces of one section are packed greedily up to
``chunk_size_tokens`` word pieces of the embedder's tokenizer (counted without special tokens).
A piece that is still too long (a very long sentence, a code block) is cut into sliding windows
of ``chunk_size_tokens`` word pieces overlapping by ``chunk_overlap_tokens``, cut at word
boundaries where possible. This is the "recursive character splitting" strategy of LangChain's
``RecursiveCharacterTextSplitter`` with token counting, plus section boundaries.

Offsets are character offsets into ``Document.text``: ``chunk.text == doc.text[chunk.start:chunk.end]``.
Each section is tokenized once with offsets; re-tokenizing a chunk's text never gives more than
``chunk_size_tokens`` word pieces (checked for every chunk, and repaired if a tokenizer disagrees).
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .types import Chunk, Document

_PARAGRAPH = re.compile(r"(\n[^\S\n]*\n\s*)")
_SENTENCE = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(\s+)|[\u3002\uff01\uff1f]()(?=\S)")
_LINE = re.compile(r"(\n\s*)")
_SPLITTERS = (_PARAGRAPH, _SENTENCE, _LINE)
_BATCH_DOCS = 256


def _backend(tokenizer: Any):
    """A private ``tokenizers.Tokenizer`` copy without truncation or padding."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, (str, Path)):
        folder = Path(tokenizer)
        file = folder / "tokenizer.json" if folder.is_dir() else folder
        if not file.is_file():
            raise ConfigError(f"{folder}: no tokenizer.json (a fast tokenizer is needed for chunking)")
        backend = Tokenizer.from_file(str(file))
    elif isinstance(tokenizer, Tokenizer):
        backend = Tokenizer.from_str(tokenizer.to_str())
    elif getattr(tokenizer, "is_fast", False) and hasattr(tokenizer, "backend_tokenizer"):
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    else:
        raise ConfigError("chunking needs a Hugging Face *fast* tokenizer (with offset mappings)")
    backend.no_truncation()
    backend.no_padding()
    return backend


def _word_stable(backend: Any) -> bool:
    """True for WordPiece models with a BERT/whitespace pre-tokenizer: there, text cut at a word
    boundary tokenizes exactly as it did inside the longer text (words are tokenized independently)."""
    try:
        spec = json.loads(backend.to_str())
    except ValueError:  # pragma: no cover
        return False
    pre = (spec.get("pre_tokenizer") or {}).get("type")
    return (spec.get("model") or {}).get("type") == "WordPiece" and pre in ("BertPreTokenizer", "Whitespace", "WhitespaceSplit")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def model_max_tokens(tokenizer: Any) -> int | None:
    """The longest input (in tokens, special tokens included) the embedder reads, or None if unknown.

    The smallest of the tokenizer's ``model_max_length`` and, when the tokenizer comes from a
    sentence-transformers folder, that folder's ``sentence_bert_config.json`` ``max_seq_length``
    (all-MiniLM-L6-v2: 512 and 256 -> 256; sentence-transformers truncates at the latter).
    """
    limits: list[int] = []
    folder: Path | None = None
    if isinstance(tokenizer, (str, Path)):
        folder = Path(tokenizer) if Path(tokenizer).is_dir() else Path(tokenizer).parent
        value = _read_json(folder / "tokenizer_config.json").get("model_max_length")
        if isinstance(value, (int, float)):
            limits.append(int(value))
    else:
        value = getattr(tokenizer, "model_max_length", None)
        if isinstance(value, (int, float)):
            limits.append(int(value))
        name = getattr(tokenizer, "name_or_path", None)
        if name and Path(str(name)).is_dir():
            folder = Path(str(name))
    if folder is not None:
        value = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
        if isinstance(value, int):
            limits.append(value)
    limits = [v for v in limits if 0 < v < 1_000_000]  # HF uses ~1e30 for "no limit"
    return min(limits) if limits else None


class _Section:
    __slots__ = ("start", "end", "heading_path", "page", "starts", "word_ids")

    def __init__(self, start: int, end: int, heading_path: tuple[str, ...], page: int | None):
        self.start, self.end, self.heading_path, self.page = start, end, heading_path, page
        self.starts: list[int] = []  # absolute character offset of each word piece
        self.word_ids: list[int | None] = []

    def count(self, a: int, b: int) -> int:
        """Number of word pieces that start in ``[a, b)`` (absolute character offsets)."""
        return bisect_left(self.starts, b) - bisect_left(self.starts, a)


def _sections(doc: Document) -> list[_Section]:
    """The document's sections, sorted, clipped to not overlap, with gaps filled by plain sections."""
    n = len(doc.text)
    spans = sorted(
        ((max(0, min(s.start, n)), max(0, min(s.end, n)), tuple(s.heading_path), s.page) for s in doc.sections),
        key=lambda x: (x[0], x[1]),
    )
    out: list[_Section] = []
    pos = 0
    for i, (start, end, heading_path, page) in enumerate(spans):
        start = max(start, pos)
        if i + 1 < len(spans):
            end = min(end, max(spans[i + 1][0], start))
        if start > pos:
            out.append(_Section(pos, start, (), None))
        if end > start:
            out.append(_Section(start, end, heading_path, page))
            pos = end
    if pos < n:
        out.append(_Section(pos, n, (), None))
    return out


def _strip(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


class Chunker:
    """Split documents into chunks of at most ``chunk_size_tokens`` word pieces.

    ``tokenizer``: a Hugging Face *fast* tokenizer (``AutoTokenizer.from_pretrained(folder)``), a
    ``tokenizers.Tokenizer``, or a model folder / ``tokenizer.json`` path (loaded with the
    ``tokenizers`` library only, no transformers import). Counting is in word pieces without
    special tokens. ``max_length``: the embedder's maximum sequence length in tokens including
    the 2 special tokens; by default :func:`model_max_tokens` (256 for all-MiniLM-L6-v2).

    Raises :class:`rag.errors.ConfigError` if the tokenizer is not a fast one, if
    ``chunk_size_tokens`` is < 1 or > ``max_length - 2`` (chunks would be truncated silently), or
    if ``chunk_overlap_tokens`` is not in ``[0, chunk_size_tokens)``.
    """

    def __init__(self, tokenizer: Any, chunk_size_tokens: int = 128, chunk_overlap_tokens: int = 32,
                 max_length: int | None = None):
        limit = max_length if max_length is not None else model_max_tokens(tokenizer)
        if chunk_size_tokens < 1:
            raise ConfigError(f"chunk_size_tokens must be >= 1, not {chunk_size_tokens}")
        if limit is not None and chunk_size_tokens > limit - 2:
            raise ConfigError(
                f"chunk_size_tokens={chunk_size_tokens} exceeds the embedder's limit of {limit} tokens "
                f"minus 2 special tokens ({limit - 2}); chunks would be truncated"
            )
        if not 0 <= chunk_overlap_tokens < chunk_size_tokens:
            raise ConfigError(
                f"chunk_overlap_tokens must be >= 0 and < chunk_size_tokens ({chunk_size_tokens}), not {chunk_overlap_tokens}"
            )
        self.chunk_size_tokens = int(chunk_size_tokens)
        self.chunk_overlap_tokens = int(chunk_overlap_tokens)
        self.max_length = limit
        self._tok = _backend(tokenizer)
        self._word_stable = _word_stable(self._tok)

    def __repr__(self) -> str:
        return f"Chunker(chunk_size_tokens={self.chunk_size_tokens}, chunk_overlap_tokens={self.chunk_overlap_tokens})"

    # ------------------------------------------------------------------ public API

    def count_tokens(self, text: str) -> int:
        """Number of word pieces in ``text`` without special tokens (what the chunk budget counts)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def chunk(self, doc: Document) -> list[Chunk]:
        """Chunks of one document, in order (``ordinal`` 0, 1, ...; ``id`` -1 until stored).

        Each chunk: ``text == doc.text[start:end]`` with no leading/trailing whitespace, at most
        ``chunk_size_tokens`` word pieces, within one section (``page`` and ``heading_path`` of
        that section), ``title``/``source``/``metadata`` copied from the document. Every
        non-whitespace character of the document lies in some chunk. Whitespace-only documents
        give ``[]``.
        """
        return self.chunk_documents([doc])[0]

    def chunk_documents(self, docs: Iterable[Document]) -> list[list[Chunk]]:
        """Chunk many documents (one list per document, in order); tokenizes in batches (faster)."""
        docs = list(docs)
        out: list[list[Chunk]] = []
        for i in range(0, len(docs), _BATCH_DOCS):
            out.extend(self._chunk_batch(docs[i:i + _BATCH_DOCS]))
        return out

    # ------------------------------------------------------------------ internals

    def _chunk_batch(self, docs: Sequence[Document]) -> list[list[Chunk]]:
        per_doc = [[s for s in _sections(d) if d.text[s.start:s.end].strip()] for d in docs]
        flat = [(d, s) for d, secs in zip(docs, per_doc) for s in secs]
        encodings = self._tok.encode_batch([d.text[s.start:s.end] for d, s in flat], add_special_tokens=False)
        for (_, sec), enc in zip(flat, encodings):
            base = sec.start
            kept = [(a, w) for (a, b), w in zip(enc.offsets, enc.word_ids) if b > a]
            sec.starts = [base + a for a, _ in kept]
            sec.word_ids = [w for _, w in kept]
        spans_per_doc: list[list[tuple[int, int, _Section, bool]]] = []
        for doc, secs in zip(docs, per_doc):
            spans: list[tuple[int, int, _Section, bool]] = []
            for sec in secs:
                spans.extend((a, b, sec, risky or not self._word_stable)
                             for a, b, risky in self._section_spans(doc.text, sec))
            spans_per_doc.append(spans)
        self._verify(docs, spans_per_doc)
        result: list[list[Chunk]] = []
        for doc, spans in zip(docs, spans_per_doc):
            result.append([
                Chunk(id=-1, doc_id=doc.id, ordinal=i, start=a, end=b, text=doc.text[a:b], source=doc.source,
                      title=doc.title, page=sec.page, heading_path=sec.heading_path, metadata=dict(doc.metadata))
                for i, (a, b, sec, _) in enumerate(spans)
            ])
        return result

    def _section_spans(self, text: str, sec: _Section) -> list[tuple[int, int, bool]]:
        """Greedy packing of the section's pieces; oversize pieces become sliding windows.

        Returns ``(start, end, risky)``; ``risky`` marks spans cut inside a word, whose
        re-tokenization may differ from the section's tokenization.
        """
        budget = self.chunk_size_tokens
        overlap = self.chunk_overlap_tokens
        spans: list[tuple[int, int, bool]] = []
        cur: list[tuple[int, int, int]] = []  # pieces (start, end, tokens) of the open chunk
        cur_count = 0
        for a, b, n, fits in self._pieces(text, sec, sec.start, sec.end, 0):
            if not fits:
                if cur:
                    spans.append((cur[0][0], cur[-1][1], False))
                    cur, cur_count = [], 0
                spans.extend(self._windows(text, sec, a, b, budget))
                continue
            if cur and cur_count + n <= budget:
                cur.append((a, b, n))
                cur_count += n
                continue
            if cur:
                spans.append((cur[0][0], cur[-1][1], False))
            # Overlap at piece (sentence) granularity: the next chunk starts with the previous
            # chunk's trailing pieces that fit in chunk_overlap_tokens, so a passage that spans
            # a boundary is whole in one chunk (as LlamaIndex's SentenceSplitter overlaps).
            seed: list[tuple[int, int, int]] = []
            seed_count = 0
            for piece in reversed(cur[1:] if len(cur) > 1 else []):
                if seed_count + piece[2] > overlap or seed_count + piece[2] + n > budget:
                    break
                seed.insert(0, piece)
                seed_count += piece[2]
            cur, cur_count = seed + [(a, b, n)], seed_count + n
        if cur:
            spans.append((cur[0][0], cur[-1][1], False))
        return spans

    def _pieces(self, text: str, sec: _Section, a: int, b: int, level: int):
        """Yield ``(start, end, n_tokens, fits)`` for stripped pieces of ``text[a:b]``, splitting
        by paragraph, sentence, line until a piece fits the budget (``fits=False``: none left)."""
        a, b = _strip(text, a, b)
        if a >= b:
            return
        n = sec.count(a, b)
        if n <= self.chunk_size_tokens:
            yield a, b, n, True
            return
        while level < len(_SPLITTERS):
            regex = _SPLITTERS[level]
            level += 1
            parts = []
            prev = a
            for m in regex.finditer(text, a, b):
                g = 1 if m.group(1) is not None else 2
                sep_start, sep_end = m.span(g)
                if sep_start > prev:
                    parts.append((prev, sep_start))
                prev = max(prev, sep_end)
            parts.append((prev, b))
            if len(parts) > 1:
                for pa, pb in parts:
                    yield from self._pieces(text, sec, pa, pb, level)
                return
        yield a, b, n, False

    def _windows(self, text: str, sec: _Section, a: int, b: int, size: int) -> list[tuple[int, int, bool]]:
        """Sliding windows of ``size`` word pieces over ``text[a:b]``, stepping ``size - overlap``,
        cut between words when a boundary exists in the window (token -> character offsets).

        Returns ``(start, end, risky)``; ``risky`` when a window edge had to fall inside a word.
        Window ends extend to the next window's first word piece, so characters the tokenizer
        drops (control and zero-width characters) stay covered.
        """
        words = sec.word_ids

        def inside_word(k: int) -> bool:
            return words[k] is not None and words[k] == words[k - 1]

        i0, i1 = bisect_left(sec.starts, a), bisect_left(sec.starts, b)
        overlap = min(self.chunk_overlap_tokens, size - 1)
        spans: list[tuple[int, int, bool]] = []
        i = i0
        start_risky = False
        while i < i1:
            j = min(i + size, i1)
            end_risky = False
            if j < i1:
                k = j
                while k > i and inside_word(k):
                    k -= 1
                if k > i:
                    j = k
                else:
                    end_risky = True
            start = a if i == i0 else sec.starts[i]
            end = sec.starts[j] if j < i1 else b
            s, e = _strip(text, start, end)
            if e > s:
                spans.append((s, e, start_risky or end_risky))
            if j >= i1:
                break
            nxt = j - overlap
            while nxt > i and inside_word(nxt):
                nxt -= 1
            if nxt > i:
                i, start_risky = nxt, False
            else:
                i, start_risky = j, end_risky
        return spans

    def _verify(self, docs: Sequence[Document], spans_per_doc: list[list[tuple[int, int, _Section, bool]]]) -> None:
        """Re-tokenize the chunks flagged for checking; re-split the rare one over budget (in place).

        For WordPiece tokenizers that pre-split on whitespace and punctuation (BERT), a span cut
        at word boundaries tokenizes exactly as inside its section, so only spans cut inside a
        word are flagged; for any other tokenizer every chunk is flagged.
        """
        budget = self.chunk_size_tokens
        for _ in range(16):
            flat = [(di, k) for di, spans in enumerate(spans_per_doc) for k, sp in enumerate(spans) if sp[3]]
            if not flat:
                return
            texts = [docs[di].text[spans_per_doc[di][k][0]:spans_per_doc[di][k][1]] for di, k in flat]
            counts = [len(e.ids) for e in self._tok.encode_batch(texts, add_special_tokens=False)]
            bad = {(di, k): c for (di, k), c in zip(flat, counts) if c > budget}
            for di, k in flat:
                if (di, k) not in bad:
                    a, b, sec, _ = spans_per_doc[di][k]
                    spans_per_doc[di][k] = (a, b, sec, False)
            for di in sorted({di for di, _ in bad}):
                new: list[tuple[int, int, _Section, bool]] = []
                for k, (a, b, sec, flag) in enumerate(spans_per_doc[di]):
                    c = bad.get((di, k))
                    if c is None:
                        new.append((a, b, sec, flag))
                        continue
                    size = max(1, min(budget, sec.count(a, b)) - (c - budget))
                    new.extend((s, e, sec, True) for s, e, _ in self._windows(docs[di].text, sec, a, b, size))
                spans_per_doc[di] = new
        raise RuntimeError("chunking: could not fit chunks within the token budget")  # pragma: no cover
