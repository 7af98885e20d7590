"""Grounded answers: abstention, evidence selection, short answers, citations, query rewriting.

Pipeline for one question and its retrieved hits (:meth:`GroundedAnswerer.stream`):

1. **Evidence.** Every retrieved chunk is split into sentences; the question and the sentences
   are embedded and each sentence gets ``support = cosine + LEXICAL_WEIGHT * overlap +
   TYPE_FIT_WEIGHT * type_fit`` where ``overlap`` is the IDF-weighted share of the question's
   content-word stems found in the sentence (IDF over the retrieved sentences) and ``type_fit``
   is 1 when the sentence holds the kind of token the question asks for (a number for "how
   many", a year or month for "when", a name for "who"/"where"; always 1 for other questions).
2. **Abstention** (before any model call). Abstain when the best dense cosine (question vs any
   retrieved chunk or sentence, re-embedded here) is below ``abstain_min_dense`` AND the best
   lexical coverage (IDF-weighted share of the question's content stems found in one chunk, a
   BM25-like score normalised by the query's maximum attainable value) is below
   ``abstain_min_bm25``, or when the dense cosine is below ``abstain_floor_dense`` outright.
   Fused scores are never used.
3. **Answer.** With a generator that exposes :meth:`token_logprobs` (the default transformers
   generator) the answer is a short span *copied from the best supporting sentence*: candidate
   spans (1-``MAX_SPAN_WORDS`` words, not starting/ending with stop words, not made of question
   words) are scored by the model's log-likelihood of ``"<span> ["`` after a four-example
   prompt (:data:`rag.prompting.FEW_SHOT`) whose only source is that sentence, for the spans of
   the ``SPAN_TOP_STARTS`` likeliest start words; plus question-type priors (numbers for "how
   many", years for "when", no bare number/year for other questions, capitalised names for
   who/where), a per-type length bonus (``SPAN_LENGTH_BONUS``) and a penalty for distance from
   the question's words (``SPAN_PROXIMITY_WEIGHT``). The spans of the ``SPAN_PMI_STARTS`` best
   start words are then scored again with a question-free prompt and ``SPAN_PMI_WEIGHT`` times
   that log-likelihood is subtracted (domain-conditional PMI): a span the model would copy
   whatever the question loses its head start. When the runner-up span nearly ties with the
   best (within ``SPAN_MERGE_MARGIN`` nats) and lies beside it, the answer is the phrase
   covering both (:func:`merge_runner_up`). The supporting sentence travels as the citation
   quote.

   Tuned offline on the XQuAD-en dev split (``benchmarks/span_tuning.py``, 150 questions,
   replaying the recorded model scores), then run through the real pipeline
   (``rag eval qa --split dev --limit 150``): one-example prompt, 8 starts, no PMI (the first
   version) F1 .347 / contains .447; four examples: .380 / .447; + PMI 0.4 over the 4 best of 12
   starts and smaller length bonuses: .482 / .540; + IDF-weighted sentence ranking (above):
   .507 / .580; + runner-up widening (chosen on the whole dev half, see
   ``SPAN_MERGE_MARGIN``; all 1,190 questions: F1 .466 -> .449, contains .482 -> .523) is the
   default. Tried and dropped: scoring the 2 best sentences (the model prefers
   confident spans of wrong sentences; contains -.05 to -.08), widening the chosen span to a
   fixed window (F1 -0.03 to -0.06, contains +0-0.02), spans of at most 6-8 words (contains
   -.05), ranking start words by a 3-7 word prefix before scoring full spans (0 to -.08),
   int8 dynamic quantisation of the model's linear layers (1.35x faster, contains .42).
   Replayed on the whole dev half (595 questions; the rule without widening: contains .474,
   F1 .455), also dropped: boundary features (span followed by punctuation, preceded by a
   preposition; +0), a listwise logistic ranker over 27 span features trained on one half, tested on the other
   (.405-.481 contains), question-span embedding cosine (-.002 to -.02), extending a name to
   its whole capitalised run (+.005 contains, -.004 F1), a question-first prompt (dev[2::4]:
   .450 vs .497) and averaging both prompts (.49-.51); scoring the two best sentences under
   one prompt (-.03 to -.09 on the first 33 of dev[2::4]); re-ranking sentences by SmolLM2's
   question likelihood (UPR, Sachan et al. 2022; +1 to +2 points on 58 questions for +0.5 s).
   The gold answer is among the spans of the 4 re-scored start words for 73 % of dev
   questions but chosen for 47 %: the model's choice among them is the limit.
   Held-out results are in README.md. Other generators get the
   numbered sources (:func:`rag.prompting.build_prompt`) and their free text is checked: markers
   are resolved (:func:`rag.prompting.parse_citations`), unmarked supported sentences get a
   citation, and an answer with no supported sentence falls back to the extractive answer.
   The extractive generator answers with the best supporting sentence itself.

Thresholds were calibrated on XQuAD-en (answerable; dense top-5 retrieval over its 240
passages) against SciFact claims asked of the same index (out-of-domain); see the constants.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from .config import GenerationConfig
from .generation import ExtractiveGenerator, GenerationOptions, Generator
from .prompting import (
    build_prompt,
    content_words,
    make_citation,
    parse_citations,
    split_sentences,
)
from .types import Answer, AnswerSentence, Citation, Hit

log = logging.getLogger("rag")

ABSTAIN_TEXT = "Not found in the indexed documents."

# Calibrated with benchmarks/qa_calibrate.py: 150 XQuAD-en questions (answerable, spread over all
# passages) vs the first 150 SciFact claims (out-of-domain), dense top-5 retrieval over the 240
# XQuAD passages, all-MiniLM-L6-v2. Best sentence cosine, percentiles 5/25/50/75/95:
# answerable .447/.583/.666/.748/.842, out-of-domain .204/.265/.314/.356/.449; lexical coverage
# answerable .25/.42/.60/.78/1.0, out-of-domain 0/.055/.081/.11/.20. With the values below:
# out-of-domain abstention 0.953, false abstention 0.033 (min_dense 0.40: 0.860 / 0.013).
DEFAULT_ABSTAIN_MIN_DENSE = 0.45
DEFAULT_ABSTAIN_FLOOR_DENSE = 0.25
DEFAULT_ABSTAIN_MIN_LEXICAL = 0.4
DEFAULT_SUPPORT_THRESHOLD = 0.5
"""A generated sentence is supported by a chunk sentence when their embedding cosine is at least
this, or when at least 60 % of its content words occur in the chunk, or it occurs verbatim."""

LEXICAL_WEIGHT = 1.0
TYPE_FIT_WEIGHT = 0.1
"""Sentence ranking weights (cosine is the unit). Measured with all 1,190 XQuAD-en questions
(dev / test halves) as the share whose best sentence holds the gold answer: plain overlap
fraction x 0.5 (the previous rule) .798 / .805; IDF-weighted overlap x 1.0 .823 / .830; + type
fit x 0.1 .828 / .837. IDF weighting stops frequent words ("the city") from outvoting the rare
word that names the answer's sentence."""
EMBED_CACHE_SIZE = 20_000
MAX_SPAN_WORDS = 10
SPAN_END_TEXT = " ["
SPAN_LENGTH_BONUS = {"other": 0.5, "person": 1.0, "place": 1.0, "number": 1.0, "date": 1.0}
"""Log-space bonus per extra word of a candidate span, by question type (tuned on the XQuAD dev
split): the model's summed log-likelihood favours 1-2 word spans, SQuAD answers to what/how/why
questions are longer phrases."""
SPAN_PROXIMITY_WEIGHT = 0.4
"""Log-space penalty per word between a span and the nearest question word in the sentence
(capped at ``SPAN_PROXIMITY_CAP`` words): SQuAD answers sit next to the question's words."""
SPAN_PROXIMITY_CAP = 10
SPAN_PMI_WEIGHT = 0.4
"""Weight of the question-free log-likelihood subtracted from a span's score (domain-conditional
PMI, Holtzman et al. 2021, "Surface Form Competition"): spans the model would copy from the
sentence whatever the question (its first words, numbers) lose their head start. 0 disables
the second scoring pass."""
SPAN_PMI_STARTS = 4
"""How many start words (best by the question-conditioned score) are scored again for PMI."""
SPAN_TOP_STARTS = 12
"""Start words whose spans are scored: the 12 whose first token the model finds likeliest
(plus the type prior); bounds the model cost to one prefill and 12 + 4 short sequences, packed
into one sequence each (:meth:`rag.generation.TransformersGenerator.token_logprobs`). XQuAD dev
150, replayed: 8 + 3 starts contains .540, 10 + 3 .553, 12 + 4 .580, 16 + 4 .580; the real
pipeline with 12 + 4: .580, time to first token p50 1.58 s (2.17 s before packing)."""
SPAN_MERGE_MARGIN = 2.0
"""When the runner-up span scores within this many nats of the best and lies beside or across
it, the answer is the phrase covering both (at most ``SPAN_MERGE_MAX_WORDS`` words): the
model's near-ties are mostly a correct span and its neighbour ("yin-yang" vs "wuxing
philosophy" -> "yin-yang and wuxing philosophy"). Replayed on the whole XQuAD dev half (595
questions, two halves): contains .483/.465 -> .523/.512, F1 .461/.450 -> .455/.437, mean
answer 3.8 -> 4.4 words; margin 1.0: .510/.492; max 6 words: .503/.505. 0 disables."""
SPAN_MERGE_MAX_WORDS = 8
NULL_QUESTION = "What does the source say?"
"""The question of the PMI baseline prompt; everything before it is shared with the real
prompt, so its KV cache is reused and only the spans are scored again."""
PRIOR_ONLY_NUMBER = -4.0
"""Type prior of a span made only of numbers/years/months for a non-numeric question."""
PRIOR_HAS_YEAR = -2.0
"""Type prior of a span holding a year for a non-numeric, non-date question."""


