"""Prompt building within a token budget, sentence splitting and ``[n]`` citation parsing.

Sources are numbered from 1 in relevance order and shown as ``[n] title`` followed by the chunk
text. The budget is counted with the generator's own tokenizer. A source that does not fit whole
is cut at a sentence boundary and ends with an explicit ``[...]``; its number is listed in
``Prompt.truncated``. Sources that do not fit at all are left out (and logged), never cut
silently.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from .types import Citation, Hit

log = logging.getLogger("rag")

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources. Reply with a short answer "
    "(a few words) copied from the sources, followed by the number of the source in brackets, "
    "like [1]. If the sources do not contain the answer, reply: Not found in the indexed documents."
)

FEW_SHOT = [
    {"role": "user", "content": "Sources:\n[1] Eiffel Tower\nThe Eiffel Tower was completed in 1889 and is 330 metres tall.\n\n"
                                "Question: When was the Eiffel Tower completed?"},
    {"role": "assistant", "content": "1889 [1]"},
    {"role": "user", "content": "Sources:\n[1] Honey bee\nWorker bees store the nectar they collect as honey in hexagonal wax "
                                "cells called honeycomb.\n\nQuestion: What are the wax cells that bees store honey in called?"},
    {"role": "assistant", "content": "honeycomb [1]"},
    {"role": "user", "content": "Sources:\n[1] Apollo 11\nOn 20 July 1969 Neil Armstrong and Buzz Aldrin landed the lunar "
                                "module Eagle in the Sea of Tranquility.\n\nQuestion: Who landed the lunar module with Neil Armstrong?"},
    {"role": "assistant", "content": "Buzz Aldrin [1]"},
    {"role": "user", "content": "Sources:\n[1] Amazon rainforest\nThe rainforest covers seven million square kilometres, and "
                                "deforestation is driven mainly by cattle ranching and soy farming.\n\n"
                                "Question: What mainly drives deforestation of the rainforest?"},
    {"role": "assistant", "content": "cattle ranching and soy farming [1]"},
]
"""Four worked examples (Brown et al. 2020, few-shot prompting) of the short-answer + [n] form:
a date, a name for a thing, a person, a longer phrase. Written for this project (not from any
evaluation set). Against the one-example prompt they raised span-scoring F1 on the XQuAD dev
split from .347 to .380 at the same settings (150 questions). The span-scoring prompt repeats
them for every question; their KV cache is reused (TransformersGenerator._prefill)."""

ROUTE_PROMPTS = {
    "factoid": SYSTEM_PROMPT,
    "yes_no": (
        "You answer yes/no questions using only the numbered sources. Start your reply with Yes or No, then give "
        "the sentence from the sources that settles it, followed by its source number in brackets, like [1]. If "
        "the sources do not settle it, reply: The indexed documents do not settle this."
    ),
    "explanatory": (
        "You answer questions using only the numbered sources. Reply with one to three sentences taken from the "
        "sources, each followed by the number of its source in brackets, like [1]. If the sources do not contain "
        "the answer, reply: Not found in the indexed documents."
    ),
}
ROUTE_PROMPTS["list"] = ROUTE_PROMPTS["explanatory"]
ROUTE_PROMPTS["comparison"] = ROUTE_PROMPTS["explanatory"]
"""System prompt per question route (:func:`rag.answering.routing.route`) for generators that
write free text; only the factoid prompt gets the :data:`FEW_SHOT` short-answer examples."""


def route_prompt(kind: str) -> tuple[str, bool]:
    """(system prompt, use FEW_SHOT) for the question route ``kind`` (unknown: factoid)."""
    return ROUTE_PROMPTS.get(kind, SYSTEM_PROMPT), kind not in ROUTE_PROMPTS or kind == "factoid"


TRUNCATION_MARK = "[...]"

# --------------------------------------------------------------------------- sentences
_ABBREV = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "fig", "no", "vol",
    "inc", "ltd", "co", "corp", "u.s", "u.k", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "approx", "cf", "al", "ca", "mt",
}
_BOUNDARY = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s+|$)|\n\s*\n")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of ``text`` as (start, end) character offsets, whitespace trimmed.

    A rule-based splitter (after Punkt's heuristics, Kiss & Strunk 2006, without training): a
    boundary is ``.``, ``!`` or ``?`` (plus closing quotes/brackets) followed by whitespace, or a
    blank line; not after a known abbreviation, a single capital initial or a number followed
    by a lower-case word. Empty text gives ``[]``; ``text[s:e]`` is never empty.
    """
    spans: list[tuple[int, int]] = []
    start = 0
    n = len(text)
    for m in _BOUNDARY.finditer(text):
        end = m.end()
        tok = m.group(0)
        if tok[0] == ".":
            word = re.search(r"(\S+)$", text[start : m.start()])
            w = word.group(1).lower().lstrip("(\"'") if word else ""
            nxt = re.match(r"\s+(\S)", text[end:])
            if w in _ABBREV or (len(w) == 1 and w.isalpha()) or re.fullmatch(r"(?:[a-z]\.)+[a-z]", w):
                continue
            if nxt and nxt.group(1).islower():
                continue
        _add_span(text, start, end, spans)
        start = end
    _add_span(text, start, n, spans)
    return spans


