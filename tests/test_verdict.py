"""Yes/no verdicts (rag.answering.verdict): the evidence-free baseline, the cues, the fitted
defaults through the answerer, and the real model on a tiny corpus (slow)."""

import pytest

from rag.answering import GroundedAnswerer
from rag.answering.verdict import (
    NULL_SOURCE,
    YES_NO_FEW_SHOT,
    YES_NO_SYSTEM,
    VerdictFeatures,
    baseline_messages,
    decide,
    yes_no_messages,
)
from rag.config import AnswerConfig, ConfigError, GenerationConfig, RagConfig
from rag.generation import EchoGenerator
from rag.testing import HashEmbedder
from rag.types import Chunk, Hit

PENGUINS = ("Penguins are a group of aquatic flightless birds. They live almost exclusively in the Southern "
            "Hemisphere: only one species, the Galapagos penguin, is found north of the Equator. Penguins cannot "
            "fly; their wings have evolved into flippers for swimming.")


class _Scorer(EchoGenerator):
    """Fake ``token_logprobs``: Yes-vs-No log-odds ``source`` with the evidence, ``question``
    for the question alone (no source block), ``na`` for the "N/A" source."""

    def __init__(self, source, question, na=0.0):
        super().__init__()
        self.lo = {"source": source, "question": question, "na": na}
        self.seen = []

    def token_logprobs(self, messages, texts, prefix="", end_text=None, batch_size=48, top_first=None, first_bonus=None):
        assert messages[0]["content"] == YES_NO_SYSTEM and texts == ["Yes", "No"]
        last = messages[-1]["content"]
        kind = "na" if last.startswith(f"Source:\n{NULL_SOURCE}\n") else "source" if last.startswith("Source:") else "question"
        self.seen.append(kind)
        m = self.lo[kind]
        return [([1], [m / 2], []), ([2], [-m / 2], [])]


def _hits(text):
    ch = Chunk(id=7, doc_id="penguins", ordinal=0, start=0, end=len(text), text=text, source="penguins.txt", title="Penguins")
    return [Hit(chunk=ch, score=1.0, rank=1, dense_score=0.7)]


def _answerer(gen, **kw):
    return GroundedAnswerer(gen, HashEmbedder(256), GenerationConfig(backend="echo"), mode="spans",
                            abstain_min_dense=0.0, abstain_floor_dense=-1.0, **kw)


def test_baseline_prompts_are_the_verdict_prompt_without_the_evidence():
    q = "Can penguins fly?"
    full = yes_no_messages(q, PENGUINS)
    alone = baseline_messages(q, "question")
    # same system prompt and few-shot examples, then the question with no source block
    assert alone[:-1] == full[:-1] and alone[1:-1] == YES_NO_FEW_SHOT
    assert alone[-1] == {"role": "user", "content": "Question: Can penguins fly?"}
    assert baseline_messages(q, "na")[-1]["content"] == "Source:\nN/A\n\nQuestion: Can penguins fly?"
    assert baseline_messages(q, "question", few_shot=False) == [full[0], alone[-1]]
    with pytest.raises(ValueError, match="baseline"):
        baseline_messages(q, "content-free")


def test_the_default_baseline_is_the_question_alone_and_it_calibrates_the_verdict():
    # with the evidence the model says No (-1.0), but it says No much more firmly to the bare
    # question (-4.0): the evidence moves it towards Yes. The "N/A" source (+3.0) would say No.
    gen = _Scorer(source=-1.0, question=-4.0, na=3.0)
    a = _answerer(gen).answer("Are penguins birds?", _hits(PENGUINS))
    assert a.kind == "yes_no" and a.short == "Yes" and a.text.startswith("Yes. ")
    assert sorted(gen.seen) == ["question", "source"]
    b = _answerer(_Scorer(-1.0, -4.0, na=3.0), yes_no_baseline="na").answer("Are penguins birds?", _hits(PENGUINS))
    assert b.short == "No" and b.text.startswith("No. ")
    assert a.scores["p_yes"] > 0.5 > b.scores["p_yes"]


def test_default_weights_the_evidence_against_the_question_and_a_negation_cue_tips_it():
    w = _answerer(_Scorer(0.0, 0.0)).verdict_weights
    a = AnswerConfig()
    assert (w.bias, w.model, w.prior, w.negation, w.missing) == (
        a.yes_no_bias, a.yes_no_model, a.yes_no_prior, a.yes_no_negation, a.yes_no_missing)
    assert w.model > 0 and w.prior == -w.model and w.negation < 0 and w.missing < 0
    # PMI -2.5 alone leaves a small Yes; the same scores with one more negation say No
    plain = VerdictFeatures(m=-3.0, m_null=-0.5, negation=0, missing=0.0)
    negated = VerdictFeatures(m=-3.0, m_null=-0.5, negation=1, missing=0.0)
    assert decide(plain, w)[0] == "yes" and decide(negated, w)[0] == "no"
    # question words missing from the evidence lower P(yes)
    assert decide(VerdictFeatures(-3.0, -0.5, 0, 1.0), w)[1] < decide(plain, w)[1]
    # through the answerer: "Can penguins fly?" read against "Penguins cannot fly" (one
    # negation the question lacks), with the evidence lowering the model's log-odds by 2.5
    ans = _answerer(_Scorer(source=-3.0, question=-0.5)).answer("Can penguins fly?", _hits(PENGUINS))
    assert ans.short == "No" and ans.text.startswith("No. ") and "cannot fly" in ans.text
    assert ans.citations and ans.citations[0].chunk_id == 7


def test_config_rejects_an_unknown_baseline():
    with pytest.raises(ConfigError, match="yes_no_baseline"):
        RagConfig.from_dict({"answer": {"yes_no_baseline": "nothing"}}).validate()
    with pytest.raises(ValueError, match="yes_no_baseline"):
        _answerer(_Scorer(0.0, 0.0), yes_no_baseline="nothing")


@pytest.mark.slow
def test_real_model_ranks_a_clear_yes_above_a_clear_no(tmp_path):
    """SmolLM2-135M through RAG: both questions get a verdict from the penguin passage and cite
    it, and P(yes) is far higher for "Are penguins birds?" than for "Can penguins fly?". (With
    the fitted bias the real verdict still says Yes to both: it says No to ~5 % of BoolQ dev.)"""
    from rag import RAG

    doc = tmp_path / "penguins.txt"
    doc.write_text(PENGUINS + "\n", encoding="utf-8")
    rag = RAG.create(tmp_path / "idx")
    rag.ingest([doc])
    yes, no = rag.ask("Are penguins birds?"), rag.ask("Can penguins fly?")
    for a in (yes, no):
        assert a.kind == "yes_no" and a.text.split(" ", 1)[0] in ("Yes.", "No.")
        assert a.citations and a.citations[0].source.endswith("penguins.txt")
    assert yes.short == "Yes"
    assert yes.scores["p_yes"] - no.scores["p_yes"] > 0.2, (yes.scores, no.scores)
