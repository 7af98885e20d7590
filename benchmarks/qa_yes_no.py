"""Record and replay yes/no verdict features on BoolQ dev (``rag.answering.verdict``).

``record``: for each question of a split the script retrieves through the real pipeline
(``RAG.open(INDEX)``), collects the evidence as the answerer does (the best sentence of the
top-ranked chunk) and records, once, the generator's Yes-vs-No log-odds for several evidence
views and prompts, plus the texts read (so model-free features can be replayed offline):

* few-shot prompt (:func:`rag.answering.verdict.yes_no_messages`): best sentence, best two
  sentences of the chunk, whole chunk; the content-free source "N/A" (contextual calibration)
  and the question with no source block at all (PMI baseline);
* zero-shot prompt (no examples, :data:`ZS_SYSTEM`): best two sentences, whole chunk, "N/A".

``fit``: replays rules and logistic models over the recorded features, scored out of fold
(10 folds, and the two halves of the recorded questions), and prints the default's weights
fitted on all of them for ``[answer] yes_no_*``: the model-free cues (missing words, negation)
are fitted on the whole split (``record --no-model``), then the bias and PMI weight on the
model-scored questions with that part fixed. Report on ``rag eval qa ... --split test``.
Figures: docs/answering.md ("Yes/no verdicts").

    nice -n 10 .venv/bin/python benchmarks/qa_yes_no.py record --index indexes/eval/qa-boolq-dev-6cac19bda4 \
        --split dev --no-model --out /tmp/yn_devlex.jsonl
    nice -n 10 .venv/bin/python benchmarks/qa_yes_no.py record --index indexes/eval/qa-boolq-dev-6cac19bda4 \
        --split dev --every 3 --out /tmp/yn_dev3.jsonl
    .venv/bin/python benchmarks/qa_yes_no.py fit --model /tmp/yn_dev3.jsonl --lexical /tmp/yn_devlex.jsonl --model-limit 200

The scores of session 6's run (numbers only, no texts; the 203 model-scored rows in recording
order) are in benchmarks/results/yes_no_dev_scores.jsonl: pass it as both ``--model`` and
``--lexical`` to replay the default's fit without the model.
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

from rag.answering.verdict import NULL_SOURCE, YES_NO_SYSTEM, negation_cues, yes_no_messages  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qa-boolq-dev"
ZS_SYSTEM = "Read the passage and answer the question with Yes or No."


def _lo(gen, msgs) -> float:
    r = gen.token_logprobs(msgs, ["Yes", "No"])
    if r[0] is None or r[1] is None:
        return 0.0
    return float(sum(r[0][1]) - sum(r[1][1]))


def _zs(question: str, source: str | None) -> list[dict]:
    body = (f"Passage:\n{' '.join(source.split())}\n\n" if source is not None else "") + f"Question: {question.strip()}"
    return [{"role": "system", "content": ZS_SYSTEM}, {"role": "user", "content": body}]


def record(index: str, split: str, every: int, offset: int, out: str, limit: int | None, model: bool = True,
           zero_shot: bool = True) -> None:
    from rag import RAG
    from rag.eval_qa import load_questions

    rag = RAG.open(index)
    ans = rag.answerer
    gen = ans.generator
    qs = load_questions(DATA, None, split)[offset::every]
    if limit:
        qs = qs[:limit]
    done = set()
    if Path(out).exists():
        done = {json.loads(x)["id"] for x in Path(out).read_text().splitlines() if x.strip()}
    sink = open(out, "a", encoding="utf-8")
    t0 = time.perf_counter()
    n_new = 0
    for q in qs:
        if q["id"] in done:
            continue
        question = q["question"]
        hits = rag.search(question)
        ev = ans.evidence(question, hits)
        rec = {"id": q["id"], "q": question, "gold": q["answers"][0], "abstain": ans.should_abstain(ev)}
        if ev.sentences:
            best = next((s for s in ev.sentences if s.n == 1), ev.sentences[0])
            same = sorted([s for s in ev.sentences if s.n == best.n][:2], key=lambda s: s.start)
            two = " ".join(s.text for s in same)
            chunk = best.hit.chunk.text
            chunk2 = hits[1].chunk.text if len(hits) > 1 else ""
            lex = ev.chunk_lexical[best.n - 1] if ev.chunk_lexical else ev.best_lexical
            rec.update(
                gold_cited=q["gold_passage_ids"][0] == best.hit.chunk.doc_id or q["gold_passage_ids"][0] in best.hit.chunk.doc_id,
                sent=best.text, two=two, chunk=chunk, chunk2=chunk2,
                overlap=best.overlap, dense=best.dense, lexical=lex, missing=1.0 - lex,
                negation=negation_cues(question, [best.text]),
            )
        if ev.sentences and model:
            rec.update(
                # few-shot prompt: the baselines first, then the views (the shared prefix is cached)
                fs_null=_lo(gen, yes_no_messages(question, NULL_SOURCE)),
                fs_qonly=_lo(gen, [*yes_no_messages(question, "")[:-1], {"role": "user", "content": f"Question: {question.strip()}"}]),
                fs_sent=_lo(gen, yes_no_messages(question, best.text)),
                fs_two=_lo(gen, yes_no_messages(question, two)),
                fs_chunk=_lo(gen, yes_no_messages(question, chunk)),
            )
        if ev.sentences and model and zero_shot:
            rec.update(
                zs_null=_lo(gen, _zs(question, NULL_SOURCE)),
                zs_two=_lo(gen, _zs(question, two)),
                zs_chunk=_lo(gen, _zs(question, chunk)),
            )
        sink.write(json.dumps(rec) + "\n")
        sink.flush()
        n_new += 1
        if n_new % 25 == 0:
            print(f"{n_new} new questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 30,
                 offset: np.ndarray | None = None) -> np.ndarray:
    """Newton-Raphson for L2-regularised logistic regression (bias unpenalised), ``z = offset +
    w0 + X @ w``; returns ``[w0, w_1..w_d]``."""
    Xb = np.hstack([np.ones((len(X), 1)), X])
    off = np.zeros(len(y)) if offset is None else offset
    w = np.zeros(Xb.shape[1])
    reg = l2 * np.diag(np.r_[0, np.ones(Xb.shape[1] - 1)])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(off + Xb @ w, -50, 50)))
        g = Xb.T @ (p - y) + reg @ w
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb + reg + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(H, g)
    return w


def fit_raw(X: np.ndarray, y: np.ndarray, l2: float = 10.0, offset: np.ndarray | None = None) -> np.ndarray:
    """:func:`fit_logistic` on standardised columns, returned as weights of the raw columns."""
    mu, sd = X.mean(0), X.std(0) + 1e-9
    w = fit_logistic((X - mu) / sd, y, l2, offset=offset)
    return np.r_[w[0] - (mu / sd) @ w[1:], w[1:] / sd]


def auc(s: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve of score ``s`` for ``y == 1`` (ties count half)."""
    from scipy.stats import rankdata

    r = rankdata(s)
    n1, n0 = y.sum(), (1 - y).sum()
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def scores(pred: np.ndarray, y: np.ndarray) -> str:
    acc = float((pred == y).mean())
    f1s = []
    for c in (1, 0):
        tp = float(((pred == c) & (y == c)).sum())
        p, r = tp / max(1, (pred == c).sum()), tp / max(1, (y == c).sum())
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    return f"acc {acc:.3f} F1 yes {f1s[0]:.3f} no {f1s[1]:.3f}"


