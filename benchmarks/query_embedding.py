"""Single-query embedding latency: PyTorch (one thread), the ONNX Runtime query encoder and the numpy one.

Embeds real SciFact query strings one at a time, as a search does, and prints p50/p95 in
milliseconds plus the smallest cosine between each backend's vectors and PyTorch's. Then the
cold cost a one-shot ``rag search`` pays: ``--cold`` new processes each for the numpy encoder and
ONNX Runtime, timed from before the embedder import to the first query vector (median); and
per query length (word pieces), one run of each encoder, warm, which sets
``rag.embedding.NUMPY_QUERY_MAX_TOKENS``.

    .venv/bin/python benchmarks/query_embedding.py [--queries 200] [--cold 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.config import EmbeddingConfig  # noqa: E402
from rag.embedding import SentenceTransformerEmbedder  # noqa: E402

QUERIES = ROOT.parent / "shared" / "data" / "beir-scifact" / "queries.jsonl"


_COLD = """
import sys, time
t = time.perf_counter()
from rag.embedding import SentenceTransformerEmbedder, use_numpy_for_first_query
if sys.argv[1] == "numpy":
    use_numpy_for_first_query()  # as rag search does
e = SentenceTransformerEmbedder()
e.embed_query(sys.argv[2])
print(time.perf_counter() - t, "onnxruntime" in sys.modules)
"""


def cold(query: str, runs: int) -> None:
    """Print the median seconds from the embedder import to the first vector in new processes."""
    print(f"\nCold: a new process imports rag.embedding (numpy included) and embeds one query ({runs} "
          "processes each, median; interpreter start-up not counted)\n")
    print("| encoder | to first vector, median ms | max ms | imports onnxruntime |\n|---|---|---|---|")
    for name, which in (("numpy (default in a new process)", "numpy"), ("ONNX Runtime", "onnx")):
        subprocess.run([sys.executable, "-c", _COLD, which, query], check=True, capture_output=True)  # priming
        got = [subprocess.run([sys.executable, "-c", _COLD, which, query], check=True, capture_output=True,
                              text=True).stdout.split() for _ in range(runs)]
        ms = [float(g[0]) * 1000 for g in got]
        print(f"| {name} | {statistics.median(ms):.0f} | {max(ms):.0f} | {got[0][1]} |")


def by_length() -> None:
    """Print one warm run of each encoder per query length (word pieces)."""
    emb = SentenceTransformerEmbedder()
    fast, onnx = emb.numpy_query_encoder(), emb.query_encoder()
    if fast is None or onnx is None:
        return
    words = "retrieval augmented generation grounds answers in passages of the corpus".split()
    print("\nWarm, by length (median of 10 runs)\n\n| word pieces | numpy ms | ONNX Runtime ms |\n|---|---|---|")
    for n in (8, 16, 32, 64, 128, 256):
        text = " ".join((words * 40)[: n - 2])
        pieces = fast.tokenize(text)[0].shape[0]
        row = []
        for f in (fast.encode, onnx.encode):
            f(text)
            lat = []
            for _ in range(10):
                t = time.perf_counter()
                f(text)
                lat.append((time.perf_counter() - t) * 1000)
            row.append(statistics.median(lat))
        print(f"| {pieces} | {row[0]:.1f} | {row[1]:.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--cold", type=int, default=7, help="new processes per encoder for the cold figures (0: none)")
    args = ap.parse_args()
    if QUERIES.exists():
        qs = [json.loads(line)["text"] for line in QUERIES.open(encoding="utf-8")][: args.queries]
    else:
        qs = [f"what does study {i} say about protein {i % 17} expression in tumours?" for i in range(args.queries)]
    import torch

    torch.set_num_threads(1)  # the PyTorch row is "1 thread": a single short query gains nothing from more
    rows, vecs = [], {}
    for name, backend in (("PyTorch, 1 thread", "torch"), ("ONNX Runtime (warm processes)", "auto"),
                          ("numpy (cold processes)", "numpy")):
        emb = SentenceTransformerEmbedder(EmbeddingConfig(query_backend="torch" if backend == "torch" else "auto"))
        if backend == "auto" and emb.query_encoder() is None:
            print("ONNX query encoder unavailable (is onnxruntime installed?)")
            continue
        embed = emb.embed_query
        if backend == "numpy":
            fast = emb.numpy_query_encoder()
            if fast is None:
                print("numpy query encoder unavailable for this model")
                continue
            embed = fast.encode
        for q in qs[:10]:
            embed(q)  # warm-up: model load, export, caches
        lat, out = [], []
        for q in qs:
            t = time.perf_counter()
            out.append(embed(q))
            lat.append((time.perf_counter() - t) * 1000)
        vecs[backend] = np.stack(out)
        rows.append((name, backend, np.percentile(lat, 50), np.percentile(lat, 95)))
    print(f"{len(qs)} SciFact queries, one at a time\n")
    print("| query encoder | p50 ms | p95 ms | smallest cosine with PyTorch |\n|---|---|---|---|")
    for name, backend, p50, p95 in rows:
        cos = (vecs["torch"] * vecs[backend]).sum(axis=1).min() if "torch" in vecs else float("nan")
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {cos:.6f} |")
    if args.cold:
        cold(qs[0], args.cold)
        by_length()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
