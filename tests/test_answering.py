"""GroundedAnswerer: markers, citations, abstention, streaming; rewrite_query."""

import numpy as np
import pytest

from rag.answering import ABSTAIN_TEXT, GroundedAnswerer, question_type, rewrite_query
from rag.config import GenerationConfig
from rag.testing import HashEmbedder
from rag.generation import EchoGenerator, ExtractiveGenerator
from rag.types import Answer, Chunk, Hit

TEXTS = [
    "The Eiffel Tower is 330 metres tall. It was completed in 1889 in Paris.",
    "The Colosseum is an amphitheatre in Rome. It could hold 50,000 spectators.",
    "Big Ben is the nickname of the bell in London. The tower was finished in 1859.",
    "The Sagrada Familia is a basilica in Barcelona designed by Antoni Gaudi.",
]


def make_hits(order=(0, 1, 2, 3)):
    out = []
    for r, i in enumerate(order, 1):
        t = TEXTS[i]
        ch = Chunk(id=100 + i, doc_id=f"doc{i}", ordinal=0, start=10, end=10 + len(t), text=t, source=f"doc{i}.md", title=f"Title {i}")
        out.append(Hit(chunk=ch, score=1.0 / r, rank=r, dense_score=0.5))
    return out


def answerer(gen, **kw):
    kw.setdefault("abstain_min_dense", 0.1)
    kw.setdefault("abstain_floor_dense", 0.05)
    kw.setdefault("abstain_min_bm25", 0.3)
    return GroundedAnswerer(gen, HashEmbedder(256), GenerationConfig(backend="echo"), **kw)


def test_marker_pointing_at_no_source_is_dropped_and_reported():
    a = answerer(EchoGenerator("The Eiffel Tower is 330 metres tall [5].")).answer("How tall is the Eiffel Tower?", make_hits())
    assert not a.abstained
    assert a.dropped_markers == (5,)
    assert "[5]" not in a.text
    # the supported sentence got a real citation instead
    assert a.text == "The Eiffel Tower is 330 metres tall [1]."
    assert [c.chunk_id for c in a.citations] == [100]
    assert a.citations[0].quote == "The Eiffel Tower is 330 metres tall."
    assert (a.citations[0].start, a.citations[0].end) == (10, 10 + len("The Eiffel Tower is 330 metres tall."))


def test_shuffled_markers_resolve_by_chunk_id():
    hits = make_hits(order=(2, 1, 0, 3))  # [1]=Big Ben, [2]=Colosseum, [3]=Eiffel
    gen = EchoGenerator("The Eiffel Tower was completed in 1889 [3]. Big Ben's tower was finished in 1859 [1].")
    a = answerer(gen).answer("When were the Eiffel Tower and Big Ben finished?", hits)
    # shown numbers follow first citation: the model's [3] (Eiffel) is [1], its [1] (Big Ben) [2]
    assert a.text == "The Eiffel Tower was completed in 1889 [1]. Big Ben's tower was finished in 1859 [2]."
    by_n = {c.n: c for c in a.citations}
    assert by_n[1].chunk_id == 100 and by_n[2].chunk_id == 102
    assert [h.chunk.id for h in a.hits[:2]] == [100, 102] and a.hits[0].rank == 3
    assert by_n[1].quote == "It was completed in 1889 in Paris."
    assert a.dropped_markers == ()
    assert all(s.supported for s in a.sentences)


def test_unmarked_answer_gets_citations_on_supported_sentences_only():
    gen = EchoGenerator("The Colosseum could hold 50,000 spectators. Bananas are purple vegetables from Mars.")
    a = answerer(gen).answer("How many spectators could the Colosseum hold?", make_hits())
    # the Colosseum is the second hit; as the only source cited it is shown as [1]
    assert a.text == "The Colosseum could hold 50,000 spectators [1]. Bananas are purple vegetables from Mars."
    assert [s.supported for s in a.sentences] == [True, False]
    assert a.sentences[0].citations == (1,) and a.sentences[1].citations == ()
    assert a.citations[0].n == 1 and a.hits[0].chunk.id == 101
    assert [c.chunk_id for c in a.citations] == [101]


