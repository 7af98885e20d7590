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
                 embed: Callable[[Sequence[str]], np.ndarray], support_threshold: float) -> Answer:
    """The Answer for generated ``text`` with markers resolved against ``sources`` (``{n:
    hit}`` of the prompt), each sentence marked supported or not, and unmarked supported
    sentences cited (rules in the module docstring). ``embed``: texts -> (n, dim) float32."""
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
        if supported and not marked:
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
