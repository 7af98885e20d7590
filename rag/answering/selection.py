"""Sentence answers: 1-3 whole, non-redundant evidence sentences in reading order.

Used for explanatory, list and comparison questions (and as the answer when a span is unsure).
Selection is maximal marginal relevance (Carbonell & Goldstein 1998) over the evidence
sentences: the best-supported whole sentence first, then while fewer than ``max_sentences``,
the candidate maximising ``lam * support - (1 - lam) * max cosine to the chosen`` among those
within ``max_drop`` support of the best and below ``REDUNDANT_COSINE`` to every chosen one. A
chosen sentence that opens with a pronoun ("It", "This") brings the sentence before it in its
chunk, so it reads on its own; one that announces what follows (ends with ":" or "...")
brings the next piece of its document when retrieved (a command, a list; it may open the next
chunk), which does not count against
``max_sentences``: the two are one statement the sentence splitter cut. The result is ordered by
source, then position in the chunk.
"""

from __future__ import annotations

import re

from .evidence import Evidence, EvidenceSentence

REDUNDANT_COSINE = 0.85
"""Two sentences this similar say the same thing; the second adds nothing to read."""
CANDIDATES = 12
_PRONOUN_START = re.compile(r"^(?:it|its|this|these|that|those|they|their|he|she|his|her|such|both)\b", re.I)
_ANNOUNCES = re.compile(r"(?::|\.\.\.|…)\s*$")
CONTINUATION_MAX_CHARS = 400
"""The longest next piece an announcing sentence brings along (a longer one is not its example)."""


def announces(text: str) -> bool:
    """True when ``text`` ends by announcing what follows (":", "..." or "…")."""
    return bool(_ANNOUNCES.search(text))


def is_whole_sentence(text: str) -> bool:
    """True for a readable answer sentence: at least 4 words, opens with a capital, digit,
    quote or bracket, ends with "." or "!" (a heading, a question such as "What is a
    Docstring?", a table row or a cut chunk edge is not)."""
    t = text.strip()
    if len(t.split()) < 4 or "\n\n" in t:
        return False
    if not (t[0].isupper() or t[0].isdigit() or t[0] in "\"'“‘(`*"):
        return False
    return bool(re.search(r"[.!][\"'”’)\]]*$", t))


def select_sentences(ev: Evidence, max_sentences: int = 3, lam: float = 0.7, max_drop: float = 0.25) -> list[EvidenceSentence]:
    """The sentences of the answer (see the module docstring); never empty when ``ev`` has
    sentences. ``max_drop``: support (cosine units) a further sentence may lose to the best."""
    pool = [s for s in ev.sentences[:CANDIDATES] if is_whole_sentence(s.text)] or ev.sentences[:1]
    chosen = [pool[0]]
    top = pool[0].support
    while len(chosen) < max_sentences:
        best, best_score = None, -1e9
        for s in pool:
            if s in chosen or top - s.support > max_drop:
                continue
            sim = max((_cos(s, c) for c in chosen), default=0.0)
            if sim >= REDUNDANT_COSINE:
                continue
            score = lam * s.support - (1 - lam) * sim
            if score > best_score:
                best, best_score = s, score
        if best is None:
            break
        chosen.append(best)
    chosen = _with_antecedents(ev, chosen, max_sentences)
    first_rank = {}
    for s in chosen:
        first_rank.setdefault(s.n, len(first_rank))
    return _with_continuations(ev, sorted(chosen, key=lambda s: (first_rank[s.n], s.start)))


def _cos(a: EvidenceSentence, b: EvidenceSentence) -> float:
    if a.vector is None or b.vector is None:
        return 0.0
    return float(a.vector @ b.vector)


def _with_antecedents(ev: Evidence, chosen: list[EvidenceSentence], limit: int) -> list[EvidenceSentence]:
    out = list(chosen)
    for s in chosen:
        if not _PRONOUN_START.match(s.text):
            continue
        prev = max((p for p in ev.sentences if p.n == s.n and p.end <= s.start), key=lambda p: p.end, default=None)
        if prev is None or prev in out or not is_whole_sentence(prev.text):
            continue
        if len(out) >= limit:  # make room: drop the weakest other sentence
            weakest = min((x for x in out if x is not s), key=lambda x: x.support, default=None)
            if weakest is None or weakest.support > s.support:
                continue
            out.remove(weakest)
        out.append(prev)
    return out


def _with_continuations(ev: Evidence, chosen: list[EvidenceSentence]) -> list[EvidenceSentence]:
    """``chosen`` with the next piece of each announcing sentence right after it."""
    out: list[EvidenceSentence] = []
    for s in chosen:
        out.append(s)
        if not announces(s.text):
            continue
        # by document offset, so the next piece may open the next retrieved chunk of the document
        end = s.hit.chunk.start + s.end
        nxt = min((p for p in ev.sentences if p.hit.chunk.doc_id == s.hit.chunk.doc_id and p.hit.chunk.start + p.start >= end),
                  key=lambda p: p.hit.chunk.start + p.start, default=None)
        if nxt is not None and nxt not in chosen and nxt not in out and len(nxt.text) <= CONTINUATION_MAX_CHARS:
            out.append(nxt)
    return out
