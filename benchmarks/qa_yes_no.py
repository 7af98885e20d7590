"""Record and replay yes/no verdict features on BoolQ dev (``rag.answering.verdict``).

``record``: for each question of a split the script retrieves through the real pipeline
(``RAG.open(INDEX)``), collects the evidence as the answerer does (the best sentence of the
top-ranked chunk) and records, once, the generator's Yes-vs-No log-odds for several evidence
views and prompts, plus the texts read (so model-free features can be replayed offline):

* few-shot prompt (:func:`rag.answering.verdict.yes_no_messages`): best sentence, best two
  sentences of the chunk, whole chunk; the content-free source "N/A" (contextual calibration)
  and the question with no source block at all (PMI baseline);
* zero-shot prompt (no examples, :data:`ZS_SYSTEM`): best two sentences, whole chunk, "N/A".

``fit``: replays rules and logistic models over the recorded features, fitted on one half of
the recorded questions and scored on the other (both ways), and prints the weights fitted on
all of them for ``[answer] yes_no_*``. Report on ``rag eval qa ... --split test``.

    nice -n 10 .venv/bin/python benchmarks/qa_yes_no.py record --index indexes/eval/qa-boolq-dev-6cac19bda4 \
        --split dev --every 2 --out /tmp/yn_dev.jsonl
    .venv/bin/python benchmarks/qa_yes_no.py fit /tmp/yn_dev.jsonl
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


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 30) -> np.ndarray:
    """Newton-Raphson for L2-regularised logistic regression (bias unpenalised); returns
    ``[bias, w_1..w_d]``."""
    Xb = np.hstack([np.ones((len(X), 1)), X])
    w = np.zeros(Xb.shape[1])
    reg = l2 * np.diag(np.r_[0, np.ones(Xb.shape[1] - 1)])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(Xb @ w, -50, 50)))
        g = Xb.T @ (p - y) + reg @ w
        H = (Xb * (p * (1 - p))[:, None]).T @ Xb + reg + 1e-9 * np.eye(len(w))
        w -= np.linalg.solve(H, g)
    return w


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


_NEG = __import__("re").compile(r"\b(?:not|no|never|neither|nor|none|nothing|nobody|cannot|without|unlike|instead|only|except)\b|n't\b", 2)
_WORD = __import__("re").compile(r"[A-Za-z0-9]+(?:'[a-z]+)?")
FIRST_WORDS = ("is", "are", "was", "does", "do", "did", "can", "has", "will", "could")


def lexical(r: dict) -> dict[str, float]:
    """Model-free features of one record (question vs the evidence texts it holds)."""
    from rag.answering.text import STOP_WORDS, stem

    q = r["q"]
    qw = [w.lower() for w in _WORD.findall(q)]
    content = [w for w in qw if w not in STOP_WORDS]
    ch = {stem(w.lower()) for w in _WORD.findall(r["chunk"])}
    tw = {stem(w.lower()) for w in _WORD.findall(r["two"])}
    nums_q = [w for w in qw if any(c.isdigit() for c in w)]
    out = {
        "missing": r["missing"], "overlap": r["overlap"], "dense": r["dense"],
        "miss_two": sum(stem(w) not in tw for w in content) / max(1, len(content)),
        "miss_chunk_n": float(sum(stem(w) not in ch for w in content)),
        "num_miss": float(any(w not in ch for w in nums_q)),
        "neg_sent": float(len(_NEG.findall(r["sent"]))), "neg_two": float(len(_NEG.findall(r["two"]))),
        "neg_q": float(len(_NEG.findall(q))), "q_len": float(len(qw)),
        "q_there": float(qw[:2] in (["is", "there"], ["are", "there"])),
        "q_same": float(bool(set(qw) & {"same", "different", "difference"})),
        "q_ever": float(bool(set(qw) & {"ever", "any", "every", "all", "always"})),
    }
    for fw in FIRST_WORDS:
        out["first_" + fw] = float(qw[:1] == [fw])
    return out


def _matrix(recs: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[r["_f"][n] for n in names] for r in recs], dtype=float)


def _cv(X: np.ndarray, y: np.ndarray, folds: list[np.ndarray], l2: float = 1.0) -> np.ndarray:
    """Out-of-fold logistic z for each row (``folds``: boolean test masks)."""
    z = np.zeros(len(y))
    for te in folds:
        mu, sd = X[~te].mean(0), X[~te].std(0) + 1e-9
        w = fit_logistic((X[~te] - mu) / sd, y[~te], l2)
        z[te] = w[0] + ((X[te] - mu) / sd) @ w[1:]
    return z


def report(recs: list[dict]) -> None:
    for r in recs:
        f = {k: v for k, v in r.items() if k.startswith(("fs_", "zs_"))}
        for v in ("sent", "two", "chunk"):
            f[f"fs_{v}_cal"] = f[f"fs_{v}"] - f["fs_null"]
            f[f"fs_{v}_pmi"] = f[f"fs_{v}"] - f["fs_qonly"]
        for v in ("two", "chunk"):
            f[f"zs_{v}_cal"] = f[f"zs_{v}"] - f["zs_null"]
        f["ens_cal"] = np.mean([f["fs_sent_cal"], f["fs_two_cal"], f["fs_chunk_cal"], f["zs_two_cal"], f["zs_chunk_cal"]])
        f["ens_raw"] = np.mean([f["fs_sent"], f["fs_two"], f["fs_chunk"], f["zs_two"], f["zs_chunk"]])
        f.update(lexical(r))
        r["_f"] = f
    y = np.array([r["gold"] == "yes" for r in recs], dtype=float)
    print(f"{len(recs)} questions, base rate yes {y.mean():.3f}, gold cited {np.mean([r['gold_cited'] for r in recs]):.3f}")
    print("majority (yes)", scores(np.ones_like(y), y))
    names = list(recs[0]["_f"])
    print("AUC per feature (yes vs no):")
    for n in names:
        a = auc(_matrix(recs, [n])[:, 0], y)
        print(f"  {n:14s} {a:.3f}")
    half = np.arange(len(y)) % 2 == 0
    folds2 = [half, ~half]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    folds5 = [np.isin(np.arange(len(y)), perm[i::5]) for i in range(5)]
    sets = {
        "fs_two_cal (current)": ["fs_two", "fs_null"],
        "fs views + nulls": ["fs_sent", "fs_two", "fs_chunk", "fs_null", "fs_qonly"],
        "all model": [n for n in names if n.startswith(("fs_", "zs_")) and not n.endswith(("_cal", "_pmi"))],
        "lexical": list(lexical(recs[0])),
        "all model + lexical": [n for n in names if n.startswith(("fs_", "zs_")) and not n.endswith(("_cal", "_pmi"))]
        + list(lexical(recs[0])),
        "ens_cal + missing + neg": ["ens_cal", "missing", "neg_two", "neg_q"],
        "ens_cal + lex small": ["ens_cal", "missing", "miss_two", "neg_two", "q_there", "first_do", "first_does", "first_can"],
    }
    for name, cols in sets.items():
        X = _matrix(recs, cols)
        for l2 in (1.0, 30.0):
            z2, z5 = _cv(X, y, folds2, l2), _cv(X, y, folds5, l2)
            a = [scores((z2[m] > 0).astype(float), y[m]) for m in folds2]
            print(f"{name:26s} l2 {l2:4.0f} AUC(5-fold) {auc(z5, y):.3f} acc(5-fold) {((z5 > 0) == y).mean():.3f}"
                  f" | halves: {a[0]} || {a[1]}")


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
    f.add_argument("records", nargs="+")
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.index, args.split, args.every, args.offset, args.out, args.limit, not args.no_model,
               not args.no_zero_shot)
        return 0
    recs = [json.loads(x) for p in args.records for x in Path(p).read_text().splitlines() if x.strip()]
    report([r for r in recs if "fs_two" in r])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
