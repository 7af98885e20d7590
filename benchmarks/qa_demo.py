"""Ask the demo questions (tests/fixtures/demo_questions.jsonl) of an index of corpora/ and print
each answer, its route, time to the first piece and whether it passes the test's rule.

    .venv/bin/rag ingest corpora --index indexes/demo
    .venv/bin/python benchmarks/qa_demo.py --index indexes/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from rag import RAG, Answer  # noqa: E402
from test_answering_demo import demo_questions, judge  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True)
    args = ap.parse_args()
    rag = RAG.open(args.index)
    rag.ask("warm-up question to load the models?")
    ok = 0
    qs = demo_questions()
    for q in qs:
        t0 = time.perf_counter()
        ttft, ans = None, None
        for item in rag.stream(q["question"]):
            if isinstance(item, Answer):
                ans = item
            elif ttft is None:
                ttft = time.perf_counter() - t0
        why = judge(q, ans)
        ok += not why
        srcs = ", ".join(sorted({Path(c.source).name for c in ans.citations}))
        print(f"[{'ok' if not why else 'FAIL: ' + why}] ({ans.kind}, {ttft or 0:.2f} s) {q['question']}\n    {ans.text}\n    cites: {srcs}")
    print(f"\n{ok} / {len(qs)} pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
