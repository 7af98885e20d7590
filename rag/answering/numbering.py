"""Citation numbers as the reader sees them: [1], [2], ... in order of first citation.

Retrieval numbers the hits by rank and the prompt's sources keep those numbers, so an answer
citing only the fourth hit would say "[4]" with no [1]-[3] in sight. Every route renumbers its
answer before it is shown: the first source cited becomes [1], the next new one [2], and
``Answer.hits`` lists the cited hits first in that order (then the others by rank), so that
``Answer.hits[n - 1]`` is the hit ``[n]`` names. ``Hit.rank`` keeps the retrieval rank.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Mapping, Sequence

from ..types import Answer, Hit

MARKER_RE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
"""A citation marker ``[n]`` or ``[n, m]`` (the forms :func:`rag.prompting.parse_citations` keeps)."""


class Numbering:
    """Maps source numbers (a hit's rank, the prompt's ``[n]``) to shown numbers, assigned in
    order of first use; one per answer."""

    def __init__(self) -> None:
        self.shown: dict[int, int] = {}

    def number(self, n: int) -> int:
        """The shown number of source ``n`` (the next free one on its first use)."""
        return self.shown.setdefault(n, len(self.shown) + 1)

    def text(self, text: str) -> str:
        """``text`` with every marker's numbers replaced by shown numbers (in reading order)."""
        return MARKER_RE.sub(lambda m: "[" + ", ".join(str(self.number(int(x))) for x in re.findall(r"\d+", m.group(1))) + "]",
                             text)

    def answer(self, ans: Answer, sources: Mapping[int, Hit] | None = None) -> Answer:
        """``ans`` with its citations, sentences' citations and hits in shown numbers (its text
        must already be numbered). ``sources``: ``{n: hit}`` of the numbers used (default: the
        hits by rank, ``ans.hits[n - 1]``). Citations whose number was never shown are dropped."""
        src = dict(sources) if sources is not None else {i: h for i, h in enumerate(ans.hits, 1)}
        cites = sorted((dataclasses.replace(c, n=self.shown[c.n]) for c in ans.citations if c.n in self.shown),
                       key=lambda c: c.n)
        sents = tuple(dataclasses.replace(s, citations=tuple(self.shown.get(n, n) for n in s.citations))
                      for s in ans.sentences)
        cited = [src[n] for n in sorted(self.shown, key=self.shown.get) if n in src]
        return dataclasses.replace(ans, citations=tuple(cites), sentences=sents, hits=cited_first(ans.hits, cited))


def cited_first(hits: Sequence[Hit], cited: Sequence[Hit]) -> tuple[Hit, ...]:
    """``cited`` (in order), then the other ``hits`` in their order; hits compared by chunk id."""
    ids = {h.chunk.id for h in cited}
    return tuple(cited) + tuple(h for h in hits if h.chunk.id not in ids)


__all__ = ["MARKER_RE", "Numbering", "cited_first"]
