"""QA metrics: SQuAD normalisation/F1, citation precision, dangling markers, abstention."""

import json
from pathlib import Path

import pytest

from rag.eval_qa import evaluate_qa, exact_match, f1_score, load_questions, normalize_answer, strip_markers
from rag.types import Answer, Chunk, Citation, Hit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def test_squad_normalisation_and_scores():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert exact_match("the Denver Broncos", "Denver Broncos") == 1.0
    assert f1_score("Denver Broncos won", "Denver Broncos") == pytest.approx(0.8)
    assert f1_score("Panthers", "Denver Broncos") == 0.0
    assert strip_markers("308 points [1, 2][3]") == "308 points"


@pytest.fixture()
def tiny(tmp_path):
    passages = [{"id": "p1", "title": "A", "text": "The Panthers gave up 308 points."},
                {"id": "p2", "title": "B", "text": "Jared Allen had 136 career sacks."}]
    questions = [
        {"id": "q1", "question": "How many points did the Panthers give up?", "answers": ["308"], "answer_starts": [21], "gold_passage_ids": ["p1"]},
        {"id": "q2", "question": "How many sacks did Allen have?", "answers": ["136"], "answer_starts": [16], "gold_passage_ids": ["p2"]},
    ]
    (tmp_path / "passages.jsonl").write_text("\n".join(json.dumps(p) for p in passages))
    (tmp_path / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    chunks = {p["id"]: Chunk(id=i, doc_id="passages.jsonl#" + p["id"], ordinal=0, start=0, end=len(p["text"]), text=p["text"],
                             metadata={"record_id": p["id"]}) for i, p in enumerate(passages)}
    return tmp_path, chunks


def test_evaluate_qa_metrics(tiny):
    path, chunks = tiny
    h1, h2 = Hit(chunk=chunks["p1"], score=1, rank=1), Hit(chunk=chunks["p2"], score=1, rank=1)

    def ask(q):
        if "Panthers" in q:  # right answer, right citation
            return Answer(question=q, text="308 [1]", hits=(h1, h2), citations=(Citation(n=1, chunk_id=0, source=""),))
        if "sacks" in q:  # wrong passage cited, plus a dangling marker [7]
            return Answer(question=q, text="136 sacks [1] [7]", hits=(h1,), citations=(Citation(n=1, chunk_id=0, source=""),))
        return Answer(question=q, text="Not found.", abstained=True)

    seen = []
    r = evaluate_qa(path, ask, ood_questions=["Is vitamin D good?", "What about X?"], k=1,
                    progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert seen == [("questions", 0, 2), ("questions", 1, 2), ("questions", 2, 2),
                    ("out-of-domain", 0, 2), ("out-of-domain", 1, 2)]
    assert r["n_questions"] == 2
    assert r["exact_match"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert r["contains"] == 1.0
    assert r["citation_precision"] == pytest.approx(0.5)
    assert r["dangling_citations"] == 1
    assert r["retrieval_hit_rate_at_1"] == pytest.approx(0.5)
    assert r["false_abstention"] == 0.0 and r["abstention_ood"] == 1.0


def test_evaluate_qa_stream_measures_ttft(tiny):
    path, chunks = tiny

    def stream(q):
        yield "x"
        yield Answer(question=q, text="x", abstained=True)

    r = evaluate_qa(path, None, stream=stream)
    assert r["false_abstention"] == 1.0 and r["f1"] == 0.0
    assert r["ttft_p50_s"] is not None and r["ttft_p50_s"] >= 0.0


def test_load_questions_split_on_real_xquad():
    d = DATA / "qa-xquad-en"
    if not d.exists():
        pytest.skip("shared XQuAD data not present")
    dev, test = load_questions(d, split="dev"), load_questions(d, split="test")
    assert len(dev) + len(test) == 1190 and not {q["id"] for q in dev} & {q["id"] for q in test}
    assert len(load_questions(d, limit=50)) == 50


def test_ood_limit_zero_gives_no_questions(tmp_path):
    from rag.eval_qa import load_ood_questions

    p = tmp_path / "queries.jsonl"
    p.write_text('{"_id": "1", "text": "a claim"}\n{"_id": "2", "text": "another"}\n')
    assert load_ood_questions(p, 0) == [] and load_ood_questions(p, 1) == ["a claim"]
    assert load_ood_questions(p, None) == ["a claim", "another"]


def test_yes_no_metrics_short_answer_and_routes(tmp_path):
    passages = [{"id": "p1", "title": "A", "text": "Barq's is owned by Coca-Cola."},
                {"id": "p2", "title": "B", "text": "Zlib may be used in commercial applications."}]
    questions = [
        {"id": "q1", "question": "is barq's a pepsi product?", "answers": ["no"], "gold_passage_ids": ["p1"]},
        {"id": "q2", "question": "is zlib free for commercial use?", "answers": ["yes"], "gold_passage_ids": ["p2"]},
        {"id": "q3", "question": "is zlib owned by pepsi?", "answers": ["no"], "gold_passage_ids": ["p2"]},
    ]
    (tmp_path / "passages.jsonl").write_text("\n".join(json.dumps(p) for p in passages))
    (tmp_path / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in questions))
    ch = {p["id"]: Chunk(id=i, doc_id="passages.jsonl#" + p["id"], ordinal=0, start=0, end=len(p["text"]), text=p["text"])
          for i, p in enumerate(passages)}

    def ask(q):
        if q.startswith("is barq"):  # right verdict, cites the gold passage
            h = Hit(chunk=ch["p1"], score=1, rank=1)
            return Answer(question=q, text="No. Barq's is owned by Coca-Cola. [1]", kind="yes_no", short="No", hits=(h,),
                          citations=(Citation(n=1, chunk_id=0, source="x"),))
        if "commercial" in q:  # right verdict, cites the wrong passage
            h = Hit(chunk=ch["p1"], score=1, rank=1)
            return Answer(question=q, text="Yes. Barq's is owned by Coca-Cola. [1]", kind="yes_no", short="Yes", hits=(h,),
                          citations=(Citation(n=1, chunk_id=0, source="x"),))
        return Answer(question=q, text="Not found in the indexed documents.", abstained=True, kind="yes_no")

    res = evaluate_qa(tmp_path, ask)
    assert res["yes_no_accuracy"] == pytest.approx(2 / 3)
    assert res["yes_no_undecided"] == pytest.approx(1 / 3)
    assert res["yes_no_f1_yes"] == pytest.approx(1.0)  # one predicted yes, one gold yes
    assert res["yes_no_f1_no"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # precision 1, recall 1/2
    assert res["gold_passage_cited"] == pytest.approx(1 / 3)
    assert res["exact_match"] == pytest.approx(2 / 3)  # scored on .short, not on the sentence
    # a "yes"/"no" gold never makes a citation correct by appearing in the chunk text
    assert res["citation_precision"] == pytest.approx(0.5)
    assert res["by_kind"]["yes_no"]["n"] == 3 and res["by_kind"]["yes_no"]["abstained"] == pytest.approx(1 / 3)