def test_unsupported_generation_falls_back_to_extractive():
    gen = EchoGenerator("Bananas are purple vegetables from Mars.")
    a = answerer(gen).answer("How tall is the Eiffel Tower?", make_hits())
    assert a.text == "The Eiffel Tower is 330 metres tall. [1]"
    assert a.citations[0].chunk_id == 100


@pytest.mark.parametrize("script", [None, "The Eiffel Tower is 330 metres tall [5]. Nonsense here [2].", "Plain answer about the Eiffel Tower being 330 metres tall."])
def test_stream_joined_equals_answer_text(script):
    q = "How tall is the Eiffel Tower?"
    g1 = answerer(EchoGenerator(script))
    items = list(g1.stream(q, make_hits()))
    assert isinstance(items[-1], Answer) and all(isinstance(x, str) for x in items[:-1])
    assert "".join(items[:-1]) == items[-1].text
    assert items[-1].text == answerer(EchoGenerator(script)).answer(q, make_hits()).text


def test_extractive_generator_answers_with_best_sentence():
    a = answerer(ExtractiveGenerator()).answer("Who designed the Sagrada Familia basilica?", make_hits())
    # the fourth hit, cited alone, is shown as [1] and listed first
    assert a.text == "The Sagrada Familia is a basilica in Barcelona designed by Antoni Gaudi. [1]"
    assert a.citations[0].chunk_id == 103 and a.citations[0].n == 1 and a.sentences[0].supported
    assert a.sentences[0].citations == (1,)
    assert [h.chunk.id for h in a.hits] == [103, 100, 101, 102] and [h.rank for h in a.hits] == [4, 1, 2, 3]


class _TopicEmbedder:
    """Fake embedder: medical texts -> [0, 1], everything else -> [1, 0] (cosine 0 across topics)."""

    dim = 2

    def embed_documents(self, texts):
        med = ("vitamin", "fracture")
        return np.array([[0.0, 1.0] if any(m in t.lower() for m in med) else [1.0, 0.0] for t in texts], dtype=np.float32)

    def embed_query(self, text):
        return self.embed_documents([text])[0]


def test_abstains_on_unrelated_question_without_calling_the_model():
    gen = EchoGenerator("should not be called")
    ga = GroundedAnswerer(gen, _TopicEmbedder(), GenerationConfig(backend="echo"))
    a = ga.answer("Does vitamin D supplementation reduce fracture risk?", make_hits())
    assert a.abstained and a.text == ABSTAIN_TEXT and a.citations == ()
    assert gen.calls == []
    b = ga.answer("How tall is the Eiffel Tower?", make_hits())
    assert not b.abstained and gen.calls


class _FlatEmbedder:
    """Fake embedder: every text gets the same vector, so sentence ranking is lexical only."""

    dim = 2

    def embed_documents(self, texts):
        return np.tile(np.array([[0.6, 0.8]], dtype=np.float32), (len(texts), 1))

    def embed_query(self, text):
        return self.embed_documents([text])[0]


def _hits_of(texts):
    out = []
    for r, t in enumerate(texts, 1):
        ch = Chunk(id=200 + r, doc_id=f"d{r}", ordinal=0, start=0, end=len(t), text=t, source=f"d{r}.md", title=f"T{r}")
        out.append(Hit(chunk=ch, score=1.0 / r, rank=r, dense_score=0.5))
    return out


def test_best_sentence_weighs_rare_question_words_above_frequent_ones():
    # each sentence holds 2 of the 4 question stems; only the last holds the rare "designed"
    hits = _hits_of([
        "The tower stands in the city centre near the tower gardens.",
        "The city has another tower by the river.",
        "The tower was designed by Gustave Eiffel.",
    ])
    ga = GroundedAnswerer(ExtractiveGenerator(), _FlatEmbedder(), GenerationConfig(backend="extractive"))
    ev = ga.evidence("Which engineer designed the city tower?", hits)
    assert ev.sentences[0].text == "The tower was designed by Gustave Eiffel."
    # overlap is the IDF-weighted share: "designed" (in 1 of 3 sentences) outweighs "city" (2 of 3)
    by_text = {s.text: s.overlap for s in ev.sentences}
    assert by_text["The tower was designed by Gustave Eiffel."] > by_text["The city has another tower by the river."] > 0


