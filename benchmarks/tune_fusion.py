"""Choose the hybrid fusion defaults by measurement, without tuning on the test queries.

For every query the dense and BM25 candidate lists (max-pooled per document, depth 100) are
computed once; then each fusion setting is scored with pytrec_eval's nDCG@10:
  - RRF (Cormack et al. 2009) with k in {10, 30, 60, 100} and dense:sparse weights;
  - convex combination (Bruch et al. 2023) with min-max or z-score normalisation, alpha 0..1.
Settings are ranked on a *tuning* split (SciFact train qrels) and the chosen one is reported on
held-out sets (SciFact test; XQuAD passages as question -> gold passage retrieval).

Usage:
    python benchmarks/tune_fusion.py --index indexes/scifact --dataset ../shared/data/beir-scifact \
        --tune-split train --test-split test [--xquad-index indexes/xquad --xquad ../shared/data/qa-xquad-en]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag import RAG  # noqa: E402
from rag.eval_retrieval import load_beir  # noqa: E402
from rag.fusion import convex, rrf  # noqa: E402


def lists_for(rag: RAG, queries: dict[str, str], depth: int = 100):
    out = {}
    doc_keys: dict[str, int] = {}
    for qid, text in queries.items():
        per = {}
        for mode in ("dense", "bm25"):
            # documents are keyed by a per-document integer so both lists name a document alike
            hits = rag.search(text, top_k=depth, mode=mode, aggregate="document")
            names = [str(h.chunk.metadata.get("record_id", h.chunk.doc_id)) for h in hits]
            keys = [doc_keys.setdefault(n, len(doc_keys)) for n in names]
            per[mode] = (np.array(keys, dtype=np.int64), np.array([h.score for h in hits], dtype=np.float32),
                         dict(zip(keys, names)))
        out[qid] = per
    return out


def ndcg10(lists, qrels, fuse) -> float:
    import pytrec_eval

    run = {}
    for qid, per in lists.items():
        fused = fuse(per["dense"], per["bm25"])
        names = {**per["dense"][2], **per["bm25"][2]}
        ranking = {}
        for cid, _ in fused[:100]:
            d = names[cid]
            if d not in ranking:
                ranking[d] = float(100 - len(ranking))
        run[qid] = ranking or {"none": 0.0}
    ev = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in lists}, {"ndcg_cut_10"})
    return float(np.mean([v["ndcg_cut_10"] for v in ev.evaluate(run).values()]))


def settings():
    yield "dense only", lambda d, s: list(zip(d[0].tolist(), d[1].tolist()))
    yield "bm25 only", lambda d, s: list(zip(s[0].tolist(), s[1].tolist()))
    for k in (10, 30, 60, 100):
        for w in ((1.0, 1.0), (1.0, 0.5), (0.5, 1.0), (1.0, 0.75), (0.75, 1.0)):
            yield f"rrf k={k} w={w}", (lambda k, w: lambda d, s: rrf([d[0].tolist(), s[0].tolist()], k=k, weights=list(w)))(k, w)
    for norm in ("minmax", "zscore"):
        for a in np.round(np.arange(0.1, 0.95, 0.05), 2):
            yield f"convex {norm} alpha={a}", (lambda a, norm: lambda d, s: convex([(d[0], d[1]), (s[0], s[1])],
                                                                                  weights=[a, 1 - a], norm=norm))(float(a), norm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--tune-split", default="train")
    ap.add_argument("--test-split", default="test")
    ap.add_argument("--xquad-index", default=None)
    ap.add_argument("--xquad", default=None)
    ap.add_argument("--json", default=None, help="write all scores here")
    args = ap.parse_args()
    rag = RAG.open(args.index)
    _, tq, tqrels = load_beir(args.dataset, args.tune_split)
    _, sq, sqrels = load_beir(args.dataset, args.test_split)
    tune = lists_for(rag, tq)
    test = lists_for(rag, sq)
    xq = None
    if args.xquad_index and args.xquad:
        xr = RAG.open(args.xquad_index)
        _, xqq, xqrels = load_beir(args.xquad, "test")
        xq = (lists_for(xr, xqq), xqrels)
    rows = []
    for name, fuse in settings():
        row = {"setting": name, "tune": ndcg10(tune, tqrels, fuse), "test": ndcg10(test, sqrels, fuse)}
        if xq:
            row["xquad"] = ndcg10(xq[0], xq[1], fuse)
        rows.append(row)
    rows.sort(key=lambda r: -r["tune"])
    print(f"| setting | SciFact {args.tune_split} (tuning) | SciFact {args.test_split} | " + ("XQuAD |" if xq else ""))
    print("|---|---|---|" + ("---|" if xq else ""))
    for r in rows[:12] + [r for r in rows if r["setting"] in ("dense only", "bm25 only", "rrf k=60 w=(1.0, 1.0)")]:
        print(f"| {r['setting']} | {r['tune']:.4f} | {r['test']:.4f} |" + (f" {r['xquad']:.4f} |" if xq else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
