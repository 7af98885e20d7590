"""Calibrate abstention thresholds: XQuAD questions (answerable) vs SciFact claims (out-of-domain)
asked of the XQuAD passage index (dense top-5). Prints best_dense / best_lexical distributions and
the abstention / false-abstention rates for a grid of thresholds.

    .venv/bin/python benchmarks/qa_calibrate.py --n 300
"""
import argparse, sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import qa_harness  # noqa: E402
from rag.answering import GroundedAnswerer  # noqa: E402
from rag.eval_qa import load_ood_questions, load_questions  # noqa: E402
from rag.generation import ExtractiveGenerator  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=300)
ap.add_argument("--split", default="all")
a = ap.parse_args()
emb, retrieve = qa_harness.build(5)
ga = GroundedAnswerer(ExtractiveGenerator(), emb)
qs = [q["question"] for q in load_questions(qa_harness.DATA / "qa-xquad-en", a.n, a.split)]
ood = load_ood_questions(qa_harness.DATA / "beir-scifact" / "queries.jsonl", a.n)


def feats(questions):
    out = []
    for q in questions:
        ev = ga.evidence(q, retrieve(q))
        out.append((ev.best_dense, ev.best_lexical))
    return np.array(out)


A, O = feats(qs), feats(ood)
for name, X in (("answerable", A), ("ood", O)):
    print(name, "dense pct 5/25/50/75/95", np.percentile(X[:, 0], [5, 25, 50, 75, 95]).round(3),
          "lexical", np.percentile(X[:, 1], [5, 25, 50, 75, 95]).round(3))
print("floor  min_dense  min_lex  ood_abst  false_abst")
for floor in (0.2, 0.25, 0.3):
    for md in (0.35, 0.4, 0.45, 0.5):
        for ml in (0.4, 0.5, 0.6, 0.7, 1.01):
            def ab(X):
                return ((X[:, 0] < floor) | ((X[:, 0] < md) & (X[:, 1] < ml))).mean()
            print(f"{floor:.2f} {md:.2f} {ml:.2f}  {ab(O):.3f}  {ab(A):.3f}")