def test_best_sentence_prefers_the_asked_answer_type():
    # same lexical overlap and cosine; in either order the sentence with a year answers "when"
    # and the one with a name answers "who"
    ga = GroundedAnswerer(ExtractiveGenerator(), _FlatEmbedder(), GenerationConfig(backend="extractive"))
    year, name = "The bridge opened in 1932.", "The bridge was opened by Mayor Smith."
    for texts in ([year, name], [name, year]):
        hits = _hits_of(texts)
        for question, want in (("When was the bridge opened?", year), ("Who opened the bridge?", name)):
            a = ga.answer(question, hits)
            assert a.text == f"{want} [1]" and a.citations[0].chunk_id == hits[texts.index(want)].chunk.id


def test_abstains_without_hits():
    a = answerer(EchoGenerator()).answer("anything", [])
    assert a.abstained and a.text == ABSTAIN_TEXT


def test_question_type():
    assert question_type("How many points did they score?") == "number"
    assert question_type("In what year did it open?") == "date"
    assert question_type("Who designed it?") == "person"
    assert question_type("Where is it?") == "place"
    assert question_type("What is it made of?") == "other"


def test_candidate_spans_exclude_question_words_and_stopword_edges():
    ga = answerer(EchoGenerator())
    sent = "The Eiffel Tower was completed in 1889 in Paris."
    spans = {sent[s:e] for s, e, _ in ga.candidate_spans("When was the Eiffel Tower completed?", sent)}
    assert "1889" in spans and "Paris" in spans and "1889 in Paris" in spans
    assert "Eiffel Tower" not in spans and "in 1889" not in spans and "1889 in" not in spans


def test_rewrite_query_carries_topic_into_follow_up():
    hist = [{"role": "user", "content": "What is the zlib licence?"}, {"role": "assistant", "content": "A permissive licence [1]."}]
    q = rewrite_query("and what about its author?", hist)
    assert "zlib" in q and "licence" in q and q.startswith("and what about its author?")
    assert rewrite_query("Who wrote the zlib library?", hist) == "Who wrote the zlib library?"
    assert rewrite_query("and what about its author?", []) == "and what about its author?"


def test_rewrite_query_leaves_out_the_previous_questions_verbs():
    """A new user's chat: "Who wrote zlib?" then "and what about its licence?" searched for
    "(wrote zlib)" and answered with the sentence about who wrote an article on zlib."""
    hist = [{"role": "user", "content": "Who wrote zlib?"}, {"role": "assistant", "content": "Jean-loup Gailly [1]"}]
    assert rewrite_query("and what about its licence?", hist) == "and what about its licence? (zlib)"
    hist = [{"role": "user", "content": "Who designed the DEFLATE format?"}]
    assert rewrite_query("when was it published?", hist) == "when was it published? (DEFLATE format)"
    hist = [{"role": "user", "content": "Which company uses Python?"}]
    assert rewrite_query("and what about its users?", hist) == "and what about its users? (company Python)"


class _SpanLM(EchoGenerator):
    """A fake causal LM for span scoring: every word token costs -1 nat, and the log-probability
    of ending the span (" [") after a word comes from ``cond_end`` when the prompt holds the real
    question and from ``null_end`` under the PMI baseline prompt (default -6)."""

    def __init__(self, cond_end, null_end):
        super().__init__()
        self.cond_end, self.null_end, self.calls = cond_end, null_end, []

    def token_logprobs(self, messages, texts, prefix="", end_text=None, batch_size=48, top_first=None, first_bonus=None):
        from rag.answering.spans import NULL_QUESTION
        from rag.answering.text import WORD_RE as _WORD_RE

        null = messages[-1]["content"].endswith(f"Question: {NULL_QUESTION}")
        self.calls.append(("null" if null else "question", list(texts)))
        table = self.null_end if null else self.cond_end
        out = []
        for t in texts:
            words = [m.group(0) for m in _WORD_RE.finditer(t)]
            ends = [m.end() for m in _WORD_RE.finditer(t)]
            el = [table.get(" ".join(words[: j + 1]), -6.0) for j in range(len(words))]
            out.append((ends, [-1.0] * len(words), el))
        return out