def _add_span(text: str, s: int, e: int, spans: list[tuple[int, int]]) -> None:
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if e > s:
        spans.append((s, e))


# --------------------------------------------------------------------------- prompt
@dataclass
class Prompt:
    """A built prompt. ``messages``: chat messages for :class:`rag.generation.Generator`;
    ``sources``: ``(n, hit)`` pairs, n from 1, most relevant first (only the sources shown);
    ``truncated``: numbers of sources cut to fit (marked ``[...]`` in the prompt);
    ``n_tokens``: tokens of all message contents by the generator's tokenizer."""

    messages: list[dict[str, str]]
    sources: list[tuple[int, Hit]]
    truncated: list[int] = field(default_factory=list)
    n_tokens: int = 0

    @property
    def source_map(self) -> dict[int, Hit]:
        """``{n: hit}`` for :func:`parse_citations`."""
        return dict(self.sources)


def _source_block(n: int, hit: Hit, text: str) -> str:
    title = hit.chunk.title or hit.chunk.source or f"chunk {hit.chunk.id}"
    page = f", page {hit.chunk.page}" if hit.chunk.page else ""
    return f"[{n}] {title}{page}\n{text}"


def build_prompt(
    question: str,
    hits: Sequence[Hit],
    count_tokens: Callable[[str], int],
    budget_tokens: int,
    history: Sequence[dict[str, str]] | None = None,
    few_shot: bool = True,
    system: str = SYSTEM_PROMPT,
) -> Prompt:
    """Build chat messages: system instructions, optional one-shot example, the last turns of
    ``history`` (as many as fit, newest kept), then one user message with the numbered sources
    (``[n] title``; most relevant first) and the question.

    ``budget_tokens`` bounds the sum of ``count_tokens`` over all message contents (chat-template
    overhead is not counted; keep a margin). When a source does not fit whole, it is cut after
    its last whole sentence that fits and ends with ``[...]`` (number in ``truncated``); later
    sources are then left out. Always returns at least the question.
    """
    fixed = [{"role": "system", "content": system}]
    if few_shot:
        fixed += [dict(m) for m in FEW_SHOT]
    q_part = f"Question: {question.strip()}"
    used = sum(count_tokens(m["content"]) for m in fixed) + count_tokens("Sources:\n\n" + q_part)
    hist_msgs: list[dict[str, str]] = []
    hist_used = 0
    for m in reversed(list(history or [])[-6:]):
        if m.get("role") not in ("user", "assistant") or not m.get("content"):
            continue
        c = count_tokens(m["content"])
        if hist_used + c > budget_tokens // 4:  # history may use at most a quarter of the budget
            break
        hist_msgs.insert(0, {"role": m["role"], "content": m["content"]})
        hist_used += c
    used += hist_used
    blocks: list[str] = []
    sources: list[tuple[int, Hit]] = []
    truncated: list[int] = []
    for hit in hits:
        n = len(sources) + 1
        block = _source_block(n, hit, hit.chunk.text.strip())
        c = count_tokens(block + "\n\n")
        if used + c <= budget_tokens:
            blocks.append(block)
            sources.append((n, hit))
            used += c
            continue
        # cut at the last sentence boundary that fits
        text = hit.chunk.text
        best = None
        for s, e in split_sentences(text):
            cand = _source_block(n, hit, text[: e].strip() + " " + TRUNCATION_MARK)
            cc = count_tokens(cand + "\n\n")
            if used + cc <= budget_tokens:
                best = (cand, cc)
            else:
                break
        if best is not None:
            blocks.append(best[0])
            sources.append((n, hit))
            truncated.append(n)
            used += best[1]
        left_out = len(hits) - len(sources)
        if left_out:
            log.info("prompt budget %d tokens: %d source(s) left out", budget_tokens, left_out)
        break
    user = ("Sources:\n" + "\n\n".join(blocks) + "\n\n" if blocks else "") + q_part
    messages = fixed + hist_msgs + [{"role": "user", "content": user}]
    n_tokens = sum(count_tokens(m["content"]) for m in messages)
    return Prompt(messages=messages, sources=sources, truncated=truncated, n_tokens=n_tokens)


