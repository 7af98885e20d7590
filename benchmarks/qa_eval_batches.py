"""``rag eval qa`` in batches that are written as they finish, so a long run on a busy machine
leaves usable figures when it is cut short. Same pipeline and metrics as ``rag eval qa``
(:func:`rag.eval_qa.evaluate_qa` on each batch of the evenly spread questions); ``--merge``
prints the figures of the batches written so far.

    nice -n 10 .venv/bin/python benchmarks/qa_eval_batches.py ../shared/data/qa-xquad-en --split test --limit 300 \\
        --index indexes/eval/qa-xquad-en-<hash> --out /tmp/xq-batches
    .venv/bin/python benchmarks/qa_eval_batches.py ../shared/data/qa-xquad-en --out /tmp/xq-batches --merge
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.eval_qa import evaluate_qa, load_ood_questions, load_questions  # noqa: E402


def merge(out: Path) -> dict:
    """Figures over all batch files in ``out`` (weighted by questions; TTFT median of rows)."""
    parts = [json.loads(p.read_text()) for p in sorted(out.glob("batch-*.json"))]
    qa = [p for p in parts if p["n_questions"]]
    n = sum(p["n_questions"] for p in qa)
    res: dict = {"n_questions": n, "batches": len(qa)}
    for m in ("exact_match", "f1", "contains", "false_abstention", "gold_passage_cited", "yes_no_accuracy",
              "yes_no_undecided", f"retrieval_hit_rate_at_5"):
        if all(m in p for p in qa) and qa:
            res[m] = sum(p[m] * p["n_questions"] for p in qa) / n
    n_cit = sum(p["n_citations"] for p in qa)
    res["citation_precision"] = sum((p["citation_precision"] or 0) * p["n_citations"] for p in qa) / n_cit if n_cit else None
    res["dangling_citations"] = sum(p["dangling_citations"] for p in qa)
    rows = [r for p in qa for r in p.get("rows", [])]
    tt = [r["ttft"] for r in rows if r.get("ttft") is not None]
    res["ttft_p50_s"] = statistics.median(tt) if tt else None
    kinds: dict = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r)
    res["by_kind_n"] = {k: len(v) for k, v in sorted(kinds.items())}
    ood = [p for p in parts if p.get("n_ood")]
    if ood:
        res["abstention_ood"] = sum(p["abstention_ood"] * p["n_ood"] for p in ood) / sum(p["n_ood"] for p in ood)
        res["n_ood"] = sum(p["n_ood"] for p in ood)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--split", default="all")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--ood-limit", type=int, default=100)
    ap.add_argument("--index", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--merge", action="store_true")
    ap.add_argument("--exclude-limit", type=int, default=None,
                    help="leave out the questions a run with --limit N took (to complete a split in two runs)")
    ap.add_argument("--prefix", default="batch", help="batch file name prefix (a second run writes beside the first)")
    a = ap.parse_args()
    out = Path(a.out)
    if a.merge:
        print(json.dumps(merge(out), indent=1))
        return 0
    from rag import RAG

    out.mkdir(parents=True, exist_ok=True)
    d = Path(a.dataset)
    rag = RAG.open(a.index)
    rag.ask("warm-up question to load the models?")
    qs = load_questions(d, a.limit, a.split)
    if a.exclude_limit:
        taken = {q["id"] for q in load_questions(d, a.exclude_limit, a.split)}
        qs = [q for q in qs if q["id"] not in taken]
    with tempfile.TemporaryDirectory() as tmp:
        ood_path = d.parent / "beir-scifact" / "queries.jsonl"
        if a.ood_limit and ood_path.exists() and not (out / "batch-ood.json").exists():
            sub = Path(tmp) / "ood"
            sub.mkdir()
            (sub / "passages.jsonl").symlink_to((d / "passages.jsonl").resolve())
            (sub / "questions.jsonl").write_text("")
            res = evaluate_qa(sub, rag.ask, stream=rag.stream, ood_questions=load_ood_questions(ood_path, a.ood_limit))
            (out / "batch-ood.json").write_text(json.dumps(res))
        for b in range(0, len(qs), a.batch):
            sub = Path(tmp) / f"b{b}"
            sub.mkdir()
            (sub / "passages.jsonl").symlink_to((d / "passages.jsonl").resolve())
            (sub / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs[b : b + a.batch]))
            res = evaluate_qa(sub, rag.ask, stream=rag.stream, per_question=True)
            (out / f"{a.prefix}-{b:05d}.json").write_text(json.dumps(res))
    print(json.dumps(merge(out), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
