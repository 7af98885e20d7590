"""Public types round-trip through to_dict / from_dict (issue 12, defect 9): the same schema is
``--json`` and HTTP, so ``X.from_dict(x.to_dict()) == x`` for every public type, also after a
trip through JSON text."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rag.ingest import IngestReport
from rag.types import Answer, AnswerSentence, Chunk, Citation, Document, Hit, SearchResult, Section

text = st.text(max_size=40)
small = st.integers(min_value=0, max_value=10_000)
maybe_int = st.none() | st.integers(min_value=1, max_value=500)
finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
json_scalar = st.none() | st.booleans() | st.integers(-1000, 1000) | text | finite
metadata = st.dictionaries(st.text(min_size=1, max_size=8), json_scalar | st.lists(json_scalar, max_size=3), max_size=4)

sections = st.builds(Section, start=small, end=small, heading_path=st.lists(text, max_size=3).map(tuple), page=maybe_int)
documents = st.builds(Document, id=text, text=text, source=text, title=st.none() | text, metadata=metadata,
                      sections=st.lists(sections, max_size=3).map(tuple))
chunks = st.builds(Chunk, id=st.integers(-1, 2**40), doc_id=text, ordinal=small, start=small, end=small, text=text,
                   source=text, title=st.none() | text, page=maybe_int, heading_path=st.lists(text, max_size=3).map(tuple),
                   metadata=metadata)
maybe_f = st.none() | finite
hits = st.builds(Hit, chunk=chunks, score=finite, rank=st.integers(1, 100), dense_score=maybe_f, dense_rank=maybe_int,
                 sparse_score=maybe_f, sparse_rank=maybe_int, rerank_score=maybe_f)
citations = st.builds(Citation, n=st.integers(1, 20), chunk_id=small, source=text, page=maybe_int, quote=text,
                      title=st.none() | text, doc_id=text, start=small, end=small)
sentences = st.builds(AnswerSentence, text=text, supported=st.booleans(),
                      citations=st.lists(st.integers(1, 20), max_size=3).map(tuple), support_score=maybe_f)
timings = st.dictionaries(st.sampled_from(["dense_s", "sparse_s", "total_s", "first_token_s"]), finite, max_size=4)
scores = st.dictionaries(st.sampled_from(["p_yes", "span_logprob", "span_margin"]), finite, max_size=3)
answers = st.builds(Answer, question=text, text=text, citations=st.lists(citations, max_size=3).map(tuple),
                    hits=st.lists(hits, max_size=2).map(tuple), abstained=st.booleans(),
                    sentences=st.lists(sentences, max_size=3).map(tuple),
                    dropped_markers=st.lists(st.integers(1, 30), max_size=3).map(tuple), query=st.none() | text,
                    timings=timings, kind=st.sampled_from(["yes_no", "factoid", "explanatory", "list", "comparison"]),
                    short=text, generation=maybe_int, scores=scores)
results = st.builds(SearchResult, hits=st.lists(hits, max_size=3).map(tuple), timings=timings, generation=maybe_int,
                    query_vector=st.none() | st.lists(finite, min_size=2, max_size=8).map(lambda v: np.asarray(v, np.float32)),
                    query=text)
dup = st.fixed_dictionaries({"key": text, "kept_key": text, "kind": st.sampled_from(["exact", "near"]),
                             "similarity": finite, "level": st.sampled_from(["document", "chunk"])})
reports = st.builds(IngestReport, index_dir=text, files_seen=small, files_ingested=small, files_unchanged=small,
                    files_removed=st.lists(text, max_size=2), skipped=st.lists(st.fixed_dictionaries({"source": text, "reason": text}), max_size=2),
                    documents=small, chunks_added=small, duplicates=st.lists(dup, max_size=2), revived=st.lists(text, max_size=2),
                    truncated=small, redactions=st.dictionaries(st.sampled_from(["emails", "phones"]), small, max_size=2),
                    changed=st.booleans(), generation=small, seconds=finite)


def _roundtrip(cls, x):
    assert cls.from_dict(x.to_dict()) == x
    assert cls.from_dict(json.loads(json.dumps(x.to_dict()))) == x


@settings(max_examples=60, deadline=None)
@given(sections, documents, chunks, hits)
def test_document_types_round_trip(section, document, chunk, hit):
    _roundtrip(Section, section)
    _roundtrip(Document, document)
    _roundtrip(Chunk, chunk)
    _roundtrip(Hit, hit)


@settings(max_examples=60, deadline=None)
@given(citations, sentences, answers)
def test_answer_types_round_trip(citation, sentence, answer):
    _roundtrip(Citation, citation)
    _roundtrip(AnswerSentence, sentence)
    _roundtrip(Answer, answer)


@settings(max_examples=40, deadline=None)
@given(results, reports)
def test_result_and_report_round_trip(result, report):
    _roundtrip(SearchResult, result)
    _roundtrip(IngestReport, report)


def test_answer_dict_keeps_the_public_schema():
    a = Answer(question="q", text="It is blue [1].", kind="factoid", short="blue", generation=3)
    d = a.to_dict()
    assert d["answer"] == "It is blue [1]." and "text" not in d and d["generation"] == 3 and d["short"] == "blue"
    assert Answer.from_dict(d) == a