# --------------------------------------------------------------------------- citations
_MARKER = re.compile(r"\s?\[(\d+(?:\s*,\s*\d+)*)\]")
_WORD = re.compile(r"\w+", re.U)
STOP_WORDS = frozenset(
    "a an the of in on at to for by with from and or but is are was were be been being it its this that these those "
    "as which who whom what when where why how did do does has have had not no than then also into over under "
    "after before during he she they we i you his her their our your him them us such".split()
)
"""English function words: left out of content words, never the edge of a span answer, never
carried into a rewritten query. The one stop list of prompting and answering."""


def content_words(text: str) -> set[str]:
    """Lower-cased word tokens of ``text`` minus a small English stop list."""
    return {w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS}


def best_quote(claim: str, chunk_text: str) -> tuple[int, int]:
    """(start, end) offsets into ``chunk_text`` of the sentence sharing the most content words
    with ``claim``, words containing digits counting double (ties: the earlier sentence; no
    overlap: the first sentence)."""
    spans = split_sentences(chunk_text) or [(0, len(chunk_text))]
    cw = content_words(claim)
    best, best_s = spans[0], -1.0
    for s, e in spans:
        sw = content_words(chunk_text[s:e])
        # shared numbers count double: they pin a claim to one sentence
        score = sum(2.0 if any(ch.isdigit() for ch in w) else 1.0 for w in cw & sw)
        if score > best_s:
            best, best_s = (s, e), score
    return best


def make_citation(n: int, hit: Hit, span: tuple[int, int]) -> Citation:
    """A Citation of ``hit.chunk`` quoting ``chunk.text[s:e]`` with document offsets."""
    ch = hit.chunk
    s, e = span
    return Citation(
        n=n, chunk_id=ch.id, source=ch.source, page=ch.page, quote=ch.text[s:e], title=ch.title,
        doc_id=ch.doc_id, start=ch.start + s, end=ch.start + e,
    )


def parse_citations(text: str, sources: Mapping[int, Hit]) -> tuple[str, list[Citation], list[int]]:
    """Resolve ``[n]``, ``[n, m]`` and ``[n][m]`` markers against THIS prompt's ``{n: hit}``.

    Returns ``(clean_text, citations, dropped)``: markers (or numbers inside a marker) that point
    at no source are removed from the text and listed in ``dropped`` (in order of appearance);
    ``citations`` has one Citation per distinct valid number, in order of first appearance,
    resolved by the hit's chunk id, quoting the chunk sentence that best matches the answer
    sentence carrying the marker (:func:`best_quote`).
    """
    dropped: list[int] = []
    cites: dict[int, Citation] = {}
    sent_spans = split_sentences(text)

    def claim_for(pos: int) -> str:
        for s, e in sent_spans:
            if s <= pos < e + 1:
                return _MARKER.sub("", text[s:e])
        return _MARKER.sub("", text)

    def repl(m: re.Match) -> str:
        nums = [int(x) for x in re.findall(r"\d+", m.group(1))]
        keep = []
        for n in nums:
            if n in sources:
                keep.append(n)
                if n not in cites:
                    hit = sources[n]
                    cites[n] = make_citation(n, hit, best_quote(claim_for(m.start()), hit.chunk.text))
            else:
                dropped.append(n)
        if not keep:
            return ""
        lead = m.group(0)[: len(m.group(0)) - len(m.group(0).lstrip())]
        return f"{lead}[{', '.join(str(k) for k in keep)}]"

    clean = _MARKER.sub(repl, text)
    clean = re.sub(r"[ \t]+([.,;:!?])", r"\1", clean) if dropped else clean
    return clean.strip(), list(cites.values()), dropped
