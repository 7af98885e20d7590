"""Tune the span scorer of rag.answering offline, on the XQuAD dev split.

The model cost of span scoring is paid once: for each question the script retrieves through the
real pipeline (``RAG.open(INDEX)``), takes the best supporting sentence, and records for every
candidate span of the 16 likeliest start words its log-likelihood with the question and
without it (``NULL_QUESTION``, for PMI), the first-token log-probability, the type prior and
the distance to the question's words. The scoring rule is then replayed for a grid of settings
(length bonus per question type, proximity weight, PMI weight, start words kept, starts
re-scored for PMI) and the best are printed with contains-gold and F1. Confirm a choice with
``rag eval qa ... --split dev`` and report it with ``--split test``.

    .venv/bin/python benchmarks/span_tuning.py --index indexes/xquad --limit 150 [--dump /tmp/spans.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag import RAG  # noqa: E402
from rag.answering import merge_runner_up, question_type, span_logprobs  # noqa: E402
from rag.answering.spans import (  # noqa: E402
    NULL_QUESTION,
    SPAN_END_TEXT,
    SPAN_PROXIMITY_CAP,
    candidate_spans,
    span_messages,
)
from rag.answering.spans import type_prior as _type_prior  # noqa: E402
from rag.answering.text import STOP_WORDS as _SPAN_STOP  # noqa: E402
from rag.answering.text import WORD_RE as _WORD_RE  # noqa: E402
from rag.answering.text import stem as _stem  # noqa: E402
from rag.answering.text import stems as _stems  # noqa: E402
from rag.config import AnswerConfig  # noqa: E402

SPAN_MERGE_MARGIN = AnswerConfig().span_merge_margin
from rag.eval_qa import f1_score, load_questions, normalize_answer  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qa-xquad-en"


def _score_rows(rows, starts):
    """{(start, end): log P(span + " [")} from token_logprobs rows (one per start word)."""
    out = {}
    for (s, cs), row in zip(starts.items(), rows):
        if row is not None:
            for c, lp in zip(cs, span_logprobs(row, s, cs)):
                if lp is not None:
                    out[(c[0], c[1])] = lp
    return out


def dump(index: str, limit: int, split: str) -> list[dict]:
    rag = RAG.open(index)
    ans = rag.answerer
    gen = ans.generator
    out = []
    t0 = time.perf_counter()
    for qi, q in enumerate(load_questions(DATA, limit, split)):
        question = q["question"]
        hits = rag.search(question)
        ev = ans.evidence(question, hits)
        rec = {"q": question, "gold": q["answers"], "qtype": question_type(question), "abstain": ans.should_abstain(ev),
               "cands": []}
        if ev.sentences and not rec["abstain"]:
            sent = ev.sentences[0]
            rec["sentence"] = sent.text
            title = sent.hit.chunk.title or sent.hit.chunk.source or ""
            starts: dict[int, list] = {}
            for c in candidate_spans(question, sent.text):
                starts.setdefault(c[0], []).append(c)
            seqs = [sent.text[s:max(c[1] for c in cs)] for s, cs in starts.items()]
            bonus = [_type_prior(cs[0][2][:1], rec["qtype"]) for cs in starts.values()]
            rows = gen.token_logprobs(span_messages(question, title, sent.text), seqs, end_text=SPAN_END_TEXT,
                                      top_first=16, first_bonus=bonus)
            cond = _score_rows(rows, starts)
            scored = {s: cs for (s, cs), r in zip(starts.items(), rows) if r is not None}
            null_rows = gen.token_logprobs(span_messages(NULL_QUESTION, title, sent.text),
                                           [sent.text[s:max(c[1] for c in cs)] for s, cs in scored.items()],
                                           end_text=SPAN_END_TEXT)
            null = _score_rows(null_rows, scored)
            first = {s: r[1][0] for (s, _), r in zip(starts.items(), rows) if r is not None}
            words = [(m.start(), m.end(), m.group(0)) for m in _WORD_RE.finditer(sent.text)]
            q_stems = _stems(question)
            q_pos = [k for k, w in enumerate(words) if w[2].lower() not in _SPAN_STOP and _stem(w[2].lower()) in q_stems]
            w_at = {w[0]: k for k, w in enumerate(words)}
            w_end = {w[1]: k for k, w in enumerate(words)}
            for s, cs in scored.items():
                for c in cs:
                    if (c[0], c[1]) not in cond:
                        continue
                    a, b = w_at[c[0]], w_end[c[1]]
                    dist = min([a - p for p in q_pos if p < a] + [p - b for p in q_pos if p > b] + [SPAN_PROXIMITY_CAP])
                    rec["cands"].append({"start": s, "text": sent.text[c[0]:c[1]], "nw": len(c[2]), "lp": cond[(c[0], c[1])],
                                         "lp_null": null.get((c[0], c[1])), "first": first[s] + _type_prior(c[2][:1], rec["qtype"]),
                                         "prior": _type_prior(c[2], rec["qtype"]), "dist": dist})
        out.append(rec)
        if qi % 25 == 0:
            print(f"{qi} questions, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def replay(rec: dict, lb: dict, prox: float, beta: float, top_starts: int, pmi_starts: int,
           merge: float = SPAN_MERGE_MARGIN) -> str:
    """The answer GroundedAnswerer._spans would give with these settings."""
    cands = rec["cands"]
    if not cands:
        return ""
    firsts = {}
    for c in cands:
        firsts.setdefault(c["start"], c["first"])
    keep = set(sorted(firsts, key=lambda s: -firsts[s])[:top_starts])
    b = lb.get(rec["qtype"], 0.0)
    by_start: dict[int, list] = {}
    for c in cands:
        if c["start"] in keep:
            rest = c["prior"] + b * (c["nw"] - 1) - prox * min(c["dist"], SPAN_PROXIMITY_CAP)
            by_start.setdefault(c["start"], []).append((c, rest))
    order = sorted(by_start, key=lambda s: -max(c["lp"] + r for c, r in by_start[s]))
    if beta:
        order = order[:pmi_starts]
    ranked = sorted(((c["lp"] - beta * (c["lp_null"] if c["lp_null"] is not None else c["lp"]) + rest,
                      (c["start"], c["start"] + len(c["text"]))) for s in order for c, rest in by_start[s]),
                    key=lambda x: -x[0])
    if not ranked:
        return ""
    if "sentence" not in rec:  # dumps before the sentence was recorded: no widening
        s, e = ranked[0][1]
        return next(c["text"] for c in cands if c["start"] == s and c["start"] + len(c["text"]) == e)
    s, e = merge_runner_up(rec["sentence"], ranked, merge)
    return rec["sentence"][s:e]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True, help="index of qa-xquad-en/passages.jsonl")
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--dump", default=None, help="reuse / write the recorded scores here (JSON)")
    args = ap.parse_args()
    if args.dump and Path(args.dump).exists():
        recs = json.loads(Path(args.dump).read_text())
    else:
        recs = dump(args.index, args.limit, args.split)
        if args.dump:
            Path(args.dump).write_text(json.dumps(recs))
    rows = []
    for other, num, name, prox, beta, ts, ps in itertools.product(
            (0.25, 0.5, 1.0, 2.0), (0.5, 1.0), (1.0, 1.5), (0.2, 0.4, 0.8), (0.0, 0.25, 0.4, 0.5), (8, 12, 16), (4, 16)):
        lb = {"other": other, "number": num, "date": num, "person": name, "place": name}
        con = f1 = 0.0
        for r in recs:
            a = replay(r, lb, prox, beta, ts, ps)
            con += any(normalize_answer(g) in normalize_answer(a) for g in r["gold"]) if a else 0
            f1 += max(f1_score(a, g) for g in r["gold"]) if a else 0
        rows.append((con / len(recs), f1 / len(recs), other, num, name, prox, beta, ts, ps))
    rows.sort(key=lambda x: (-x[0], -x[1]))
    print(f"{len(recs)} {args.split} questions\n")
    print("| contains | F1 | bonus other | bonus number/date | bonus person/place | proximity | PMI weight | starts | PMI starts |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows[:20]:
        print("| " + " | ".join(f"{x:.3f}" if i < 2 else str(x) for i, x in enumerate(r)) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
