"""GroundedAnswerer: route a question, answer it in its form from the evidence, or abstain.

For one question and its retrieved hits (:meth:`GroundedAnswerer.stream`):

1. **Evidence** (:mod:`.evidence`): sentences of the hits ranked by support; abstain before any
   model call when the evidence is too weak.
2. **Route** (:mod:`.routing`): yes_no, factoid, explanatory, list or comparison.
3. **Answer**, with a generator that scores tokens (``token_logprobs``, the default one):

   * yes_no: "Yes." / "No." from :mod:`.verdict`, then the supporting sentence, cited;
   * factoid: the span answer (:mod:`.spans`) then the sentence it comes from, one citation
     (the sentence alone when the span is unsure, or when the span is most of it);
   * explanatory / list / comparison: 1-3 whole cited sentences (:mod:`.selection`), streamed
     at once; a span of the first one is scored afterwards for ``Answer.short``.

   Other generators (a Hugging Face model without scoring, an OpenAI-compatible server) get the
   route's prompt (:func:`rag.prompting.route_prompt`) and their free text is checked
   (:mod:`.grounding`); no supported sentence falls back to the sentence answer. The
   extractive generator answers with the sentences themselves.

Every route streams pieces whose join equals ``Answer.text``, cites each claim with the exact
source sentence, and abstains the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from typing import Iterator, Sequence

import numpy as np

from ..config import AnswerConfig, GenerationConfig
from ..generation import ExtractiveGenerator, GenerationOptions, Generator
from ..prompting import build_prompt, make_citation, route_prompt, split_sentences
from ..types import Answer, AnswerSentence, Hit
from .evidence import Evidence, EvidenceSentence, answer_type, collect_evidence, should_abstain
from .grounding import MAX_HELD_CHARS, StreamChecker, check_answer
from .numbering import Numbering
from .routing import route
from .selection import announces, is_whole_sentence, select_sentences
from .text import starts_with
from .spans import SpanResult, SpanSettings, candidate_spans, score_spans
from .verdict import BASELINES, VerdictWeights, decide, verdict_features

log = logging.getLogger("rag")

ABSTAIN_TEXT = "Not found in the indexed documents."
UNDECIDED_TEXT = "The indexed documents do not settle this."
EMBED_CACHE_SIZE = 20_000
SPAN_OF_SENTENCE = 0.6
"""A span holding at least this share of its sentence's words is answered by the sentence."""

_ALIASES = {  # earlier keyword names of the constructor
    "abstain_min_bm25": "abstain_min_lexical", "top_starts": "span_top_starts", "pmi_starts": "span_pmi_starts",
    "pmi_weight": "span_pmi_weight", "proximity_weight": "span_proximity_weight", "merge_margin": "span_merge_margin",
}


