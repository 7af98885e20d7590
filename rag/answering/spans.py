"""Span answers: score short spans of a supporting sentence with a causal LM (pure functions).

A candidate span (1-``MAX_SPAN_WORDS`` words, not starting or ending with a stop word, at most
half of its content words taken from the question) is scored by the model's log-likelihood of
``"<span> ["`` after a four-example prompt (:data:`rag.prompting.FEW_SHOT`) whose only source
is the sentence, for the spans of the ``top_starts`` likeliest start words; plus answer-type
priors, a per-type length bonus and a penalty for distance from the question's words. The
spans of the ``pmi_starts`` best start words are scored again with a question-free prompt and
``pmi_weight`` times that log-likelihood is subtracted (domain-conditional PMI, Holtzman et al.
2021): a span the model would copy whatever the question loses its head start. A runner-up
within ``merge_margin`` nats beside the best widens the answer (:func:`merge_runner_up`; off by
default since the sentence is shown after the span). The chosen span is then cut to what the
question asks (:func:`trim_to_question`): the year of a date for "what year", no lower-case
edge words the question already says ("17 seconds" for "how many seconds" is "17").

Any generator with ``token_logprobs`` (the :class:`rag.generation.TransformersGenerator`
contract) can be scored. How each constant was chosen: docs/answering.md; the offline replay
is ``benchmarks/span_tuning.py``, which imports these functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..prompting import FEW_SHOT, SYSTEM_PROMPT
from .evidence import MONTHS, NUM_RE, NUMBER_WORDS, YEAR_RE, EvidenceSentence
from .text import STOP_WORDS, WORD_RE, stem, stems

MAX_SPAN_WORDS = 10
SPAN_END_TEXT = " ["
NULL_QUESTION = "What does the source say?"
"""The question of the PMI baseline prompt; everything before it is shared with the real
prompt, so its KV cache is reused and only the spans are scored again."""
SPAN_PROXIMITY_CAP = 10
SPAN_MERGE_MAX_WORDS = 8
PRIOR_ONLY_NUMBER = -4.0
"""Type prior of a span made only of numbers/years/months for a non-numeric question."""
PRIOR_HAS_YEAR = -2.0
"""Type prior of a span holding a year for a non-numeric, non-date question."""


@dataclass(frozen=True)
class SpanSettings:
    """The span scorer's tuning: the ``span_*`` fields of :class:`rag.config.AnswerConfig`, which
    holds the one copy of their tuned values."""

    top_starts: int | None
    pmi_starts: int
    pmi_weight: float
    proximity_weight: float
    merge_margin: float
    length_bonus_other: float
    length_bonus_entity: float

    def length_bonus(self, qtype: str) -> float:
        """Log-space bonus per extra word for answer type ``qtype``: the summed log-likelihood
        favours 1-2 word spans; answers to what/how questions are longer phrases."""
        return self.length_bonus_other if qtype == "other" else self.length_bonus_entity


@dataclass(frozen=True)
class SpanResult:
    """The chosen span of ``sentence``: ``start``/``end`` offsets into ``sentence.text``,
    ``score`` (nats, with priors) and ``margin``: how far (nats) the best span that does not
    overlap the answer scores below it (``inf`` when there is none)."""

    sentence: EvidenceSentence
    start: int
    end: int
    score: float
    margin: float

    @property
    def text(self) -> str:
        """The span on one line (a line break of the source is not part of the answer)."""
        return " ".join(self.sentence.text[self.start : self.end].split())


def span_logprobs(row, start: int, spans) -> list[float | None]:
    """``log P(span + SPAN_END_TEXT)`` (natural log) for each ``(start, end, ...)`` span of a
    text that begins at character ``start``, from one :meth:`token_logprobs` row
    ``(ends, token_logp, end_logp)`` of that text; None where a span ends inside a token."""
    ends, tl, el = row
    cum = np.cumsum(tl)
    pos: dict[int, int] = {}
    for j, e in enumerate(ends):
        pos.setdefault(e, j)  # first token ending there, as list.index would
    out: list[float | None] = []
    for sp in spans:
        j = pos.get(sp[1] - start)
        out.append(None if j is None else float(cum[j] + el[j]))
    return out


def merge_runner_up(sentence: str, ranked: Sequence, margin: float = 2.0) -> tuple[int, int]:
    """(start, end) character offsets of the answer in ``sentence``, from its candidate spans
    ranked best first as ``(score, (start, end, ...))`` (score in nats): the best span, widened
    to also cover the first runner-up that scores within ``margin`` of it and is not inside it,
    when the covering phrase has at most ``SPAN_MERGE_MAX_WORDS`` words and balanced brackets
    and quotes; otherwise the best span alone. ``margin <= 0`` disables widening."""
    top, (s, e) = ranked[0][0], ranked[0][1][:2]
    if margin <= 0:
        return s, e
    for score, cand in ranked[1:]:
        if top - score > margin:
            break
        s2, e2 = cand[0], cand[1]
        if s2 >= s and e2 <= e:
            continue  # inside the best span: nothing to add
        u0, u1 = min(s, s2), max(e, e2)
        text = sentence[u0:u1]
        if len(text.split()) <= SPAN_MERGE_MAX_WORDS and text.count("(") == text.count(")") and text.count('"') % 2 == 0:
            return u0, u1
        break
    return s, e


_YEAR_QUESTION = re.compile(r"\b(?:what|which) year\b", re.I)
_YEAR = re.compile(r"1\d{3}|20\d{2}")


def trim_to_question(question: str, sentence: str, start: int, end: int) -> tuple[int, int]:
    """(start, end) of the span ``sentence[start:end]`` cut to what ``question`` asks: the
    span's one year when the question asks "what/which year"; then, from each edge, words
    that are lower-case and either stop words or (by stem) words of the question, keeping at
    least one word. Capitalised and numeric words stay: they are part of a name ("Works Council
    Directive" for "Which directive ...?"). Why: SQuAD-style gold answers leave out what the
    question already names; on XQuAD dev (158 questions, replayed) this raised short-answer
    F1 by .014-.02 (docs/answering.md)."""
    words = [(start + m.start(), start + m.end(), m.group(0)) for m in WORD_RE.finditer(sentence[start:end])]
    if not words:
        return start, end
    if _YEAR_QUESTION.search(question):
        years = [w for w in words if _YEAR.fullmatch(w[2])]
        if len(years) == 1:
            return years[0][0], years[0][1]
    q_stems = stems(question)

    def said(w: str) -> bool:
        return not (w[:1].isupper() or w[:1].isdigit()) and (w.lower() in STOP_WORDS or stem(w.lower()) in q_stems)

    i, j = 0, len(words)
    while j - i > 1 and said(words[j - 1][2]):
        j -= 1
    while j - i > 1 and said(words[i][2]):
        i += 1
    return words[i][0], words[j - 1][1]


def type_prior(span_words: list[str], qtype: str) -> float:
    """Log-space bonus for spans matching the expected answer type (tuned on the dev split):
    the model favours numbers and years, which rarely answer a non-numeric question."""
    low = [w.lower() for w in span_words]
    has_num = any(NUM_RE.search(w) for w in span_words) or any(w in NUMBER_WORDS for w in low)
    has_year = any(YEAR_RE.search(w) for w in span_words)
    if qtype == "number":
        return 2.0 if has_num else -2.0
    if qtype == "date":
        if has_year or any(w in MONTHS for w in low):
            return 2.0
        return 0.5 if has_num else -2.0
    only_num = all(NUM_RE.search(w) or w.lower() in NUMBER_WORDS or w.lower() in MONTHS for w in span_words)
    if only_num:
        return PRIOR_ONLY_NUMBER
    pen = PRIOR_HAS_YEAR if has_year else 0.0
    if qtype in ("person", "place"):
        caps = sum(1 for w in span_words if w[:1].isupper() and not NUM_RE.search(w))
        return pen + (1.0 if caps == len(span_words) else (0.0 if caps else -1.5))
    return pen


def candidate_spans(question: str, sentence: str) -> list[tuple[int, int, list[str]]]:
    """Candidate answer spans of ``sentence``: (start, end, words) with 1..MAX_SPAN_WORDS
    words, not starting or ending with a stop word, with at most half of their content words
    taken from the question."""
    words = [(m.start(), m.end(), m.group(0)) for m in WORD_RE.finditer(sentence)]
    q_stems = stems(question)
    out = []
    for i in range(len(words)):
        if words[i][2].lower() in STOP_WORDS:
            continue
        for j in range(i, min(len(words), i + MAX_SPAN_WORDS)):
            if words[j][2].lower() in STOP_WORDS:
                continue
            ws = [x[2] for x in words[i : j + 1]]
            cw = [x for x in ws if x.lower() not in STOP_WORDS]
            inq = sum(1 for x in cw if stem(x.lower()) in q_stems)
            if cw and inq * 2 > len(cw):
                continue
            out.append((words[i][0], words[j][1], ws))
    return out


def span_messages(question: str, title: str, sentence: str) -> list[dict[str, str]]:
    """The span-scoring prompt: system, :data:`FEW_SHOT`, then ``sentence`` as source [1]."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        *FEW_SHOT,
        {"role": "user", "content": f"Sources:\n[1] {title}\n{sentence}\n\nQuestion: {question.strip()}"},
    ]


