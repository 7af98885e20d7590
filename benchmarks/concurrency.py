"""One long-lived RAG shared by N threads doing search and ask while another process commits.

Prints the counts the issue-12 acceptance asks for: threads, searches, asks, commits seen,
errors, generations seen, and how many results named a generation their hits did not come
from (must be 0). Each commit rewrites a marker file whose text names the commit number, so a
result's hits can be checked against ``SearchResult.generation`` / ``Answer.generation``.

    python benchmarks/concurrency.py [--seconds 60] [--threads 8] [--embedder testing:hash-64]
                                     [--generator extractive] [--corpus tests/data/mini]

Defaults use the fake embedder and the extractive generator (no model load; the point is the
engine's concurrency, not model speed). Exit code 1 when any error or mismatch occurred.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COMMITTER = """
import sys, time
from pathlib import Path
from rag import RAG
from rag.config import RagConfig
idx, marker, until, emb = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rag = RAG.open(idx, RagConfig.from_dict({"embedding": {"model": emb}}))
k = 0
while time.time() < until:
    k += 1
    marker.write_text(f"Epochmarker zebra number {k}. This file changes on every commit.\\n")
    rep = rag.ingest([marker], wait_s=60)
    print(rep.generation, k, flush=True)
"""


def marker_epoch(hits) -> int | None:
    for h in hits:
        words = h.chunk.text.split()
        if words and words[0] == "Epochmarker":
            return int(words[3].rstrip("."))
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--embedder", default="testing:hash-64")
    ap.add_argument("--generator", default="extractive")
    ap.add_argument("--corpus", default=str(ROOT / "tests" / "data" / "mini"))
    ap.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = ap.parse_args()

    from rag import RAG
    from rag.config import RagConfig

    work = Path(tempfile.mkdtemp(prefix="rag-concurrency-"))
    try:
        cfg = RagConfig.from_dict({"embedding": {"model": args.embedder}, "generation": {"backend": args.generator}})
        idx, marker = work / "idx", work / "marker.txt"
        marker.write_text("Epochmarker zebra number 0. This file changes on every commit.\n")
        base = RAG.create(idx, cfg).ingest([args.corpus, str(marker)]).generation
        rag = RAG.open(idx, cfg)
        rag.warm_up()
        until = time.time() + args.seconds
        proc = subprocess.Popen([sys.executable, "-c", COMMITTER, str(idx), str(marker), str(until), args.embedder],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        counts = {"searches": 0, "asks": 0, "errors": 0, "mismatches": 0}
        gens: set[int] = set()
        first_errors: list[str] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            while time.time() < until:
                try:
                    if i % 2:
                        res = rag.search_result("epochmarker zebra", top_k=5)
                        kind, gen, hits = "searches", res.generation, res.hits
                    else:
                        ans = rag.ask("epochmarker zebra number?", top_k=5)
                        kind, gen, hits = "asks", ans.generation, ans.hits
                    ok = marker_epoch(hits) == gen - base
                    with lock:
                        counts[kind] += 1
                        counts["mismatches"] += int(not ok)
                        gens.add(gen)
                except Exception as e:  # noqa: BLE001 - counted and shown
                    with lock:
                        counts["errors"] += 1
                        if len(first_errors) < 5:
                            first_errors.append(f"{type(e).__name__}: {e}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out, err = proc.communicate(timeout=300)
        wall = time.perf_counter() - t0
        commits = [line for line in out.splitlines() if line.strip()]
        result = {"threads": args.threads, "seconds": round(wall, 1), **counts, "commits": len(commits),
                  "committer_exit": proc.returncode, "generations_seen": len(gens),
                  "generation_range": [min(gens), max(gens)] if gens else None,
                  "embedder": args.embedder, "generator": args.generator}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for k, v in result.items():
                print(f"{k:>18}: {v}")
        for e in first_errors:
            print("error:", e)
        if proc.returncode != 0:
            print(err.strip().splitlines()[-1] if err.strip() else "committer failed")
        bad = counts["errors"] or counts["mismatches"] or proc.returncode != 0
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
