"""Evidence for one question: the retrieved chunks' sentences ranked by support, and abstention.

``support = cosine + LEXICAL_WEIGHT * overlap + TYPE_FIT_WEIGHT * type_fit`` where ``cosine``
is the question-sentence embedding cosine, ``overlap`` the IDF-weighted share of the question's
content-word stems found in the sentence (IDF over the retrieved sentences) and ``type_fit`` 1
when the sentence holds the kind of token the question asks for (a number for "how many", a
year or month for "when", a name for "who"/"where"; always 1 otherwise). How the weights were
chosen: docs/answering.md ("Sentence ranking").

Abstention happens before any model call: when the best dense cosine (question vs any
retrieved sentence) is below ``abstain_min_dense`` AND the best lexical coverage (IDF-weighted
share of the question's content stems found in one chunk) is below ``abstain_min_lexical``, or
when the cosine is below ``abstain_floor_dense`` outright. Fused retrieval scores are never
used, so the rule does not depend on the retriever.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..prompting import split_sentences
from ..types import Hit
from .text import WORD_RE, stem, stems

LEXICAL_WEIGHT = 1.0
TYPE_FIT_WEIGHT = 0.1
"""Sentence ranking weights (cosine is the unit); XQuAD-en, share of questions whose best
sentence holds the gold answer: .828 dev / .837 test (docs/answering.md)."""

NUMBER_WORDS = frozenset(
    "one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand "
    "million billion half dozen".split()
)
MONTHS = frozenset("january february march april may june july august september october november december".split())
NUM_RE = re.compile(r"\d")
YEAR_RE = re.compile(r"\b1\d{3}\b|\b20\d{2}\b|\b\d{1,2}(st|nd|rd|th)\b")


def answer_type(question: str) -> str:
    """Coarse answer type from the wh-word: "number", "date", "person", "place" or "other"."""
    q = question.lower()
    if re.search(r"\bhow (many|much|long|far|old|large|big|tall|high)\b|\bwhat (percentage|percent|number|amount)\b", q):
        return "number"
    if re.search(r"\bwhen\b|\bwhat (year|date|day|month|century|decade|time)\b|\bwhich (year|century)\b|\bin what year\b", q):
        return "date"
    if re.search(r"\bwho\b|\bwhom\b|\bwhose\b|\bwhat (person|man|woman)\b", q):
        return "person"
    if re.search(r"\bwhere\b|\bwhat (city|country|state|place|region)\b|\bin which (city|country|state)\b", q):
        return "place"
    return "other"


def type_fit(sentence: str, qtype: str, q_stems: set[str]) -> float:
    """1.0 when ``sentence`` holds a token of the answer type ``qtype`` asks for (a number, a
    year or month, a capitalised name that is not one of the question's words), else 0.0."""
    if qtype == "other":
        return 1.0
    words = WORD_RE.findall(sentence)
    low = [w.lower() for w in words]
    if qtype == "number":
        return float(bool(NUM_RE.search(sentence)) or any(w in NUMBER_WORDS for w in low))
    if qtype == "date":
        return float(any(YEAR_RE.search(w) for w in words) or any(w in MONTHS for w in low))
    # person / place: a name other than the question's own (the first word is capitalised anyway)
    return float(any(w[:1].isupper() and stem(w.lower()) not in q_stems for w in words[1:]))


@dataclass
class EvidenceSentence:
    """One sentence of a retrieved chunk. ``n``: source number (1-based, order of hits);
    ``start``/``end``: character offsets into ``hit.chunk.text``; ``vector``: its (dim,)
    float32 L2-normalised embedding."""

    n: int
    hit: Hit
    start: int
    end: int
    text: str
    dense: float = 0.0
    overlap: float = 0.0
    type_fit: float = 1.0
    vector: np.ndarray | None = None

    @property
    def support(self) -> float:
        return self.dense + LEXICAL_WEIGHT * self.overlap + TYPE_FIT_WEIGHT * self.type_fit


@dataclass
class Evidence:
    """What the answerer measured about the retrieved hits for one question.

    ``sentences``: best support first; ``best_dense``: max question-sentence cosine;
    ``best_lexical``: max over chunks of the IDF-weighted share of the question's stems present
    (in [0, 1]); ``chunk_lexical``: that share per hit; ``seconds``: time spent."""

    sentences: list[EvidenceSentence]
    best_dense: float
    best_lexical: float
    seconds: float
    chunk_lexical: tuple[float, ...] = ()


def collect_evidence(question: str, hits: Sequence[Hit], embed, query_vector: np.ndarray | None = None) -> Evidence:
    """Split ``hits`` into sentences, embed them with ``embed(texts) -> (n, dim) float32``
    (L2-normalised) and score support. ``query_vector``: the question's (dim,) float32
    L2-normalised embedding when retrieval already computed it; otherwise it is embedded with
    ``embed`` too. Lexical IDF is estimated over the retrieved chunks (+1 smoothed as in
    Lucene's BM25), so it needs no index statistics."""
    t0 = time.perf_counter()
    sents: list[EvidenceSentence] = []
    for n, h in enumerate(hits, 1):
        for s, e in split_sentences(h.chunk.text):
            sents.append(EvidenceSentence(n, h, s, e, h.chunk.text[s:e]))
    if not sents:
        return Evidence([], -1.0, 0.0, time.perf_counter() - t0)
    if query_vector is None:
        vecs = embed([question] + [s.text for s in sents])
        q, svecs = vecs[0], vecs[1:]
    else:
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        svecs = embed([s.text for s in sents])
    sims = svecs @ q
    for i, s in enumerate(sents):
        s.dense = float(sims[i])
        s.vector = svecs[i]
    best_dense = float(sims.max())
    q_stems = stems(question)
    chunk_stems = [stems(h.chunk.text) for h in hits]
    N = len(hits)
    idf = {w: math.log(1 + (N - sum(w in cs for cs in chunk_stems) + 0.5) / (sum(w in cs for cs in chunk_stems) + 0.5))
           for w in q_stems}
    total = sum(idf.values()) or 1.0
    chunk_lex = tuple(sum(idf[w] for w in q_stems if w in cs) / total for cs in chunk_stems)
    best_lexical = max(chunk_lex, default=0.0)
    sent_stems = [stems(s.text) for s in sents]
    n_s = len(sents)
    df = {w: sum(w in ss for ss in sent_stems) for w in q_stems}
    s_idf = {w: math.log(1 + (n_s - d + 0.5) / (d + 0.5)) for w, d in df.items()}
    s_total = sum(s_idf.values()) or 1.0
    qtype = answer_type(question)
    for s, ss in zip(sents, sent_stems):
        s.overlap = sum(v for w, v in s_idf.items() if w in ss) / s_total
        s.type_fit = type_fit(s.text, qtype, q_stems)
    sents.sort(key=lambda s: (-s.support, s.n, s.start))
    return Evidence(sents, best_dense, best_lexical, time.perf_counter() - t0, chunk_lex)


def should_abstain(ev: Evidence, min_dense: float, min_lexical: float, floor_dense: float) -> bool:
    """True when the evidence is too weak to answer (rule in the module docstring)."""
    if not ev.sentences:
        return True
    if ev.best_dense < floor_dense:
        return True
    return ev.best_dense < min_dense and ev.best_lexical < min_lexical