class GroundedAnswerer:
    """Answers a question from retrieved hits with citations, or abstains.

    ``generator``: any :class:`rag.generation.Generator`; ``embedder``: a
    :class:`rag.embedding.Embedder` (embeds the retrieved sentences; the question too unless
    its vector is passed). ``config``: the GenerationConfig (or a whole RagConfig, whose
    ``answer`` section is then used). ``answer_config``: the :class:`rag.config.AnswerConfig`;
    keyword ``overrides`` replace single fields of it (``abstain_min_dense=0.1``, and
    ``length_bonus=x`` sets both span length bonuses). ``mode``: "auto" (span scoring when the
    generator has ``token_logprobs``, extractive for the extractive generator, free generation
    otherwise), "spans", "generate" or "extractive". Raises ValueError for an unknown mode or
    override.
    """

    def __init__(self, generator: Generator, embedder, config=None, answer_config: AnswerConfig | None = None,
                 *, mode: str = "auto", **overrides):
        if config is not None and hasattr(config, "generation"):
            answer_config = answer_config or getattr(config, "answer", None)
            config = config.generation
        self.generator = generator
        self.embedder = embedder
        self.config: GenerationConfig = config or GenerationConfig()
        ac = answer_config or AnswerConfig()
        if "length_bonus" in overrides:
            lb = float(overrides.pop("length_bonus"))
            overrides.update(span_length_bonus_other=lb, span_length_bonus_entity=lb)
        names = {f.name for f in dataclasses.fields(AnswerConfig)}
        changes = {}
        for k, v in overrides.items():
            k = _ALIASES.get(k, k)
            if k not in names:
                raise ValueError(f"unknown answerer setting {k!r}")
            changes[k] = v
        self.answer_config = dataclasses.replace(ac, **changes)
        if self.answer_config.yes_no_evidence not in ("sentence", "two", "chunk"):
            raise ValueError(f"answer.yes_no_evidence must be sentence, two or chunk, not {self.answer_config.yes_no_evidence!r}")
        if self.answer_config.yes_no_baseline not in BASELINES:
            raise ValueError(f"answer.yes_no_baseline must be question or na, not {self.answer_config.yes_no_baseline!r}")
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

    # -- settings ------------------------------------------------------------------------
    @property
    def options(self) -> GenerationOptions:
        c = self.config
        return GenerationOptions(max_new_tokens=c.max_new_tokens, temperature=c.temperature, seed=c.seed)

    @property
    def span_settings(self) -> SpanSettings:
        a = self.answer_config
        return SpanSettings(a.span_top_starts, a.span_pmi_starts, a.span_pmi_weight, a.span_proximity_weight,
                            a.span_merge_margin, a.span_length_bonus_other, a.span_length_bonus_entity)

    @property
    def verdict_weights(self) -> VerdictWeights:
        a = self.answer_config
        return VerdictWeights(a.yes_no_bias, a.yes_no_model, a.yes_no_prior, a.yes_no_negation, a.yes_no_missing,
                              a.yes_no_undecided_margin, a.yes_no_overlap)

    def route(self, question: str) -> str:
        """The question's route (``factoid`` for all when ``answer.routing`` is off)."""
        return route(question) if self.answer_config.routing else "factoid"

    # -- evidence ------------------------------------------------------------------------
    def evidence(self, question: str, hits: Sequence[Hit], query_vector: np.ndarray | None = None) -> Evidence:
        """:func:`rag.answering.evidence.collect_evidence` with this answerer's embedder."""
        return collect_evidence(question, hits, self._embed, query_vector)

    def should_abstain(self, ev: Evidence) -> bool:
        """True when retrieval evidence is too weak to answer (:mod:`rag.answering.evidence`)."""
        a = self.answer_config
        return should_abstain(ev, a.abstain_min_dense, a.abstain_min_lexical, a.abstain_floor_dense)

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 embeddings; sentence vectors are memoised (``EMBED_CACHE_SIZE``
        texts, oldest out first) because the same chunks come back for related questions."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            # short texts on the query encoder when the embedder has one (rag.embedding): the
            # same vectors as the question's, whatever precision documents are embedded with
            embed = getattr(self.embedder, "embed_queries", None) or self.embedder.embed_documents
            new = np.asarray(embed(missing), dtype=np.float32)
            for t, v in zip(missing, new):
                self._cache[t] = v
            while len(self._cache) > EMBED_CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    # -- public API ----------------------------------------------------------------------
    def answer(self, query: str, hits: Sequence[Hit], history: Sequence[dict] | None = None, *,
               query_vector: np.ndarray | None = None) -> Answer:
        """The final :class:`rag.types.Answer` (collects :meth:`stream`)."""
        final = None
        for item in self.stream(query, hits, history, query_vector=query_vector):
            if isinstance(item, Answer):
                final = item
        assert final is not None
        return final

    def stream(self, query: str, hits: Sequence[Hit], history: Sequence[dict] | None = None, *,
               query_vector: np.ndarray | None = None) -> Iterator[str | Answer]:
        """Yield text pieces, then the final Answer; ``"".join(pieces) == Answer.text``.

        ``query``: the user's question; ``query_vector``: its (dim,) float32 L2-normalised
        embedding when retrieval already computed it (it is not embedded again).
        ``Answer.timings`` (seconds, keys ending in ``_s``): ``evidence_s`` and the route's model
        time (``verdict_s``, ``spans_s``, ``generate_s``); time to the first piece and the total
        are measured by the caller (:meth:`rag.RAG.stream` adds ``first_token_s`` and ``total_s``),
        so each stage is reported once. ``Answer.scores``: the route's model scores (``p_yes``
        for yes/no; ``span_logprob``, ``span_margin`` for a scored factoid span).
        """
        question = query
        hits = list(hits)
        timings: dict[str, float] = {}
        kind = self.route(question)
        if not hits:
            yield ABSTAIN_TEXT
            yield Answer(question=question, text=ABSTAIN_TEXT, abstained=True, kind=kind,
                         timings={})
            return
        ev = self.evidence(question, hits, query_vector)
        timings["evidence_s"] = ev.seconds
        if self.should_abstain(ev):
            log.info("abstaining: best dense %.3f, lexical %.3f", ev.best_dense, ev.best_lexical)
            yield ABSTAIN_TEXT
            yield Answer(question=question, text=ABSTAIN_TEXT, hits=tuple(hits), abstained=True, kind=kind,
                         timings={**timings})
            return
        if self.mode == "generate":
            yield from self._generate_stream(question, kind, hits, ev, history, timings)
            return
        if self.mode == "extractive":
            ans = self._sentences(question, kind, hits, ev, ev.sentences[:1] if kind == "factoid" else None)
            yield from self._emit(ans, timings)
            return
        if kind == "yes_no":
            t1 = time.perf_counter()
            ans = self._yes_no(question, hits, ev)
            timings["verdict_s"] = time.perf_counter() - t1
            yield from self._emit(ans, timings)
        elif kind == "factoid":
            t1 = time.perf_counter()
            ans = self._factoid(question, hits, ev)
            timings["spans_s"] = time.perf_counter() - t1
            yield from self._emit(ans, timings)
        else:
            a = self.answer_config
            chosen = select_sentences(ev, a.max_sentences, a.mmr_lambda, a.sentence_max_drop)
            ans = self._sentences(question, kind, hits, ev, chosen)
            yield from _pieces(ans.text)
            # the short answer is for callers that want one (and for EM/F1); it is scored after
            # the text is out, so it costs no time to the first piece
            t1 = time.perf_counter()
            top = max(chosen, key=lambda s: s.support)
            span = score_spans(self.generator, question, top, answer_type(question), self.span_settings)
            timings["spans_s"] = time.perf_counter() - t1
            yield _replace(ans, short=span.text if span else "", timings={**timings})

    def _emit(self, ans: Answer, timings: dict) -> Iterator[str | Answer]:
        yield from _pieces(ans.text)
        yield _replace(ans, timings={**timings})

    # -- routes --------------------------------------------------------------------------
    def _sentences(self, question: str, kind: str, hits: Sequence[Hit], ev: Evidence,
                   chosen: Sequence[EvidenceSentence] | None = None, lead: str = "", short: str = "") -> Answer:
        """An answer made of whole evidence sentences, each followed by its ``[n]``; ``lead``
        (e.g. "Yes.") opens it."""
        a = self.answer_config
        chosen = list(chosen) if chosen is not None else select_sentences(ev, a.max_sentences, a.mmr_lambda, a.sentence_max_drop)
        parts, sents, cites = ([lead] if lead else []), [], {}
        numbering = Numbering()
        for i, s in enumerate(chosen):
            body = " ".join(s.text.split())
            nxt = chosen[i + 1] if i + 1 < len(chosen) else None
            if nxt is not None and nxt.n == s.n and announces(s.text):  # one statement: cited once, after both
                parts.append(body)
            else:
                parts.append(f"{body} [{numbering.number(s.n)}]")
            sents.append(AnswerSentence(text=body, supported=True, citations=(s.n,), support_score=s.support))
            cites.setdefault(s.n, make_citation(s.n, s.hit, (s.start, s.end)))  # the first sentence quoted
        ans = Answer(question=question, text=" ".join(parts), citations=tuple(cites.values()), hits=tuple(hits),
                     sentences=tuple(sents), kind=kind, short=short)
        return numbering.answer(ans)

    def _yes_no(self, question: str, hits: Sequence[Hit], ev: Evidence) -> Answer:
        # the evidence is the best sentence of the top-ranked chunk: a yes/no question is about
        # one passage, and retrieval's first hit is that passage more often than the chunk of
        # the best-supported sentence (BoolQ dev, 150 questions: 0.86 vs 0.69)
        best = next((s for s in ev.sentences if s.n == 1), ev.sentences[0])
        a = self.answer_config
        chunk = best.hit.chunk
        if a.yes_no_evidence == "chunk":
            source = chunk.text
        elif a.yes_no_evidence == "two":  # the best two sentences of the best chunk, in order
            same = sorted([s for s in ev.sentences if s.n == best.n][:2], key=lambda s: s.start)
            source = " ".join(s.text for s in same)
        else:
            source = best.text
        lex = ev.chunk_lexical[best.n - 1] if ev.chunk_lexical else ev.best_lexical
        w = self.verdict_weights
        f = verdict_features(self.generator, question, source, [best.text], 1.0 - lex, use_prior=w.prior != 0.0,
                             overlap=best.overlap, few_shot=a.yes_no_few_shot, baseline=a.yes_no_baseline)
        label, p_yes = decide(f, w)
        lead = {"yes": "Yes.", "no": "No."}.get(label or "", UNDECIDED_TEXT)
        ans = self._sentences(question, "yes_no", hits, ev, [best], lead=lead, short=(label or "").capitalize())
        return _replace(ans, scores={"p_yes": p_yes})

    def _factoid(self, question: str, hits: Sequence[Hit], ev: Evidence) -> Answer:
        best = ev.sentences[0]
        span = score_spans(self.generator, question, best, answer_type(question), self.span_settings)
        if span is None:
            return self._sentences(question, "factoid", hits, ev, [best])
        sent_words = len(best.text.split())
        if span.margin < self.answer_config.span_sure_margin or len(span.text.split()) >= SPAN_OF_SENTENCE * sent_words:
            ans = self._sentences(question, "factoid", hits, ev, [best], short=span.text)
        else:
            ans = self._span_answer(question, hits, span, with_sentence=is_whole_sentence(best.text))
        return _replace(ans, scores={"span_logprob": span.score, "span_margin": span.margin})

    def _span_answer(self, question: str, hits: Sequence[Hit], span: SpanResult, with_sentence: bool = True) -> Answer:
        """"<span> — <sentence> [1]": the short answer, then the sentence it was copied from
        (the span alone when that "sentence" is a heading, a table row or a cut chunk edge,
        which would not help the reader; the citation still quotes it). A sentence that opens
        with the span already says it first: it is shown alone (:func:`.text.starts_with`)."""
        s = span.sentence
        sentence = " ".join(s.text.split())
        if not with_sentence:
            body = span.text
        elif starts_with(sentence, span.text):
            body = sentence
        else:
            body = f"{span.text} — {sentence}"
        cit = make_citation(s.n, s.hit, (s.start, s.end))
        sents = (AnswerSentence(text=body, supported=True, citations=(s.n,), support_score=s.support),)
        numbering = Numbering()
        ans = Answer(question=question, text=f"{body} [{numbering.number(s.n)}]", citations=(cit,), hits=tuple(hits),
                     sentences=sents, kind="factoid", short=span.text)
        return numbering.answer(ans)

    def candidate_spans(self, question: str, sentence: str) -> list[tuple[int, int, list[str]]]:
        """:func:`rag.answering.spans.candidate_spans`."""
        return candidate_spans(question, sentence)

    # -- free generation -----------------------------------------------------------------
    def _generate_stream(self, question, kind, hits, ev, history, timings) -> Iterator[str | Answer]:
        """Stream the model's answer a checked sentence, or a long sentence's clause, at a time
        (:class:`.grounding.StreamChecker`): markers pointing at no source are removed, an
        unmarked supported sentence gets its ``[n]``, numbers are shown in order of first
        citation. Text is held back until the first supported claim; if none comes (by the end,
        or within ``MAX_HELD_CHARS``, when the generator is stopped) the sentence answer is
        shown instead. The joined pieces equal the final Answer.text. Closing this iterator
        closes the generator's stream."""
        budget = max(128, int(self.config.context_tokens) - int(self.config.max_new_tokens))
        system, few_shot = route_prompt(kind)
        prompt = build_prompt(question, hits, self.generator.count_tokens, budget, history=history,
                              few_shot=few_shot, system=system)
        numbering = Numbering()
        checker = StreamChecker(question, prompt.source_map, hits, ev, self._embed,
                                self.answer_config.support_threshold, numbering)
        t1 = time.perf_counter()
        stream = self.generator.stream(prompt.messages, self.options)
        try:
            for piece in stream:
                yield from checker.feed(piece)
                if checker.gave_up:
                    log.info("no supported claim in the first %d generated characters; stopping", MAX_HELD_CHARS)
                    break
            else:
                yield from checker.finish()
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        timings["generate_s"] = time.perf_counter() - t1
        if not checker.any_supported:
            log.info("generated answer unsupported; falling back to the sentence answer")
            ans = self._sentences(question, kind, hits, ev, ev.sentences[:1] if kind in ("factoid", "yes_no") else None)
            ans = _replace(ans, dropped_markers=tuple(checker.dropped))
            yield from _pieces(ans.text)
        else:
            text = checker.text
            m = re.match(r"\s*(yes|no)\b", text, re.I)
            short = m.group(1).capitalize() if (kind == "yes_no" and m) else ""
            ans = Answer(question=question, text=text, citations=tuple(checker.citations.values()),
                         hits=tuple(hits), sentences=tuple(checker.sentences), dropped_markers=tuple(checker.dropped),
                         kind=kind, short=short)
            ans = numbering.answer(ans, prompt.source_map)
        yield _replace(ans, timings=timings)

    def check(self, question: str, text: str, sources: dict[int, Hit], hits: Sequence[Hit], ev: Evidence) -> Answer:
        """:func:`rag.answering.grounding.check_answer` with this answerer's embedder."""
        return check_answer(question, text, sources, hits, ev, self._embed, self.answer_config.support_threshold)


def _pieces(text: str) -> Iterator[str]:
    yield from re.findall(r"\S+\s*|\s+", text)


def _replace(ans: Answer, **kw) -> Answer:
    return dataclasses.replace(ans, **kw)