def score_spans(generator, question: str, sent: EvidenceSentence, qtype: str, st: SpanSettings) -> SpanResult | None:
    """The best span of ``sent`` for ``question`` (None when no candidate can be scored).
    Model cost: one prompt prefill (its shared prefix cached) + ``top_starts`` packed
    sequences, then ``pmi_starts`` sequences under the null prompt."""
    cands = candidate_spans(question, sent.text)
    if not cands:
        return None
    title = sent.hit.chunk.title or sent.hit.chunk.source or ""
    starts: dict[int, list[tuple[int, int, list[str]]]] = {}
    for c in cands:
        starts.setdefault(c[0], []).append(c)
    seq_texts = [sent.text[s : max(c[1] for c in cs)] for s, cs in starts.items()]
    words = [(m.start(), m.end(), m.group(0)) for m in WORD_RE.finditer(sent.text)]
    q_stems = stems(question)
    q_pos = [k for k, w in enumerate(words) if w[2].lower() not in STOP_WORDS and stem(w[2].lower()) in q_stems]
    w_at = {w[0]: k for k, w in enumerate(words)}
    w_end = {w[1]: k for k, w in enumerate(words)}
    lb = st.length_bonus(qtype)

    def prox(a: int, b: int) -> float:
        d = min([a - p for p in q_pos if p < a] + [p - b for p in q_pos if p > b] + [SPAN_PROXIMITY_CAP])
        return st.proximity_weight * min(d, SPAN_PROXIMITY_CAP)

    bonus = [type_prior(cs[0][2][:1], qtype) for cs in starts.values()]
    rows = generator.token_logprobs(span_messages(question, title, sent.text), seq_texts, end_text=SPAN_END_TEXT,
                                    top_first=st.top_starts, first_bonus=bonus)
    # stage 1: question-conditioned score of every span of the scored starts
    scored: dict[int, list[tuple[float, float, tuple[int, int, list[str]]]]] = {}
    for i, ((s, cs), row) in enumerate(zip(starts.items(), rows)):
        if row is None:
            continue
        for c, lp in zip(cs, span_logprobs(row, s, cs)):
            if lp is None:
                continue  # span end falls inside a token
            rest = type_prior(c[2], qtype) + lb * (len(c[2]) - 1) - prox(w_at[c[0]], w_end[c[1]])
            scored.setdefault(i, []).append((lp, rest, c))
    keep = sorted(scored, key=lambda i: -max(lp + r for lp, r, _ in scored[i]))
    # stage 2 (PMI): the best starts' spans scored again without the question
    if st.pmi_weight and keep:
        keep = keep[: st.pmi_starts]
        null_rows = generator.token_logprobs(span_messages(NULL_QUESTION, title, sent.text),
                                             [seq_texts[i] for i in keep], end_text=SPAN_END_TEXT)
        s_of = list(starts)
        for i, null in zip(keep, null_rows):
            null_lp = span_logprobs(null, s_of[i], [c for _, _, c in scored[i]])
            scored[i] = [(lp - st.pmi_weight * nlp, rest, c) for (lp, rest, c), nlp in zip(scored[i], null_lp)]
    ranked = sorted(((lp + rest, c) for i in keep for lp, rest, c in scored[i]), key=lambda x: -x[0])
    if not ranked:
        return None
    s, e = trim_to_question(question, sent.text, *merge_runner_up(sent.text, ranked, st.merge_margin))
    rival = next((sc for sc, c in ranked[1:] if c[1] <= s or c[0] >= e), None)
    margin = float("inf") if rival is None else ranked[0][0] - rival
    return SpanResult(sent, s, e, ranked[0][0], margin)
