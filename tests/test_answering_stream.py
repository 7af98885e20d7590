"""Free-text answers stream as they are generated: long sentences go out a checked clause at a
time, a reader who leaves stops the generator, unsupported text is given up early."""

from rag.answering import GroundedAnswerer
from rag.answering.grounding import MAX_HELD_CHARS
from rag.config import GenerationConfig
from rag.generation import EchoGenerator
from rag.testing import HashEmbedder
from rag.types import Answer

from test_answering import make_hits

CLAUSES = ("the Eiffel Tower is 330 metres tall, it was completed in 1889 in Paris, "
           "the Colosseum is an amphitheatre in Rome, it could hold 50,000 spectators, "
           "Big Ben is the nickname of the bell in London, the tower was finished in 1859")


class CountingEcho(EchoGenerator):
    """EchoGenerator that counts the words it has handed out and notes when it was closed."""

    def __init__(self, answer):
        super().__init__(answer)
        self.produced = 0
        self.closed = False

    def stream(self, messages, options=None):
        try:
            for piece in super().stream(messages, options):
                self.produced += 1
                yield piece
        finally:
            self.closed = True


def _answerer(gen):
    return GroundedAnswerer(gen, HashEmbedder(256), GenerationConfig(backend="echo"), abstain_min_dense=0.1,
                            abstain_floor_dense=0.05, abstain_min_lexical=0.3)


def _run(text, question="How tall is the Eiffel Tower?"):
    gen = CountingEcho(text)
    total = len(text.split())
    progress, items = [], []
    for item in _answerer(gen).stream(question, make_hits()):
        items.append(item)
        if isinstance(item, str):
            progress.append(gen.produced)
    return gen, total, progress, items


def test_sentence_free_output_streams_in_checked_clauses_before_the_generator_is_done():
    text = " ".join([CLAUSES] * 3)  # 126 words, no sentence end
    gen, total, progress, items = _run(text)
    ans = items[-1]
    assert isinstance(ans, Answer) and "".join(items[:-1]) == ans.text
    early = [p for p in progress if p < total]
    assert len(early) >= 5, progress  # pieces arrive while the generator is still writing
    assert early[0] <= 20  # the first one after about one clause, not at the end
    # clauses carry no marker of their own; the one (unfinished) sentence is checked whole at the
    # end and cited there, as the answer's only sentence, its source shown as [1]
    assert ans.text.startswith("the Eiffel Tower is 330 metres tall, it was")
    assert ans.text.endswith("the tower was finished in 1859 [1]") and ans.text.count("[") == 1
    assert len(ans.sentences) == 1 and ans.sentences[0].supported and ans.sentences[0].citations == (1,)
    assert len(ans.citations) == 1 and ans.citations[0].n == 1 and ans.hits[0].chunk.id == ans.citations[0].chunk_id


def test_output_without_clause_breaks_is_cut_at_spaces():
    text = " ".join([CLAUSES.replace(",", " and")] * 2)
    gen, total, progress, items = _run(text)
    assert "".join(items[:-1]) == items[-1].text
    assert len([p for p in progress if p < total]) >= 3, progress


def test_closing_the_stream_stops_the_generator():
    gen = CountingEcho(" ".join([CLAUSES] * 20))
    total = len(gen.answer.split())
    stream = _answerer(gen).stream("How tall is the Eiffel Tower?", make_hits())
    got = [next(stream), next(stream)]
    assert all(isinstance(x, str) and x for x in got)
    stream.close()  # the reader left
    assert gen.closed and gen.produced < total / 5


def test_unsupported_output_is_given_up_for_the_sentence_answer():
    gen, total, progress, items = _run(" ".join(["bananas are purple vegetables from mars,"] * 60))
    ans = items[-1]
    assert gen.closed and gen.produced < total / 2  # stopped at MAX_HELD_CHARS, not at the end
    assert MAX_HELD_CHARS / 7 <= gen.produced
    assert ans.text == "The Eiffel Tower is 330 metres tall. [1]" == "".join(items[:-1])