# --------------------------------------------------------------------------- text helpers
_WORD_RE = re.compile(r"\w+(?:[-–'’.,/:]\w+)*%?", re.U)
_SPAN_STOP = frozenset(
    "a an the of in on at to for by with from and or but is are was were be been being it its this that these those "
    "as which who whom what when where why how did do does has have had not no than then also into over under "
    "after before during he she they we i you his her their our your him them us such".split()
)


def _stem(w: str) -> str:
    """Porter-style light stem (PyStemmer's English Snowball when installed, else suffix strip)."""
    try:
        import Stemmer  # PyStemmer, a small C extension

        return _stemmer(Stemmer).stemWord(w)
    except ImportError:  # pragma: no cover
        return re.sub(r"(ing|ed|es|s)$", "", w) if len(w) > 4 else w


_STEMMER = None


def _stemmer(mod):
    global _STEMMER
    if _STEMMER is None:
        _STEMMER = mod.Stemmer("english")
    return _STEMMER


def _stems(text: str) -> set[str]:
    return {_stem(w) for w in content_words(text)}


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


# --------------------------------------------------------------------------- evidence
@dataclass
class _Sentence:
    n: int  # source number (1-based, order of hits)
    hit: Hit
    start: int  # offsets into hit.chunk.text
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
    """What the answerer measured about the retrieved hits for one question."""

    sentences: list  # list[_Sentence], best support first
    best_dense: float
    best_lexical: float
    seconds: float


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


