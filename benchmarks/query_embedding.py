"""Single-query embedding latency: PyTorch (one thread) vs the ONNX Runtime query encoder.

Embeds real SciFact query strings one at a time with the default embedder, as a search does,
and prints p50/p95 in milliseconds plus the smallest cosine between the two backends' vectors.

    .venv/bin/python benchmarks/query_embedding.py [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.config import EmbeddingConfig  # noqa: E402
from rag.embedding import SentenceTransformerEmbedder  # noqa: E402

QUERIES = ROOT.parent / "shared" / "data" / "beir-scifact" / "queries.jsonl"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    if QUERIES.exists():
        qs = [json.loads(line)["text"] for line in QUERIES.open(encoding="utf-8")][: args.queries]
    else:
        qs = [f"what does study {i} say about protein {i % 17} expression in tumours?" for i in range(args.queries)]
    import torch

    torch.set_num_threads(1)  # the PyTorch row is "1 thread": a single short query gains nothing from more
    rows, vecs = [], {}
    for name, backend in (("PyTorch, 1 thread", "torch"), ("ONNX Runtime (default)", "auto")):
        emb = SentenceTransformerEmbedder(EmbeddingConfig(query_backend=backend))
        if backend == "auto" and emb.query_encoder() is None:
            print("ONNX query encoder unavailable (is onnxruntime installed?)")
            continue
        for q in qs[:10]:
            emb.embed_query(q)  # warm-up: model load, export, caches
        lat, out = [], []
        for q in qs:
            t = time.perf_counter()
            out.append(emb.embed_query(q))
            lat.append((time.perf_counter() - t) * 1000)
        vecs[backend] = np.stack(out)
        rows.append((name, np.percentile(lat, 50), np.percentile(lat, 95)))
    print(f"{len(qs)} SciFact queries, one at a time\n")
    print("| query encoder | p50 ms | p95 ms |\n|---|---|---|")
    for name, p50, p95 in rows:
        print(f"| {name} | {p50:.1f} | {p95:.1f} |")
    if len(vecs) == 2:
        cos = (vecs["torch"] * vecs["auto"]).sum(axis=1)
        print(f"\nsmallest cosine between the two backends' vectors: {cos.min():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
