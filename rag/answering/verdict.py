"""Yes/no verdicts from evidence: the model's Yes-vs-No log-odds, calibrated, plus cues.

For a yes/no question the generator (any ``token_logprobs`` scorer) reads the evidence (by
default the best two sentences of the top-ranked chunk) after a four-example prompt
(:data:`YES_NO_FEW_SHOT`) and we take ``m = log P("Yes") - log P("No")`` as its first reply
token. Small models lean one way whatever the evidence, so the same question is also scored
without the evidence, giving the baseline ``m_null``: with ``baseline="question"`` (default)
the question alone, no source block (per-question PMI: how much the evidence moves the
verdict), with ``baseline="na"`` the content-free source "N/A" (contextual calibration, Zhao et
al. 2021, "Calibrate Before Use"). The verdict is a logistic model over

* ``m`` and ``m_null`` (calibration is ``m - m_null``; the fitted weights may differ),
* ``negation``: negation words in the supporting sentence that the question lacks,
* ``missing``: the IDF-weighted share of the question's words absent from that chunk (a
  question about "pepsi" asked of a passage that never names Pepsi is usually answered No),
* ``overlap``: the best sentence's IDF-weighted share of the question's words,

fitted on the dev half of BoolQ dev (``benchmarks/qa_yes_no.py``, figures in
docs/answering.md) and reported on the other half; the weights are fields of
:class:`rag.config.AnswerConfig`. ``|z|`` below ``undecided_margin`` answers that the documents
do not settle the question.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

YES_NO_SYSTEM = "You answer yes/no questions using only the source. Reply Yes or No."

YES_NO_FEW_SHOT = [
    {"role": "user", "content": "Source:\nThe Eiffel Tower was completed in 1889 and is 330 metres tall.\n\n"
                                "Question: Is the Eiffel Tower more than 300 metres tall?"},
    {"role": "assistant", "content": "Yes"},
    {"role": "user", "content": "Source:\nWorker bees store the nectar they collect as honey in wax cells. Drones do not "
                                "collect nectar.\n\nQuestion: Do drones collect nectar?"},
    {"role": "assistant", "content": "No"},
    {"role": "user", "content": "Source:\nThe lunar module Eagle landed in the Sea of Tranquility in July 1969 with Neil "
                                "Armstrong and Buzz Aldrin aboard.\n\nQuestion: Did the Eagle land in the Ocean of Storms?"},
    {"role": "assistant", "content": "No"},
    {"role": "user", "content": "Source:\nThe library is free software: it may be used, changed and redistributed by "
                                "anyone, including in commercial products.\n\nQuestion: Can the library be used in a "
                                "commercial product?"},
    {"role": "assistant", "content": "Yes"},
]
"""Written for this project (not from any evaluation set): two Yes and two No, one No by a
contradicting fact rather than a negation."""

NULL_SOURCE = "N/A"
BASELINES = ("question", "na")
"""What ``m_null`` is scored on: the question alone, or the content-free source "N/A"."""
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|nothing|nobody|cannot|without|unlike|instead)\b|n't\b", re.I)


@dataclass(frozen=True)
class VerdictWeights:
    """Logistic weights: ``z = bias + model*m + prior*m_null + negation*neg + missing*miss +
    overlap*ovl``; Yes when ``z > 0`` (the ``yes_no_*`` fields of :class:`rag.config.AnswerConfig`)."""

    bias: float
    model: float
    prior: float
    negation: float
    missing: float
    undecided_margin: float
    overlap: float


@dataclass(frozen=True)
class VerdictFeatures:
    """Inputs of the verdict (see the module docstring); log-odds in nats."""

    m: float
    m_null: float
    negation: int
    missing: float
    overlap: float = 0.0

    def z(self, w: VerdictWeights) -> float:
        return (w.bias + w.model * self.m + w.prior * self.m_null + w.negation * self.negation
                + w.missing * self.missing + w.overlap * self.overlap)


def yes_no_messages(question: str, source: str, few_shot: bool = True) -> list[dict[str, str]]:
    """The verdict prompt: system, :data:`YES_NO_FEW_SHOT` (with ``few_shot``), then
    ``source`` and the question."""
    return [
        {"role": "system", "content": YES_NO_SYSTEM},
        *(YES_NO_FEW_SHOT if few_shot else []),
        {"role": "user", "content": f"Source:\n{' '.join(source.split())}\n\nQuestion: {question.strip()}"},
    ]


def baseline_messages(question: str, baseline: str = "question", few_shot: bool = True) -> list[dict[str, str]]:
    """The verdict prompt without the evidence: ``baseline="question"`` drops the source block
    (the question alone), ``"na"`` reads the content-free source :data:`NULL_SOURCE`. Raises
    ValueError for another ``baseline``."""
    if baseline == "na":
        return yes_no_messages(question, NULL_SOURCE, few_shot)
    if baseline != "question":
        raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, not {baseline!r}")
    return [*yes_no_messages(question, "", few_shot)[:-1], {"role": "user", "content": f"Question: {question.strip()}"}]


def _log_odds(generator, messages) -> float:
    rows = generator.token_logprobs(messages, ["Yes", "No"])
    if rows[0] is None or rows[1] is None:
        return 0.0
    return float(sum(rows[0][1]) - sum(rows[1][1]))


def negation_cues(question: str, sentences: list[str]) -> int:
    """Negation words in ``sentences`` beyond those already in ``question``."""
    return max(0, sum(len(_NEGATION.findall(s)) for s in sentences) - len(_NEGATION.findall(question)))


def verdict_features(generator, question: str, source: str, sentences: list[str], missing: float,
                     use_prior: bool = True, overlap: float = 0.0, few_shot: bool = True,
                     baseline: str = "question") -> VerdictFeatures:
    """Score ``question`` against ``source`` (and, with ``use_prior``, against the evidence-free
    ``baseline``, :func:`baseline_messages`). Model cost: two short prefills (the shared
    system/few-shot prefix is cached)."""
    m0 = _log_odds(generator, baseline_messages(question, baseline, few_shot)) if use_prior else 0.0
    m = _log_odds(generator, yes_no_messages(question, source, few_shot))
    return VerdictFeatures(m, m0, negation_cues(question, sentences), float(missing), float(overlap))


def decide(f: VerdictFeatures, w: VerdictWeights) -> tuple[str | None, float]:
    """("yes" | "no" | None, P(yes)); None when ``|z| < w.undecided_margin``."""
    z = f.z(w)
    p = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
    if abs(z) < w.undecided_margin:
        return None, p
    return ("yes" if z > 0 else "no"), p