def merge_runner_up(sentence: str, ranked: Sequence, margin: float = SPAN_MERGE_MARGIN) -> tuple[int, int]:
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


def question_type(question: str) -> str:
    """Coarse answer type from the wh-word: number, date, person, place, or other."""
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


_NUM_RE = re.compile(r"\d")
_YEAR_RE = re.compile(r"\b1\d{3}\b|\b20\d{2}\b|\b\d{1,2}(st|nd|rd|th)\b")
_MONTHS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"}


def _type_prior(span_words: list[str], qtype: str) -> float:
    """Log-space bonus for spans matching the expected answer type (tuned on the dev split)."""
    low = [w.lower() for w in span_words]
    has_num = any(_NUM_RE.search(w) for w in span_words) or any(w in _NUMBER_WORDS for w in low)
    has_year = any(_YEAR_RE.search(w) for w in span_words)
    if qtype == "number":
        return 2.0 if has_num else -2.0
    if qtype == "date":
        if has_year or any(w in _MONTHS for w in low):
            return 2.0
        return 0.5 if has_num else -2.0
    # the model favours numbers and years; a span made only of them rarely answers a non-numeric
    # question (XQuAD dev errors: "What researcher first used the word oxygen?" -> "1773",
    # "What was named 'The Tesla'?" -> "1960"), and one holding a year rarely does either
    only_num = all(_NUM_RE.search(w) or w.lower() in _NUMBER_WORDS or w.lower() in _MONTHS for w in span_words)
    if only_num:
        return PRIOR_ONLY_NUMBER
    pen = PRIOR_HAS_YEAR if has_year else 0.0
    if qtype in ("person", "place"):
        caps = sum(1 for w in span_words if w[:1].isupper() and not _NUM_RE.search(w))
        return pen + (1.0 if caps == len(span_words) else (0.0 if caps else -1.5))
    return pen


