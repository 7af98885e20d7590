"""Citation checks for free-text answers: resolve markers, mark sentences supported, cite.

A generated sentence is supported by a retrieved chunk when it occurs in it verbatim
(normalised), when at least 60 % of its content words occur in it, or when its embedding
cosine with one of the chunk's sentences is at least ``support_threshold``. Markers pointing
at no source are dropped (and reported); a supported sentence without a marker gets the
``[n]`` of its best supporting sentence.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from ..prompting import content_words, make_citation, parse_citations, split_sentences
from ..types import Answer, AnswerSentence, Citation, Hit
from .evidence import Evidence
from .text import norm

LEXICAL_SUPPORT = 0.6
"""Share of a claim's content words found in one chunk that makes it supported."""


def check_answer(question: str, text: str, sources: dict[int, Hit], hits: Sequence[Hit], ev: Evidence,
                 embed: Callable[[Sequence[str]], np.ndarray], support_threshold: float, *,
                 cite_unmarked: bool = True) -> Answer:
    """The Answer for generated ``text`` with markers resolved against ``sources`` (``{n:
    hit}`` of the prompt), each sentence marked supported or not, and unmarked supported
    sentences cited (rules in the module docstring). ``embed``: texts -> (n, dim) float32.
    ``cite_unmarked=False`` checks without adding markers (a clause whose sentence is not
    finished: its ``[n]`` goes at the sentence's end)."""
    clean, cites, dropped = parse_citations(text, sources)
    cites_by_n: dict[int, Citation] = {c.n: c for c in cites}
    spans = split_sentences(clean)
    claims = [re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", clean[s:e]).strip() for s, e in spans]
    claim_vecs = embed([c or "." for c in claims]) if claims else None
    out_sents: list[AnswerSentence] = []
    inserts: list[tuple[int, str]] = []
    chunk_norm: dict[int, str] = {}  # per chunk id, computed once for every claim
    chunk_words: dict[int, set[str]] = {}
    for es in ev.sentences:
        cid = es.hit.chunk.id
        if es.n in sources and cid not in chunk_norm:
            chunk_norm[cid] = norm(es.hit.chunk.text)
            chunk_words[cid] = content_words(es.hit.chunk.text)
    for k, ((s, e), claim) in enumerate(zip(spans, claims)):
        marked = [int(x) for m in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", clean[s:e]) for x in re.findall(r"\d+", m)]
        best_score, best_sent = -1.0, None
        cw = content_words(claim)
        nclaim = norm(claim)
        for es in ev.sentences:
            if es.n not in sources:
                continue
            cid = es.hit.chunk.id
            if nclaim and nclaim in chunk_norm[cid]:
                score = 1.0
            else:
                lex = len(cw & chunk_words[cid]) / (len(cw) or 1)
                cos = float(es.vector @ claim_vecs[k]) if es.vector is not None else 0.0
                score = max(cos, lex if lex >= LEXICAL_SUPPORT else 0.0)
            if score > best_score:
                best_score, best_sent = score, es
        supported = bool(claim) and best_sent is not None and (best_score >= support_threshold or best_score >= LEXICAL_SUPPORT)
        cit_ns = tuple(marked)
        if supported and not marked and cite_unmarked:
            n = best_sent.n
            cit_ns = (n,)
            pos = e - 1 if clean[e - 1] in ".!?" else e  # before the final punctuation
            inserts.append((pos, f" [{n}]"))
            cites_by_n.setdefault(n, make_citation(n, best_sent.hit, (best_sent.start, best_sent.end)))
        out_sents.append(AnswerSentence(text=claim, supported=supported, citations=cit_ns, support_score=best_score))
    new_text = clean
    for pos, ins in sorted(inserts, reverse=True):
        new_text = new_text[:pos] + ins + new_text[pos:]
    return Answer(
        question=question, text=new_text, citations=tuple(sorted(cites_by_n.values(), key=lambda c: c.n)),
        hits=tuple(hits), sentences=tuple(out_sents), dropped_markers=tuple(dropped),
    )


FLUSH_CHARS = 60
"""An open sentence this long is shown up to its last clause break (``,`` ``;`` ``:``, a dash,
a line break) once that break is at least :data:`MIN_CLAUSE_CHARS` in. Why: a generator that
writes long sentences, or none, would otherwise show nothing until it is done, and a client
that leaves is only noticed when a piece goes out. 60 characters is about 12 words, 0.3-0.5 s
of a small model's output."""
MIN_CLAUSE_CHARS = 20
"""The shortest clause shown on its own (shorter ones wait for the next break)."""
HARD_FLUSH_CHARS = 120
"""An open sentence with no clause break this long is shown up to its last space."""
MAX_HELD_CHARS = 600
"""Generated text with no supported claim in this many characters is given up: the answerer
stops the generator and shows the sentence answer (the same fallback as at the end)."""

_CLAUSE_BREAK = re.compile(r"[,;:][\"'”’)]*\s+|\s+[—–-]+\s+|\n+")


class StreamChecker:
    """Checks a generated answer while it streams; :meth:`feed` and :meth:`finish` return the
    pieces that may be shown now, numbered for the reader (:class:`.numbering.Numbering`).

    Units: whole sentences, as :func:`check_answer` checks them, or, when a sentence runs long,
    its clauses (:data:`FLUSH_CHARS`, :data:`HARD_FLUSH_CHARS`). A clause is checked without a
    citation being added; its sentence is checked whole when it ends (the ``[n]`` of an unmarked
    supported sentence goes at its end, and ``sentences`` gets one entry per sentence). Pieces
    are held back until the first supported clause or sentence; :attr:`gave_up` turns true
    when :data:`MAX_HELD_CHARS` are held with none. ``"".join`` of everything returned is the
    answer's text.
    """

    def __init__(self, question: str, sources: dict[int, Hit], hits: Sequence[Hit], ev: Evidence,
                 embed: Callable[[Sequence[str]], np.ndarray], support_threshold: float, numbering,
                 flush_chars: int = FLUSH_CHARS):
        self.question, self.sources, self.hits, self.ev = question, sources, hits, ev
        self.embed, self.threshold, self.numbering = embed, support_threshold, numbering
        self.flush_chars = flush_chars
        self.pending = ""  # generated, not yet checked
        self.prefix = ""  # checked text of the sentence still open (shown or held)
        self.held: list[str] = []
        self.shown: list[str] = []
        self.sentences: list[AnswerSentence] = []
        self.citations: dict[int, Citation] = {}
        self.dropped: list[int] = []
        self.any_supported = False

    @property
    def gave_up(self) -> bool:
        return not self.any_supported and sum(map(len, self.held)) >= MAX_HELD_CHARS

    @property
    def text(self) -> str:
        return "".join(self.shown)

    def feed(self, piece: str) -> list[str]:
        self.pending += piece
        out: list[str] = []
        while (cut := self._cut()) is not None:
            seg, self.pending = self.pending[:cut[0]], self.pending[cut[0]:]
            out += self._process(seg, whole=cut[1])
        return out

    def finish(self) -> list[str]:
        seg, self.pending = self.pending.rstrip(), ""
        return self._process(seg, whole=True)

    def _cut(self) -> tuple[int, bool] | None:
        """(offset, ends a sentence) of the next piece of ``pending`` to check, or None."""
        p = self.pending
        spans = split_sentences(p)
        if len(spans) >= 2 and not p[spans[-1][0]:].startswith("["):
            return spans[-1][0], True
        if len(self.prefix) + len(p) < self.flush_chars:
            return None
        ends = [m.end() for m in _CLAUSE_BREAK.finditer(p) if m.end() >= MIN_CLAUSE_CHARS]
        if not ends and len(p) >= HARD_FLUSH_CHARS:
            ends = [m.end() for m in re.finditer(r"\s+", p)]
        for end in reversed(ends):  # the latest break outside a marker, not right before one
            if p[:end].count("[") == p[:end].count("]") and not p[end:].lstrip().startswith("["):
                return end, False
        return None

    def _check(self, text: str, cite: bool) -> Answer:
        return check_answer(self.question, text, self.sources, self.hits, self.ev, self.embed, self.threshold,
                            cite_unmarked=cite)

    def _process(self, seg: str, whole: bool) -> list[str]:
        if not seg.strip():
            return []
        if whole:
            a = self._check(self.prefix + seg, True)
            shown_part = self.prefix.rstrip()
            if shown_part and a.text.startswith(shown_part):
                out = a.text[len(shown_part):]
                out = out.lstrip() if self.prefix[-1:].isspace() else out
            elif shown_part:  # checking the whole sentence changed its shown part: check the rest alone
                a = self._check(seg, True)
                out = a.text
            else:
                out = a.text
            self.prefix = ""
            self.sentences.extend(a.sentences)
        else:
            a = self._check(seg, False)
            out = a.text
        out += " " if seg[-1:].isspace() else ""
        if not whole:
            self.prefix += out
        self.dropped.extend(a.dropped_markers)
        for c in a.citations:
            self.citations.setdefault(c.n, c)
        if any(s.supported for s in a.sentences):
            self.any_supported = True
        if not self.any_supported:
            self.held.append(out)
            return []
        res = [self.numbering.text(x) for x in self.held + [out] if x]
        self.held.clear()
        self.shown.extend(res)
        return res
