"""Conversation-aware query rewriting: a follow-up question becomes a standalone retrieval query.

Deterministic and model-free, so it costs nothing per turn and never invents terms: only words
of the conversation's earlier user question are added.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

from .answering.text import STOP_WORDS, stem

_FOLLOWUP = re.compile(
    r"^\s*(and|also|what about|how about|but|so|then|or)\b|\b(it|its|it's|they|them|their|theirs|this|that|these|those|he|she|him|her|his|hers|there|one|ones)\b",
    re.I,
)
_QWORDS = frozenset("what which who whom whose when where why how about tell me please explain describe is are was were do does did can could would should".split())
_FRAME_VERBS = frozenset(
    "write wrote written make made create invent design develop found founded release use work mean happen say said "
    "call know known find get got give gave given take took taken build built start begin began begun win won lose "
    "lost lead led play live die born become became run ran own buy bought sell sold cause contain include support "
    "require need allow provide produce describe define implement maintain publish discover introduce replace "
    "name list show compare differ".split()
)
"""Verbs that frame a question ("Who *wrote* zlib?") rather than name its topic; a follow-up's
rewrite leaves them out, so "and what about its licence?" after "Who wrote zlib?" searches for
zlib's licence, not for what was written. Matched by stem, so "designed" and "uses" count."""


@functools.lru_cache(maxsize=1)
def _frame_verb_stems() -> frozenset[str]:
    return frozenset(stem(v) for v in _FRAME_VERBS)


def rewrite_query(question: str, history: Sequence[dict] | None) -> str:
    """A standalone retrieval query for a follow-up question (deterministic, no model).

    When ``history`` has an earlier user turn and ``question`` looks like a follow-up (starts
    with "and/what about/how about/..." or contains a pronoun such as it/its/they/this), the
    topic terms of the most recent earlier user question (its content words minus wh-words,
    capitalised names and quoted terms first) that the question lacks are appended. Otherwise
    the question is returned unchanged. Question-framing verbs (:data:`_FRAME_VERBS`) are not
    carried over.
    """
    q = question.strip()
    prev = [m.get("content", "") for m in (history or []) if m.get("role") == "user" and m.get("content")]
    if not prev or not _FOLLOWUP.search(q):
        return q
    last = prev[-1]
    have = {w.lower() for w in re.findall(r"\w+", q)}
    terms: list[str] = []
    for w in re.findall(r"\w+(?:[-'’.]\w+)*", last):
        lw = w.lower()
        if lw in _QWORDS or lw in STOP_WORDS or lw in have or lw in {t.lower() for t in terms}:
            continue
        if stem(lw) in _frame_verb_stems():
            continue
        if len(w) < 2 and not w.isdigit():
            continue
        terms.append(w)
    if not terms:
        return q
    return f"{q} ({' '.join(terms)})"
