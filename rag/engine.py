"""QueryEngine: search, ask and stream over one index, request-scoped and thread-safe.

Every request takes a lease on the committed index state it reads
(:meth:`rag.index.backend.Index.lease`), so a search and the answer built on it come from one
generation even while another process commits; nothing a request produces is stored on the
engine (timings travel in :class:`rag.types.SearchResult` and :class:`rag.types.Answer`).
Models load once, lazily or all at once in :meth:`QueryEngine.warm_up`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Iterator, Mapping, Sequence

from .config import RagConfig
from .errors import ConfigError
from .index.backend import Filter, Index
from .types import Answer, Hit, SearchResult

log = logging.getLogger("rag")

_PROCESS_SETTINGS_DONE = False
_PROCESS_SETTINGS_LOCK = threading.Lock()


def apply_process_settings() -> None:
    """Process-wide settings, applied once per process: transformers' progress bars and
    advisory warnings off (the CLI and server own output), FAISS's OpenMP pool sized to the
    CPUs this process may use. Idempotent."""
    global _PROCESS_SETTINGS_DONE
    with _PROCESS_SETTINGS_LOCK:
        if _PROCESS_SETTINGS_DONE:
            return
        from .embedding import quiet_transformers
        from .index.dense import _faiss

        quiet_transformers()
        _faiss()
        _PROCESS_SETTINGS_DONE = True


def _rewrite_query():
    """``rewrite_query(question, history) -> str`` from wherever it lives (rag.query, formerly
    rag.answering)."""
    try:
        from .query import rewrite_query
    except ImportError:  # pragma: no cover - older layout
        from .answering import rewrite_query  # type: ignore[no-redef]
    return rewrite_query


def _check_question(text: Any, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{what}: must be a non-empty string")
    return text


def make_filter(filters: Mapping[str, Any] | Filter | None, principals: Sequence[str] | None) -> Filter:
    """A :class:`Filter` from the public ``filters=`` / ``principals=`` arguments (a Filter
    passes through, with ``principals`` added when given)."""
    if isinstance(principals, str):
        raise ConfigError("principals must be a list of group names, not one string")
    if isinstance(filters, Filter):
        return filters if principals is None else replace(filters, principals=tuple(principals))
    return Filter.from_mapping(filters, principals)


class QueryEngine:
    """Search / ask / stream over ``index`` (any :class:`rag.index.backend.Index`).

    ``config``: the RagConfig (retrieval, generation and answer sections are read per request,
    so assigning a new config takes effect on the next request). ``embedder`` / ``generator``:
    ready instances (tests, servers sharing models) or None to build them from the config on
    first use. Safe to share between threads.
    """

    def __init__(self, index: Index, config: RagConfig, *, embedder=None, generator=None, allow_pickle: bool = False):
        self.index = index
        self._config = config
        self.allow_pickle = allow_pickle
        self._embedder = embedder
        self._generator = generator
        self._answerer = None
        self._retriever = None
        self._lock = threading.RLock()
        self._checked_generations: set[int] = set()

    # ---- settings and stages --------------------------------------------------------------
    @property
    def config(self) -> RagConfig:
        return self._config

    @config.setter
    def config(self, value: RagConfig) -> None:
        with self._lock:
            self._config = value
            self._retriever = None
            self._answerer = None

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from .embedding import make_embedder

                self._embedder = make_embedder(self._config.embedding, allow_pickle=self.allow_pickle)
            return self._embedder

    @property
    def generator(self):
        with self._lock:
            if self._generator is None:
                from .generation import make_generator

                self._generator = make_generator(self._config.generation)
            return self._generator

    @property
    def answerer(self):
        """The GroundedAnswerer (built once per config, with its ``[answer]`` settings)."""
        with self._lock:
            if self._answerer is None:
                from .answering import GroundedAnswerer

                self._answerer = GroundedAnswerer(self.generator, self.embedder, self._config.generation,
                                                  answer_config=self._config.answer)
            return self._answerer

    @property
    def retriever(self):
        with self._lock:
            if self._retriever is None:
                from .retrieval import CrossEncoderReranker, HybridRetriever

                r = self._config.retrieval
                rr = CrossEncoderReranker(r.reranker) if r.reranker else None
                self._retriever = HybridRetriever(self.embedder, r, reranker=rr)
            return self._retriever

    def warm_up(self) -> dict[str, float]:
        """Load every model a server needs now (embedder, ONNX query encoder, generator) and
        apply the process-wide settings once. Returns seconds per part."""
        out: dict[str, float] = {}
        t = time.perf_counter()
        apply_process_settings()
        out["settings_s"] = time.perf_counter() - t
        t = time.perf_counter()
        emb = self.embedder
        emb.embed_documents(["warm up"])
        batch = getattr(emb, "embed_queries", None)
        if batch is not None:  # loads the ONNX query encoder, which embed_query then prefers
            batch(["warm up"])
        emb.embed_query("warm up")
        out["embedder_s"] = time.perf_counter() - t
        t = time.perf_counter()
        gen = self.generator
        load = getattr(gen, "load", None)  # local generators load their weights now, not at the first question
        if callable(load):
            load()
        self.answerer
        out["generator_s"] = time.perf_counter() - t
        t = time.perf_counter()
        self._prime_generator()
        out["prime_s"] = time.perf_counter() - t
        if self.index.exists():
            t = time.perf_counter()
            with self.index.lease() as reader:
                self._check_embedder(reader)
            out["index_s"] = time.perf_counter() - t
        return out

    def _prime_generator(self) -> None:
        """Score one dummy text under each prompt family the answerer uses (span answers,
        yes/no verdicts), so the first question finds the model's weights in memory and the
        families' shared few-shot prefixes in the generator's prompt cache (about 1 s of the
        first answer otherwise). Generators that score no tokens are left alone."""
        gen = self.generator
        if not callable(getattr(gen, "token_logprobs", None)):
            return
        from .answering.spans import span_messages
        from .answering.verdict import yes_no_messages

        gen.token_logprobs(span_messages("What is this?", "warm-up", "This is a warm-up."), ["a warm-up"])
        gen.token_logprobs(yes_no_messages("Is this a warm-up?", "This is a warm-up."), ["Yes", "No"])

    def _check_embedder(self, reader) -> None:
        gen = int(reader.generation)
        if gen in self._checked_generations:
            return
        from .index.backend import check_embedder

        where = getattr(self.index, "dir", None)
        check_embedder(reader.embedder, getattr(self.embedder, "model_id", None),
                       f"{where}/manifest.json" if where is not None else repr(self.index))
        with self._lock:
            self._checked_generations.add(gen)

    # ---- requests ---------------------------------------------------------------------------
    def search(self, query: str, top_k: int | None = None, *, mode: str | None = None,
               filters: Mapping[str, Any] | Filter | None = None, principals: Sequence[str] | None = None,
               aggregate: str = "chunk", candidate_depth: int | None = None) -> SearchResult:
        """One search under one lease: hits, timings, generation and the query vector.
        Raises ConfigError on an empty query, a bad ``top_k`` / mode / filter."""
        _check_question(query, "query")
        from .tags import with_exclusions

        flt = with_exclusions(make_filter(filters, principals), self._config.retrieval.exclude_tags)
        t0 = time.perf_counter()
        with self.index.lease() as reader:
            self._check_embedder(reader)
            res = self.retriever.search(reader, query, top_k=top_k, mode=mode, filter=flt, aggregate=aggregate,
                                        candidate_depth=candidate_depth)
        res.timings["total_s"] = time.perf_counter() - t0
        return res

    def retrieve_for_answer(self, question: str, history=None, top_k: int | None = None,
                            filters=None, principals=None) -> tuple[str, SearchResult]:
        """The standalone query (a follow-up rewritten with the history) and its SearchResult."""
        t0 = time.perf_counter()
        query = _rewrite_query()(question, list(history or []))
        res = self.search(query, top_k=top_k, filters=filters, principals=principals)
        res.timings["retrieval_s"] = time.perf_counter() - t0
        return query, res

    def ask(self, question: str, top_k: int | None = None, *, history: Sequence[Mapping[str, str]] | None = None,
            filters=None, principals: Sequence[str] | None = None) -> Answer:
        """Answer ``question`` from the index only, citing chunks as [n]; see :meth:`rag.RAG.ask`."""
        _check_question(question, "question")
        t0 = time.perf_counter()
        query, res = self.retrieve_for_answer(question, history, top_k, filters, principals)
        ans = self.answerer.answer(query, list(res.hits), history=history, query_vector=res.query_vector)
        timings = {**res.timings, **ans.timings, "total_s": time.perf_counter() - t0}
        return replace(ans, question=question, query=query, timings=timings, generation=res.generation)

    def stream(self, question: str, top_k: int | None = None, *, history: Sequence[Mapping[str, str]] | None = None,
               filters=None, principals: Sequence[str] | None = None) -> Iterator[str | Answer]:
        """Yield answer text pieces, then the final :class:`Answer` (``"".join(pieces) == text``)."""
        events = self.stream_events(question, top_k, history=history, filters=filters, principals=principals)
        try:
            for ev in events:
                if not isinstance(ev, SearchResult):
                    yield ev
        finally:
            events.close()

    def stream_events(self, question: str, top_k: int | None = None, *,
                      history: Sequence[Mapping[str, str]] | None = None, filters=None,
                      principals: Sequence[str] | None = None) -> Iterator[SearchResult | str | Answer]:
        """:meth:`stream` with the retrieval announced first: yield the :class:`SearchResult`
        (``query`` = the standalone query searched; its hits are the ones ``[n]`` cites), then
        the text pieces, then the final Answer. Why: a server sends the sources before the
        first token. Closing the iterator closes the answerer's stream (generation stops)."""
        _check_question(question, "question")
        t0 = time.perf_counter()
        query, res = self.retrieve_for_answer(question, history, top_k, filters, principals)
        yield res if res.query == query else replace(res, query=query)
        first = None
        pieces = self.answerer.stream(query, list(res.hits), history=history, query_vector=res.query_vector)
        try:
            for piece in pieces:
                if isinstance(piece, Answer):
                    timings = {**res.timings, **piece.timings, "total_s": time.perf_counter() - t0}
                    if first is not None:
                        timings["first_token_s"] = first
                    yield replace(piece, question=question, query=query, timings=timings, generation=res.generation)
                else:
                    if first is None:
                        first = time.perf_counter() - t0
                    yield piece
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()

    def hits(self, query: str, top_k: int | None = None, **kw: Any) -> list[Hit]:
        """``search(...).hits`` as a list (the facade's ``RAG.search`` contract)."""
        return list(self.search(query, top_k, **kw).hits)

    def close(self) -> None:
        self.index.close()