def test_span_scoring_subtracts_the_question_free_likelihood():
    """'Kensington' is what this fake model would answer whatever the question (likely under the
    baseline prompt too); 'Museum of Manufactures' is likely only given the question. Without
    PMI the prior-heavy span wins, with PMI the question-specific one does, and the second pass
    scores only the best starts, with the same sentence and the null question."""
    text = "Kensington hosted the Museum of Manufactures at first."
    ch = Chunk(id=1, doc_id="d", ordinal=0, start=0, end=len(text), text=text, source="v.md", title="V&A")
    hits = [Hit(chunk=ch, score=1.0, rank=1, dense_score=0.9)]
    q = "What was the museum originally called?"
    cond = {"Kensington": -0.5, "Museum of Manufactures": -0.6}
    null = {"Kensington": -0.5, "Museum of Manufactures": -5.0}
    plain = answerer(_SpanLM(cond, null), mode="spans", pmi_weight=0.0, proximity_weight=0.0, length_bonus=0.0)
    assert plain.answer(q, hits).short == "Kensington"
    gen = _SpanLM(cond, null)
    pmi = answerer(gen, mode="spans", pmi_weight=1.0, proximity_weight=0.0, length_bonus=0.0, pmi_starts=2)
    a = pmi.answer(q, hits)
    assert a.short == "Museum of Manufactures"
    assert a.citations[0].quote == text and a.citations[0].chunk_id == 1
    kinds = [k for k, _ in gen.calls]
    assert kinds == ["question", "null"] and len(gen.calls[1][1]) == 2  # only the 2 best starts again
    assert all(t.startswith(("Kensington", "Museum")) for t in gen.calls[1][1])


def test_span_answer_collapses_the_source_line_breaks():
    """A span that crosses a hard-wrapped line of the source (RFC text) is answered on one line;
    the citation quote keeps the source text and offsets."""
    text = "Kensington hosted the Museum of\n   Manufactures at first."
    ch = Chunk(id=1, doc_id="d", ordinal=0, start=0, end=len(text), text=text, source="v.md", title="V&A")
    hits = [Hit(chunk=ch, score=1.0, rank=1, dense_score=0.9)]
    cond = {"Kensington": -0.5, "Museum of Manufactures": -0.6}
    null = {"Kensington": -0.5, "Museum of Manufactures": -5.0}
    ga = answerer(_SpanLM(cond, null), mode="spans", pmi_weight=1.0, proximity_weight=0.0, length_bonus=0.0, pmi_starts=2)
    a = ga.answer("What was the museum originally called?", hits)
    assert a.short == "Museum of Manufactures"
    assert a.citations[0].quote == text


def test_span_answer_covers_a_near_tie_beside_it():
    """When the runner-up span scores within ``merge_margin`` nats of the best and lies beside it,
    the answer is the phrase covering both; not when it scores lower than that, when the covering
    phrase would exceed SPAN_MERGE_MAX_WORDS words, or with merging off."""
    from rag.answering.spans import SPAN_MERGE_MAX_WORDS

    text = "Chinese medicine rests on yin-yang and wuxing philosophy today."
    ch = Chunk(id=1, doc_id="d", ordinal=0, start=0, end=len(text), text=text, source="m.md", title="Medicine")
    hits = [Hit(chunk=ch, score=1.0, rank=1, dense_score=0.9)]
    q = "What does Chinese medicine rest on?"
    # 'yin-yang' = 1 word token (-1) + end -0.5 = -1.5; 'wuxing philosophy' = -2 + end
    near = {"yin-yang": -0.5, "wuxing philosophy": 0.0}  # -2.0: 0.5 nats behind
    far = {"yin-yang": -0.5, "wuxing philosophy": -3.0}  # -5.0: 3.5 nats behind

    def ask(table, **kw):
        kw.setdefault("merge_margin", 2.0)  # off by default (the sentence follows the span)
        return answerer(_SpanLM(table, {}), mode="spans", pmi_weight=0.0, proximity_weight=0.0,
                        length_bonus=0.0, **kw).answer(q, hits)

    assert ask(near).short == "yin-yang and wuxing philosophy"
    assert ask(near, merge_margin=0.0).short == "yin-yang"
    assert ask(far).short == "yin-yang"
    # a runner-up 9 words away from the best: the covering phrase is too long to be an answer
    long_text = "Medicine rests on yin-yang, says one old school of thought, and wuxing philosophy."
    assert len(long_text.split()) - 3 > SPAN_MERGE_MAX_WORDS
    ch2 = Chunk(id=2, doc_id="d", ordinal=0, start=0, end=len(long_text), text=long_text, source="m.md", title="M")
    a = answerer(_SpanLM(near, {}), mode="spans", pmi_weight=0.0, proximity_weight=0.0, merge_margin=2.0,
                 length_bonus=0.0).answer(q, [Hit(chunk=ch2, score=1.0, rank=1, dense_score=0.9)])
    assert a.short == "yin-yang"


