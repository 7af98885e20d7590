"""What conversation records cost: one `RecordStore.add` per answer, and `rag stats` over many.

    python benchmarks/records_overhead.py [--adds 500] [--records 20000]

Prints the p50/p95 of `add` (one fsynced SQLite transaction, WAL mode), the time to read all
records and to compute the stats figures over them (5,000 indexed documents), and the time of
`forget_user` for one user. Everything runs in a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adds", type=int, default=500)
    ap.add_argument("--records", type=int, default=20_000)
    args = ap.parse_args()
    import numpy  # noqa: F401 - imported before timing, as in a running process

    from rag.records import RecordStore
    from rag.stats import compute_stats
    from rag.types import Answer, Citation

    d = Path(tempfile.mkdtemp(prefix="rag-records-"))
    store = RecordStore(d / "records.sqlite")
    ans = Answer(question="Who wrote zlib?", text="Jean-loup Gailly and Mark Adler [1]", query="Who wrote zlib?",
                 citations=(Citation(1, 4, "/d/rfc1950.txt", quote="x" * 300, doc_id="/d/rfc1950.txt"),),
                 timings={"retrieval_s": 0.01, "evidence_s": 0.5, "total_s": 0.52}, generation=3)
    ts = []
    for i in range(args.adds):
        t = time.perf_counter()
        store.add(ans, user_id=f"u{i % 7}", session_id=f"s{i % 40}")
        ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"add: p50 {ts[len(ts) // 2] * 1000:.1f} ms, p95 {ts[int(len(ts) * 0.95)] * 1000:.1f} ms ({args.adds} records)")
    for i in range(args.records - args.adds):
        store.add(ans, user_id=f"u{i % 50}", session_id=None)
    t = time.perf_counter()
    recs = store.records()
    t1 = time.perf_counter()
    compute_stats(recs, documents=[{"doc_id": f"/d/{i}.txt", "source": f"/d/{i}.txt"} for i in range(5000)])
    t2 = time.perf_counter()
    print(f"{len(recs)} records: read {t1 - t:.2f} s, stats {t2 - t1:.2f} s")
    t = time.perf_counter()
    n = store.forget_user("u3")
    print(f"forget_user: {n['records']} records in {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
