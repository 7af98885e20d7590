"""``rag eval qa`` with the per-question rows kept (answer, short answer, route, TTFT, span margin,
P(yes)), for choosing margins and for error analysis.

    nice -n 10 .venv/bin/python benchmarks/qa_eval_rows.py ../shared/data/qa-xquad-en --split test --out /tmp/xq.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rag.eval_qa import run_eval_qa  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--split", default="all")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--ood-limit", type=int, default=100)
    ap.add_argument("--index", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = run_eval_qa(a.dataset, index_dir=a.index, limit=a.limit, split=a.split, ood_limit=a.ood_limit, per_question=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