def test_span_that_opens_its_sentence_is_answered_by_the_sentence_alone():
    """"Who designed the zlib format?" once read "Jean-loup Gailly and Mark Adler — Jean-loup
    Gailly and Mark Adler designed ..."; a span elsewhere in its sentence still leads."""
    opening = "Jean-loup Gailly and Mark Adler designed the zlib format in the year 1995."
    inside = "The zlib format was designed in the year 1995 by Jean-loup Gailly and Mark Adler."
    table = {"Jean-loup Gailly and Mark Adler": 2.0}
    for text, want in ((opening, f"{opening} [1]"), (inside, f"Jean-loup Gailly and Mark Adler — {inside} [1]")):
        ch = Chunk(id=1, doc_id="d", ordinal=0, start=0, end=len(text), text=text, source="z.md", title="zlib")
        a = answerer(_SpanLM(table, {}), mode="spans", pmi_weight=0.0, proximity_weight=0.0, length_bonus=0.0,
                     merge_margin=0.0).answer("Who designed the zlib format?", [Hit(chunk=ch, score=1.0, rank=1, dense_score=0.9)])
        assert a.short == "Jean-loup Gailly and Mark Adler" and a.kind == "factoid"
        assert a.text == want


def test_span_is_cut_to_what_the_question_asks():
    """The year of a date for "what year"; no lower-case edge words the question already says;
    capitalised words (names) and numbers stay."""
    from rag.answering.spans import trim_to_question

    def cut(question, sentence, span):
        s = sentence.index(span)
        a, b = trim_to_question(question, sentence, s, s + len(span))
        return sentence[a:b]

    assert cut("How many seconds were left in the game?", "There were 17 seconds left.", "17 seconds") == "17"
    assert cut("What year did Tesla die?", "Tesla died on 7 January 1943 in New York.", "7 January 1943") == "1943"
    assert cut("When did Tesla die?", "Tesla died on 7 January 1943 in New York.", "7 January 1943") == "7 January 1943"
    assert cut("What style of sensing is used?", "They use remote sensing.", "remote sensing") == "remote"
    assert cut("Which directive was created in 1994?", "The Works Council Directive was created.",
               "Works Council Directive") == "Works Council Directive"
    assert cut("What is sensing?", "They use sensing.", "sensing") == "sensing"  # never empty
    # through the answerer: the short answer is cut, the sentence still follows it
    text = "The Broncos scored 11 points in the final three minutes of the game."
    ch = Chunk(id=1, doc_id="d", ordinal=0, start=0, end=len(text), text=text, source="b.md", title="Broncos")
    a = answerer(_SpanLM({"11 points": 3.0}, {}), mode="spans", pmi_weight=0.0, proximity_weight=0.0,
                 length_bonus=0.0).answer("How many points did the Broncos score in the final three minutes?",
                                          [Hit(chunk=ch, score=1.0, rank=1, dense_score=0.9)])
    assert a.short == "11" and a.text == f"11 — {text} [1]"
