"""Replay how the chosen span is shortened (runner-up widening, cutting to the question) on the
XQuAD dev split, from the span scorer's ranked spans recorded once through the real pipeline.

``--record N`` asks the first N dev questions through ``RAG.open(INDEX).ask`` and writes, per
question, the gold answers, the route, the short answer and the ranked candidate spans the
scorer passed to :func:`rag.answering.spans.merge_runner_up` (the model's scores). Replaying
then scores the short answer (SQuAD F1/EM, :mod:`rag.eval_qa`) with widening at 0/1/2 nats, with
and without :func:`rag.answering.spans.trim_to_question`, on all rows and on the even/odd rows.

    nice -n 10 .venv/bin/python benchmarks/span_shortening.py --index indexes/eval/qa-xquad-en-<hash> \\
        --record 300 --rows /tmp/spans-dev300.jsonl
    .venv/bin/python benchmarks/span_shortening.py --rows /tmp/spans-dev300.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rag.answering.spans as spans  # noqa: E402
from rag.eval_qa import exact_match, f1_score, load_questions, strip_markers  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qa-xquad-en"


def record(index: str, n: int, out: Path) -> None:
    from rag import RAG

    log: list[dict] = []
    orig = spans.merge_runner_up

    def recording(sentence, ranked, margin=2.0):
        log.append({"sentence": sentence, "ranked": [(float(s), c[0], c[1]) for s, c in ranked[:40]]})
        return orig(sentence, ranked, margin)

    spans.merge_runner_up = recording  # score_spans looks it up in its module
    rag = RAG.open(index)
    rag.ask("warm-up question to load the models?")
    with out.open("w") as f:
        for q in load_questions(DATA, n, "dev"):
            log.clear()
            a = rag.ask(q["question"])
            f.write(json.dumps({"question": q["question"], "golds": q["answers"], "kind": a.kind, "short": a.short,
                                "text": a.text, "abstained": a.abstained, "spans": log[-1] if log else None}) + "\n")
            f.flush()


def short_answer(row: dict, margin: float, trim: bool) -> str:
    """The short answer of ``row`` replayed with widening ``margin`` and optional trimming (rows
    whose short answer did not come from a span keep theirs)."""
    sp = row["spans"]
    if not sp or row["kind"] == "yes_no" or row["abstained"] or not row["short"]:
        return row["short"] or strip_markers(row["text"])
    sent = sp["sentence"]
    ranked = [(s, (a, b)) for s, a, b in sp["ranked"]]
    a, b = spans.merge_runner_up(sent, ranked, margin)
    if trim:
        a, b = spans.trim_to_question(row["question"], sent, a, b)
    return " ".join(sent[a:b].split())


def scores(rows: list[dict], margin: float, trim: bool) -> tuple[float, float]:
    """(F1, EM) of the replayed short answers; abstentions count 0, as in ``rag eval qa``."""
    f1 = em = 0.0
    for r in rows:
        if r["abstained"]:
            continue
        golds = [g for g in r["golds"] if g.strip()] or [""]
        s = short_answer(r, margin, trim)
        f1 += max(f1_score(s, g) for g in golds)
        em += max(exact_match(s, g) for g in golds)
    return f1 / len(rows), em / len(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", required=True, type=Path)
    ap.add_argument("--record", type=int, default=0, help="record the first N dev questions first")
    ap.add_argument("--index", default=None)
    a = ap.parse_args()
    if a.record:
        if not a.index:
            ap.error("--record needs --index")
        record(a.index, a.record, a.rows)
    rows = [json.loads(line) for line in a.rows.read_text().splitlines() if line.strip()]
    print(f"{len(rows)} dev questions; F1 / EM of the short answer (all | even rows | odd rows)")
    for margin in (2.0, 1.0, 0.0):
        for trim in (False, True):
            figs = [scores(sel, margin, trim) for sel in (rows, rows[0::2], rows[1::2])]
            print(f"widening {margin:.0f} nats, trim {'on ' if trim else 'off'}: "
                  + " | ".join(f"{f:.3f} / {e:.3f}" for f, e in figs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
