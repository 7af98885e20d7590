"""Fit the yes/no verdict on the dev half of BoolQ dev (``rag.answering.verdict``).

For each dev question the script retrieves through the real pipeline (``RAG.open(INDEX)``),
collects the evidence, and records the verdict features (model log-odds with the evidence
``m``, with the content-free source ``m_null``, negation cues, missing question words) and the
gold answer. It then prints the accuracy and per-class F1 of: the majority answer, the raw model
(``m > 0``), contextual calibration (``m - m_null > 0``) and logistic models over the features
(fitted on one half of the dev questions, scored on the other, then refitted on all of them),
plus the weights to put in ``[answer]`` (``yes_no_*``). Report on ``rag eval qa ... --split test``.

    .venv/bin/python benchmarks/qa_yes_no.py --index indexes/eval/qa-boolq-dev-<hash> --limit 400 --dump /tmp/yn.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag import RAG  # noqa: E402
from rag.answering.verdict import verdict_features  # noqa: E402
from rag.eval_qa import load_questions  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qa-boolq-dev"


def dump(index: str, limit: int | None, split: str, path: str | None = None) -> list[dict]:
    """Features of each question; with ``path`` also appended there as JSON lines as they come
    (a later run resumes after the recorded ones)."""
    rag = RAG.open(index)
    done = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()] if path and Path(path).exists() else []
    sink = open(path, "a", encoding="utf-8") if path else None
    ans = rag.answerer
    out = []
    t0 = time.perf_counter()
    out.extend(done)
    for qi, q in enumerate(load_questions(DATA, limit, split)):
        if qi < len(done):
            continue
        question = q["question"]
        hits = rag.search(question)
        ev = ans.evidence(question, hits)
        rec = {"q": question, "gold": q["answers"][0], "abstain": ans.should_abstain(ev)}
        if ev.sentences:
            best = ev.sentences[0]
            lex = ev.chunk_lexical[best.n - 1]
            f = verdict_features(ans.generator, question, best.hit.chunk.text, [best.text], 1.0 - lex)
            rec.update(m=f.m, m_null=f.m_null, negation=f.negation, missing=f.missing,
                       gold_cited=q["gold_passage_ids"][0] in best.hit.chunk.doc_id)
            rec.update(lexical_features(question, ev))
        out.append(rec)
        if sink:
            sink.write(json.dumps(rec) + "\n")
            sink.flush()
        if qi % 50 == 0:
            print(f"{qi} questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def lexical_features(question: str, ev) -> dict:
    """Model-free features of the best evidence sentence (for the feature study only)."""
    best = ev.sentences[0]
    q = question.lower().split()
    return {"overlap": best.overlap, "dense": best.dense, "q_is": float(q[0] in ("is", "are", "was", "were")),
            "q_there": float(q[:2] in (["is", "there"], ["are", "there"]))}


def add_lexical(index: str, recs: list[dict]) -> None:
    """Fill in :func:`lexical_features` for records made before they were recorded (no model)."""
    rag = RAG.open(index)
    ans = rag.answerer
    for r in recs:
        if "overlap" not in r and "m" in r:
            r.update(lexical_features(r["q"], ans.evidence(r["q"], rag.search(r["q"]))))


FEATURES = ("m", "m_null", "negation", "missing", "overlap", "dense", "q_is", "q_there")


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50) -> np.ndarray:
    """Newton-Raphson for L2-regularised logistic regression; X gets a bias column first."""
    Xb = np.hstack([np.ones((len(X), 1)), X])
    w = np.zeros(Xb.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-Xb @ w))
        g = Xb.T @ (p - y) + l2 * np.r_[0, w[1:]]
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb + l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
        w -= np.linalg.solve(H, g)
    return w


def scores(pred: np.ndarray, y: np.ndarray) -> str:
    acc = float((pred == y).mean())
    f1s = []
    for c in (1, 0):
        tp = float(((pred == c) & (y == c)).sum())
        p, r = tp / max(1, (pred == c).sum()), tp / max(1, (y == c).sum())
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return f"accuracy {acc:.3f}  F1 yes {f1s[0]:.3f}  F1 no {f1s[1]:.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True, help="index of qa-boolq-dev/passages.jsonl")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--dump", default=None, help="JSON-lines file of recorded features: resumed, then reused")
    ap.add_argument("--fit-only", action="store_true", help="fit on what --dump holds, record nothing new")
    args = ap.parse_args()
    if args.fit_only:
        recs = [json.loads(x) for x in Path(args.dump).read_text().splitlines() if x.strip()]
    else:
        recs = dump(args.index, args.limit, args.split, args.dump)
    recs = [r for r in recs if "m" in r]
    if any("overlap" not in r for r in recs):
        add_lexical(args.index, recs)
    y = np.array([r["gold"] == "yes" for r in recs], dtype=float)
    X = np.array([[r[f] for f in FEATURES] for r in recs], dtype=float)
    print(f"{len(recs)} {args.split} questions, gold cited by the best sentence {np.mean([r['gold_cited'] for r in recs]):.3f}")
    print("majority (yes)        ", scores(np.ones_like(y), y))
    print("model m > 0           ", scores((X[:, 0] > 0).astype(float), y))
    print("calibrated m-m0 > 0   ", scores((X[:, 0] - X[:, 1] > 0).astype(float), y))
    half = np.arange(len(y)) % 2 == 0
    for name, cols in (("m", [0]), ("m, m0", [0, 1]), ("m, m0, neg", [0, 1, 2]), ("m, m0, miss", [0, 1, 3]),
                       ("m, m0, neg, miss", [0, 1, 2, 3]), ("lexical only", [2, 3, 4, 5, 6, 7]), ("all", list(range(8)))):
        accs = []
        for tr in (half, ~half):
            w = fit_logistic(X[tr][:, cols], y[tr])
            z = w[0] + X[~tr][:, cols] @ w[1:]
            accs.append(scores((z > 0).astype(float), y[~tr]))
        w = fit_logistic(X[:, cols], y)
        print(f"logistic {name:12s} held-out halves: {accs[0]} | {accs[1]}")
        print(f"    weights (bias, {', '.join(FEATURES[c] for c in cols)}): {np.round(w, 3).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