def _type_fit(sentence: str, qtype: str, q_stems: set[str]) -> float:
    """1.0 when ``sentence`` holds a token of the answer type ``qtype`` asks for (a number, a
    year or month, a capitalised name that is not one of the question's words), else 0.0."""
    if qtype == "other":
        return 1.0
    words = _WORD_RE.findall(sentence)
    low = [w.lower() for w in words]
    if qtype == "number":
        return float(bool(_NUM_RE.search(sentence)) or any(w in _NUMBER_WORDS for w in low))
    if qtype == "date":
        return float(any(_YEAR_RE.search(w) for w in words) or any(w in _MONTHS for w in low))
    # person / place: a name other than the question's own (the first word is capitalised anyway)
    return float(any(w[:1].isupper() and _stem(w.lower()) not in q_stems for w in words[1:]))


_NUMBER_WORDS = frozenset("one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty hundred thousand million billion half dozen".split())


class GroundedAnswerer:
    """Answers a question from retrieved hits with citations, or abstains.

    ``generator``: any :class:`rag.generation.Generator`; ``embedder``: a
    :class:`rag.embedding.Embedder` (re-embeds the question and the retrieved sentences).
    ``abstain_min_dense`` (cosine, [-1, 1]) and ``abstain_min_bm25`` (normalised lexical
    coverage, [0, 1]): abstain when both are below; ``abstain_floor_dense``: abstain below this
    cosine whatever the lexical coverage; ``support_threshold``: cosine above which a chunk
    sentence supports an answer sentence. Defaults are the calibrated constants of this module.
    ``mode``: "auto" (span scoring when the generator exposes ``token_logprobs``, extractive for
    the extractive generator, free generation otherwise), "spans", "generate" or "extractive".
    """

    def __init__(
        self,
        generator: Generator,
        embedder,
        config: GenerationConfig | None = None,
        abstain_min_dense: float = DEFAULT_ABSTAIN_MIN_DENSE,
        abstain_min_bm25: float = DEFAULT_ABSTAIN_MIN_LEXICAL,
        support_threshold: float = DEFAULT_SUPPORT_THRESHOLD,
        abstain_floor_dense: float = DEFAULT_ABSTAIN_FLOOR_DENSE,
        mode: str = "auto",
        context_sentences: int = 1,
        top_starts: int | None = SPAN_TOP_STARTS,
        length_bonus: float | dict | None = None,
        proximity_weight: float = SPAN_PROXIMITY_WEIGHT,
        pmi_weight: float = SPAN_PMI_WEIGHT,
        pmi_starts: int = SPAN_PMI_STARTS,
        merge_margin: float = SPAN_MERGE_MARGIN,
    ):
        self.generator = generator
        self.embedder = embedder
        self.config = config or GenerationConfig()
        self.abstain_min_dense = abstain_min_dense
        self.abstain_min_bm25 = abstain_min_bm25
        self.abstain_floor_dense = abstain_floor_dense
        self.support_threshold = support_threshold
        self.context_sentences = context_sentences
        self.top_starts = top_starts
        self.length_bonus = dict(SPAN_LENGTH_BONUS) if length_bonus is None else length_bonus
        self.proximity_weight = proximity_weight
        self.pmi_weight = pmi_weight
        self.pmi_starts = pmi_starts
        self.merge_margin = merge_margin
        self._cache: dict[str, np.ndarray] = {}
        if mode == "auto":
            if isinstance(generator, ExtractiveGenerator):
                mode = "extractive"
            elif hasattr(generator, "token_logprobs"):
                mode = "spans"
            else:
                mode = "generate"
        if mode not in ("spans", "generate", "extractive"):
            raise ValueError(f"mode must be auto, spans, generate or extractive, not {mode!r}")
        self.mode = mode

    @property
    def options(self) -> GenerationOptions:
        c = self.config
        return GenerationOptions(max_new_tokens=c.max_new_tokens, temperature=c.temperature, seed=c.seed)

    # -- evidence ------------------------------------------------------------------------
    def evidence(self, question: str, hits: Sequence[Hit]) -> Evidence:
        """Split hits into sentences, embed question + sentences + chunks, score support.

        ``best_dense``: max cosine of the question with any retrieved sentence (re-embedded with
        this answerer's embedder, so it is comparable across retrievers); ``best_lexical``:
        max over chunks of the IDF-weighted (IDF estimated over the retrieved chunks, +1
        smoothed as in Lucene's BM25) share of the question's content stems present.
        """
        t0 = time.perf_counter()
        sents: list[_Sentence] = []
        for n, h in enumerate(hits, 1):
            for s, e in split_sentences(h.chunk.text):
                sents.append(_Sentence(n, h, s, e, h.chunk.text[s:e]))
        if not sents:
            return Evidence([], -1.0, 0.0, time.perf_counter() - t0)
        vecs = self._embed([question] + [s.text for s in sents])
        q = vecs[0]
        sims = vecs[1:] @ q
        for i, (s, d) in enumerate(zip(sents, sims[: len(sents)])):
            s.dense = float(d)
            s.vector = vecs[1 + i]
        best_dense = float(sims.max())
        q_stems = _stems(question)
        chunk_stems = [_stems(h.chunk.text) for h in hits]
        N = len(hits)
        idf = {w: math.log(1 + (N - sum(w in cs for cs in chunk_stems) + 0.5) / (sum(w in cs for cs in chunk_stems) + 0.5)) for w in q_stems}
        # words absent from every retrieved chunk get the highest IDF of the set
        total = sum(idf.values()) or 1.0
        best_lexical = max((sum(idf[w] for w in q_stems if w in cs) / total for cs in chunk_stems), default=0.0)
        sent_stems = [_stems(s.text) for s in sents]
        n_s = len(sents)
        df = {w: sum(w in ss for ss in sent_stems) for w in q_stems}
        s_idf = {w: math.log(1 + (n_s - d + 0.5) / (d + 0.5)) for w, d in df.items()}
        s_total = sum(s_idf.values()) or 1.0
        qtype = question_type(question)
        for s, ss in zip(sents, sent_stems):
            s.overlap = sum(v for w, v in s_idf.items() if w in ss) / s_total
            s.type_fit = _type_fit(s.text, qtype, q_stems)
        sents.sort(key=lambda s: (-s.support, s.n, s.start))
        return Evidence(sents, best_dense, best_lexical, time.perf_counter() - t0)

    def should_abstain(self, ev: Evidence) -> bool:
        """True when retrieval evidence is too weak to answer (see module docstring)."""
        if not ev.sentences:
            return True
        if ev.best_dense < self.abstain_floor_dense:
            return True
        return ev.best_dense < self.abstain_min_dense and ev.best_lexical < self.abstain_min_bm25

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 embeddings; sentence vectors are memoised (LRU of
        ``EMBED_CACHE_SIZE`` texts) because the same chunks come back for related questions."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            new = np.asarray(self.embedder.embed_documents(missing), dtype=np.float32)
            for t, v in zip(missing, new):
                self._cache[t] = v
            while len(self._cache) > EMBED_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    # -- public API ----------------------------------------------------------------------
    def answer(self, question: str, hits: Sequence[Hit], history: Sequence[dict] | None = None) -> Answer:
        """The final :class:`rag.types.Answer` (collects :meth:`stream`)."""
        final = None
        for item in self.stream(question, hits, history):
            if isinstance(item, Answer):
                final = item
        assert final is not None
        return final

    def stream(self, question: str, hits: Sequence[Hit], history: Sequence[dict] | None = None) -> Iterator[str | Answer]:
        """Yield text pieces, then the final Answer; ``"".join(pieces) == Answer.text``.

        For free generation the raw model pieces are yielded as they come, except that markers
        pointing at no source and unmarked-sentence citations are fixed in the final Answer:
        the last piece then carries the difference so the joined text still equals Answer.text
        (see :meth:`_finish_pieces`).
        """
        t0 = time.perf_counter()
        hits = list(hits)
        timings: dict[str, float] = {}
        if not hits:
            yield ABSTAIN_TEXT
            yield Answer(question=question, text=ABSTAIN_TEXT, abstained=True, timings={"answer": time.perf_counter() - t0})
            return
        ev = self.evidence(question, hits)
        timings["evidence"] = ev.seconds
        if self.should_abstain(ev):
            log.info("abstaining: best dense %.3f, lexical %.3f", ev.best_dense, ev.best_lexical)
            yield ABSTAIN_TEXT
            yield Answer(question=question, text=ABSTAIN_TEXT, hits=tuple(hits), abstained=True,
                         timings={**timings, "answer": time.perf_counter() - t0})
            return
        if self.mode == "extractive":
            ans = self._extractive(question, hits, ev)
        elif self.mode == "spans":
            t1 = time.perf_counter()
            ans = self._spans(question, hits, ev)
            timings["spans"] = time.perf_counter() - t1
        else:
            yield from self._generate_stream(question, hits, ev, history, timings, t0)
            return
        yield from _pieces(ans.text)
        timings["answer"] = time.perf_counter() - t0
        yield _replace(ans, timings={**timings, **ans.timings})

    # -- strategies ----------------------------------------------------------------------
    def _extractive(self, question: str, hits: Sequence[Hit], ev: Evidence) -> Answer:
        best = ev.sentences[0]
        cit = make_citation(best.n, best.hit, (best.start, best.end))
        text = f"{best.text} [{best.n}]"
        sent = AnswerSentence(text=best.text, supported=True, citations=(best.n,), support_score=best.support)
        return Answer(question=question, text=text, citations=(cit,), hits=tuple(hits), sentences=(sent,))

    def candidate_spans(self, question: str, sentence: str) -> list[tuple[int, int, list[str]]]:
        """Candidate answer spans of ``sentence``: (start, end, words) with 1..MAX_SPAN_WORDS
        words, not starting or ending with a stop word, with at most half of their content words
        taken from the question, and not ending inside a parenthesis."""
        words = [(m.start(), m.end(), m.group(0)) for m in _WORD_RE.finditer(sentence)]
        q_stems = _stems(question)
        out = []
        for i in range(len(words)):
            if words[i][2].lower() in _SPAN_STOP:
                continue
            for j in range(i, min(len(words), i + MAX_SPAN_WORDS)):
                w = words[j][2]
                if w.lower() in _SPAN_STOP:
                    continue
                ws = [x[2] for x in words[i : j + 1]]
                cw = [x for x in ws if x.lower() not in _SPAN_STOP]
                inq = sum(1 for x in cw if _stem(x.lower()) in q_stems)
                if cw and inq * 2 > len(cw):
                    continue
                out.append((words[i][0], words[j][1], ws))
        return out

    def _span_messages(self, question: str, title: str, sentence: str) -> list[dict[str, str]]:
        from .prompting import FEW_SHOT, SYSTEM_PROMPT

        return [
            {"role": "system", "content": SYSTEM_PROMPT},
            *FEW_SHOT,
            {"role": "user", "content": f"Sources:\n[1] {title}\n{sentence}\n\nQuestion: {question.strip()}"},
        ]

    def _spans(self, question: str, hits: Sequence[Hit], ev: Evidence) -> Answer:
        """Short answer: the best-scoring span of the best supporting sentence(s)."""
        qtype = question_type(question)
        lb = self.length_bonus.get(qtype, 0.0) if isinstance(self.length_bonus, dict) else float(self.length_bonus)
        best_total, best = -1e9, None
        for sent in ev.sentences[: self.context_sentences]:
            cands = self.candidate_spans(question, sent.text)
            if not cands:
                continue
            title = sent.hit.chunk.title or sent.hit.chunk.source or ""
            msgs = self._span_messages(question, title, sent.text)
            # one sequence per start word: every span from that word is a prefix of it
            starts: dict[int, list[tuple[int, int, list[str]]]] = {}
            for c in cands:
                starts.setdefault(c[0], []).append(c)
            seq_texts = [sent.text[s : max(c[1] for c in cs)] for s, cs in starts.items()]
            words = [(m.start(), m.end(), m.group(0)) for m in _WORD_RE.finditer(sent.text)]
            q_stems = _stems(question)
            q_pos = [k for k, w in enumerate(words) if w[2].lower() not in _SPAN_STOP and _stem(w[2].lower()) in q_stems]
            w_at = {w[0]: k for k, w in enumerate(words)}
            w_end = {w[1]: k for k, w in enumerate(words)}

            def prox(a: int, b: int) -> float:
                d = min([a - p for p in q_pos if p < a] + [p - b for p in q_pos if p > b] + [SPAN_PROXIMITY_CAP])
                return self.proximity_weight * min(d, SPAN_PROXIMITY_CAP)

            bonus = [_type_prior(cs[0][2][:1], qtype) for cs in starts.values()]
            rows = self.generator.token_logprobs(  # type: ignore[attr-defined]
                msgs, seq_texts, end_text=SPAN_END_TEXT, top_first=self.top_starts, first_bonus=bonus
            )
            # stage 1: question-conditioned score of every span of the scored starts
            scored: dict[int, list[tuple[float, float, tuple[int, int, list[str]]]]] = {}
            for i, ((s, cs), row) in enumerate(zip(starts.items(), rows)):
                if row is None:
                    continue
                for c, lp in zip(cs, span_logprobs(row, s, cs)):
                    if lp is None:
                        continue  # span end falls inside a token
                    rest = _type_prior(c[2], qtype) + lb * (len(c[2]) - 1) - prox(w_at[c[0]], w_end[c[1]])
                    scored.setdefault(i, []).append((lp, rest, c))
            # stage 2 (PMI): the best starts' spans scored again without the question; what the
            # model would copy from this sentence anyway (its first words, numbers) loses its head start
            keep = sorted(scored, key=lambda i: -max(lp + r for lp, r, _ in scored[i]))
            if self.pmi_weight and keep:
                keep = keep[: self.pmi_starts]
                null_rows = self.generator.token_logprobs(  # type: ignore[attr-defined]
                    self._span_messages(NULL_QUESTION, title, sent.text), [seq_texts[i] for i in keep],
                    end_text=SPAN_END_TEXT,
                )
                s_of = list(starts)
                for i, null in zip(keep, null_rows):
                    # same text, same tokens as stage 1, so every span end is found again
                    null_lp = span_logprobs(null, s_of[i], [c for _, _, c in scored[i]])
                    scored[i] = [(lp - self.pmi_weight * nlp, rest, c) for (lp, rest, c), nlp in zip(scored[i], null_lp)]
            ranked = sorted(((lp + rest, c) for i in keep for lp, rest, c in scored[i]), key=lambda x: -x[0])
            if ranked and ranked[0][0] > best_total:
                best_total, best = ranked[0][0], (sent, merge_runner_up(sent.text, ranked, self.merge_margin))
        if best is None:
            return self._extractive(question, hits, ev)
        sent, (s, e) = best
        span = " ".join(sent.text[s:e].split())  # a line break of the source is not part of the answer
        cit = make_citation(sent.n, sent.hit, (sent.start, sent.end))
        text = f"{span} [{sent.n}]"
        a_sent = AnswerSentence(text=span, supported=True, citations=(sent.n,), support_score=sent.support)
        return Answer(question=question, text=text, citations=(cit,), hits=tuple(hits), sentences=(a_sent,),
                      timings={"span_logprob": best_total})

    # -- free generation -----------------------------------------------------------------
    def _generate_stream(self, question, hits, ev, history, timings, t0) -> Iterator[str | Answer]:
        """Stream the model's answer sentence by sentence, each checked before it is shown:
        markers pointing at no source are removed, an unmarked supported sentence gets its
        ``[n]``. Sentences are held back until the first supported one; if none is supported the
        extractive answer is shown instead. The joined pieces equal the final Answer.text."""
        budget = max(128, int(self.config.context_tokens) - int(self.config.max_new_tokens))
        prompt = build_prompt(question, hits, self.generator.count_tokens, budget, history=history)
        sources = prompt.source_map
        shown: list[str] = []
        held: list[str] = []
        sentences: list[AnswerSentence] = []
        cites: dict[int, Citation] = {}
        dropped: list[int] = []
        any_supported = False

        def process(seg: str) -> list[str]:
            nonlocal any_supported
            if not seg.strip():
                return []
            a = self.check(question, seg, sources, hits, ev)
            dropped.extend(a.dropped_markers)
            for c in a.citations:
                cites.setdefault(c.n, c)
            sentences.extend(a.sentences)
            out = a.text + (" " if seg[-1:].isspace() else "")
            if any(x.supported for x in a.sentences):
                any_supported = True
            if not any_supported:
                held.append(out)
                return []
            res = held + [out]
            held.clear()
            return res

        pending = ""
        t1 = time.perf_counter()
        for piece in self.generator.stream(prompt.messages, self.options):
            pending += piece
            spans = split_sentences(pending)
            if len(spans) >= 2 and not pending[spans[-1][0]:].startswith("["):
                cut = spans[-1][0]
                seg, pending = pending[:cut], pending[cut:]
                for out in process(seg):
                    if "ttft" not in timings:
                        timings["ttft"] = time.perf_counter() - t0
                    shown.append(out)
                    yield out
        for out in process(pending.rstrip()):
            if "ttft" not in timings:
                timings["ttft"] = time.perf_counter() - t0
            shown.append(out)
            yield out
        timings["generate"] = time.perf_counter() - t1
        if not any_supported:
            log.info("generated answer unsupported; falling back to the extractive answer")
            ans = self._extractive(question, hits, ev)
            ans = _replace(ans, dropped_markers=tuple(dropped))
            yield from _pieces(ans.text)
        else:
            text = "".join(shown)
            ans = Answer(question=question, text=text, citations=tuple(sorted(cites.values(), key=lambda c: c.n)),
                         hits=tuple(hits), sentences=tuple(sentences), dropped_markers=tuple(dropped))
        timings["answer"] = time.perf_counter() - t0
        yield _replace(ans, timings=timings)

    def check(self, question: str, text: str, sources: dict[int, Hit], hits: Sequence[Hit], ev: Evidence) -> Answer:
        """Resolve markers, mark sentences supported or not, cite unmarked supported sentences.

        A sentence is supported by a retrieved chunk when it occurs in it verbatim (normalised),
        when at least 60 % of its content words occur in it, or when its embedding cosine with
        one of the chunk's sentences is at least ``support_threshold``.
        """
        clean, cites, dropped = parse_citations(text, sources)
        cites_by_n = {c.n: c for c in cites}
        spans = split_sentences(clean)
        claims = [re.sub(r"\s*\[\d+(?:\s*,\s*\d+)*\]", "", clean[s:e]).strip() for s, e in spans]
        claim_vecs = self._embed([c or "." for c in claims]) if claims else None
        out_sents: list[AnswerSentence] = []
        inserts: list[tuple[int, str]] = []
        for k, ((s, e), claim) in enumerate(zip(spans, claims)):
            marked = [int(x) for m in re.findall(r"\[(\d+(?:\s*,\s*\d+)*)\]", clean[s:e]) for x in re.findall(r"\d+", m)]
            best_score, best_sent = -1.0, None
            cw = content_words(claim)
            nclaim = _norm(claim)
            for es in ev.sentences:
                if es.n not in sources:
                    continue
                ctext = es.hit.chunk.text
                if nclaim and nclaim in _norm(ctext):
                    score = 1.0
                else:
                    lex = len(cw & content_words(ctext)) / (len(cw) or 1)
                    cos = float(es.vector @ claim_vecs[k]) if es.vector is not None else 0.0
                    score = max(cos, lex if lex >= 0.6 else 0.0)
                if score > best_score:
                    best_score, best_sent = score, es
            supported = bool(claim) and best_sent is not None and (best_score >= self.support_threshold or best_score >= 0.6)
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


def _pieces(text: str) -> Iterator[str]:
    yield from re.findall(r"\S+\s*|\s+", text)


def _replace(ans: Answer, **kw) -> Answer:
    import dataclasses

    return dataclasses.replace(ans, **kw)


# --------------------------------------------------------------------------- query rewriting
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
    return frozenset(_stem(v) for v in _FRAME_VERBS)


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
        if lw in _QWORDS or lw in _SPAN_STOP or lw in have or lw in {t.lower() for t in terms}:
            continue
        if _stem(lw) in _frame_verb_stems():
            continue
        if len(w) < 2 and not w.isdigit():
            continue
        terms.append(w)
    if not terms:
        return q
    return f"{q} ({' '.join(terms)})"
