"""Grounded answers: evidence, routing, verdicts, spans, sentence answers, citation checks.

Modules: :mod:`.evidence` (support, abstention), :mod:`.routing` (question routes),
:mod:`.verdict` (yes/no), :mod:`.spans` (span scoring, imported by benchmarks),
:mod:`.selection` (sentence answers), :mod:`.grounding` (citation checks of free text),
:mod:`.answerer` (:class:`GroundedAnswerer`). Measurements: docs/answering.md.
"""

from __future__ import annotations

from ..query import rewrite_query
from .answerer import ABSTAIN_TEXT, UNDECIDED_TEXT, GroundedAnswerer
from .evidence import Evidence, EvidenceSentence, answer_type
from .routing import ROUTES, route
from .spans import merge_runner_up, span_logprobs

question_type = answer_type
"""Coarse answer type of a question ("number", "date", "person", "place", "other")."""

__all__ = [
    "ABSTAIN_TEXT", "UNDECIDED_TEXT", "Evidence", "EvidenceSentence", "GroundedAnswerer", "ROUTES", "answer_type",
    "merge_runner_up", "question_type", "rewrite_query", "route", "span_logprobs",
]