def model_features(r: dict) -> dict[str, float]:
    """Recorded log-odds and their calibrated (minus "N/A") and PMI (minus question-alone) forms."""
    f = {k: v for k, v in r.items() if k.startswith(("fs_", "zs_"))}
    for v in ("sent", "two", "chunk"):
        f[f"fs_{v}_cal"] = f[f"fs_{v}"] - f["fs_null"]
        f[f"fs_{v}_pmi"] = f[f"fs_{v}"] - f["fs_qonly"]
    f["fs_views_pmi"] = (f["fs_sent"] + f["fs_two"] + f["fs_chunk"]) / 3 - f["fs_qonly"]
    if "zs_two" in f:
        f["zs_two_cal"], f["zs_chunk_cal"] = f["zs_two"] - f["zs_null"], f["zs_chunk"] - f["zs_null"]
    return f


LEXICAL = ("missing", "negation")
"""The model-free cues the verdict uses (as the answerer computes them)."""


def folds(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [np.isin(np.arange(n), perm[i::k]) for i in range(k)]


def two_stage(lex: list[dict], mod: list[dict], test: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weights of :data:`LEXICAL` fitted on ``lex`` (the whole split but the held-out ``test``
    rows of ``mod``), then bias and PMI weight fitted on the ``mod`` rows outside ``test`` with
    the lexical part as a fixed offset. Returns (lexical weights, [bias, pmi weight])."""
    ids = {r["id"] for i, r in enumerate(mod) if test is not None and test[i]}
    lo = [r for r in lex if r["id"] not in ids]
    wl = fit_raw(np.array([[r[c] for c in LEXICAL] for r in lo], float), _y(lo))[1:]
    tr = [r for i, r in enumerate(mod) if test is None or not test[i]]
    off = np.array([[r[c] for c in LEXICAL] for r in tr], float) @ wl
    pmi = np.array([[r["fs_two"] - r["fs_qonly"]] for r in tr])
    return wl, fit_logistic(pmi, _y(tr), 1.0, offset=off)


def _y(recs: list[dict]) -> np.ndarray:
    return np.array([r["gold"] == "yes" for r in recs], dtype=float)


def _z(r: dict, wl: np.ndarray, wm: np.ndarray) -> float:
    return float(wm[0] + wm[1] * (r["fs_two"] - r["fs_qonly"]) + np.array([r[c] for c in LEXICAL]) @ wl)


def report(lex: list[dict], mod: list[dict]) -> None:
    y = _y(mod)
    print(f"model-scored questions: {len(mod)}, base rate yes {y.mean():.3f}; lexical-only: {len(lex)}, "
          f"base rate {_y(lex).mean():.3f}; gold passage read {np.mean([r['gold_cited'] for r in lex]):.3f}")
    feats = [model_features(r) for r in mod]
    print("AUC (yes vs no) of each model score (zero-shot: the questions recorded with it):")
    for n in dict.fromkeys(k for f in feats for k in f):
        has = np.array([n in f for f in feats])
        print(f"  {n:14s} {auc(np.array([f[n] for f in feats if n in f]), y[has]):.3f}  ({has.sum()} questions)")
    yl = _y(lex)
    print("AUC of the lexical cues (all lexical records): "
          + ", ".join(f"{c} {auc(np.array([r[c] for r in lex], float), yl):.3f}" for c in ("missing", "negation", "overlap", "dense")))
    k10, half = folds(len(mod), 10), np.arange(len(mod)) % 2 == 0
    print(f"majority (yes): {scores(np.ones_like(y), y)}")
    cal = np.array([r["fs_two"] - r["fs_null"] for r in mod])
    print(f"previous default z = 1.549 + 1.244 (m_two - m_na): {scores((1.549 + 1.244 * cal > 0).astype(float), y)}")
    # one-stage logistic models on the model-scored questions (out-of-fold)
    for name, cols in ((("pmi",), ("fs_two_pmi",)), (("calibrated",), ("fs_two_cal",)),
                       (("pmi", "missing", "negation"), ("fs_two_pmi", "missing", "negation")),
                       (("calibrated", "missing", "negation"), ("fs_two_cal", "missing", "negation"))):
        X = np.array([[{**f, **r}[c] for c in cols] for f, r in zip(feats, mod)], float)
        z = np.zeros(len(y))
        for te in k10:
            w = fit_raw(X[~te], y[~te])
            z[te] = w[0] + X[te] @ w[1:]
        print(f"logistic {'+'.join(name):28s} 10-fold: AUC {auc(z, y):.3f} {scores((z > 0).astype(float), y)}")
    # the default: two stages (lexical weights from all lexical records, then bias + PMI weight)
    for label, parts in (("10-fold", k10), ("halves", [half, ~half])):
        z = np.zeros(len(y))
        for te in parts:
            wl, wm = two_stage(lex, mod, te)
            z[te] = [_z(r, wl, wm) for i, r in enumerate(mod) if te[i]]
        out = " | ".join(scores((z[te] > 0).astype(float), y[te]) for te in parts) if label == "halves" else \
            f"AUC {auc(z, y):.3f} {scores((z > 0).astype(float), y)}"
        print(f"two-stage PMI + missing + negation, {label}: {out}")
    wl, wm = two_stage(lex, mod)
    z = np.array([_z(r, wl, wm) for r in mod])
    print(f"fitted on all: {scores((z > 0).astype(float), y)}, says No for {(z < 0).mean():.3f}")
    print(f"[answer] yes_no_bias = {wm[0]:.3f}, yes_no_model = {wm[1]:.3f}, yes_no_prior = {-wm[1]:.3f}, "
          f"yes_no_missing = {wl[0]:.3f}, yes_no_negation = {wl[1]:.3f}, yes_no_baseline = \"question\"")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--index", required=True, help="index of qa-boolq-dev/passages.jsonl")
    r.add_argument("--split", default="dev")
    r.add_argument("--every", type=int, default=1, help="every k-th question of the split")
    r.add_argument("--offset", type=int, default=0)
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--out", required=True, help="JSON-lines file (resumed: recorded ids are skipped)")
    r.add_argument("--no-model", action="store_true", help="retrieval and evidence texts only (lexical features)")
    r.add_argument("--no-zero-shot", action="store_true", help="few-shot prompts only")
    f = sub.add_parser("fit")
    f.add_argument("--model", required=True, help="records with model scores (record)")
    f.add_argument("--lexical", required=True, help="records of the whole split (record --no-model)")
    f.add_argument("--model-limit", type=int, default=None, help="use the first N model-scored records")
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.index, args.split, args.every, args.offset, args.out, args.limit, not args.no_model,
               not args.no_zero_shot)
        return 0

    def read(p: str) -> list[dict]:
        return [json.loads(x) for x in Path(p).read_text().splitlines() if x.strip()]

    report([r for r in read(args.lexical) if "missing" in r], [r for r in read(args.model) if "fs_two" in r][:args.model_limit])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
