"""Scale benchmark: build time, peak memory, HNSW recall and query latency at 100k / 1M chunks.

Synthetic corpus with the structure real embeddings have, real query text, product code paths.

Vectors (384-d, float32, unit length): ``x = normalize(centre[c] + B[c] @ z)`` with

- 2,000 cluster centres ``normalize(g*mu + t_c + ws*S[s(c)])``: a shared mean direction ``mu``
  (real MiniLM vectors share one: mean pairwise cosine ~0.13), a topic vector ``t_c`` with a
  decaying (1/j) spectrum in a random rotation, and one of 50 super-topic directions ``S``
  (related clusters, which give real corpora their high top-10 neighbour cosines);
- a low-rank basis ``B[c]`` (24 orthonormal directions; a pool of 256 bases shared round-robin
  by the clusters): each cluster is a 24-d sheet, not a 384-d ball. Real sentence embeddings
  have low intrinsic dimension; isotropic 384-d noise around centres (this script's previous
  version) makes all neighbours nearly equidistant, a worst case no real corpus shows;
- ``z ~ N(0, sigma_c^2 I)``, ``sigma_c = 0.17 * exp(0.3 * N(0, 1))`` (clusters differ in
  tightness). These constants were chosen so that, on a 5,183-vector sample, the top-1 and
  top-10 neighbour-cosine distributions, the mean pairwise cosine and the participation-ratio
  dimension resemble those of the 5,183 real all-MiniLM-L6-v2 SciFact abstract vectors; both
  are printed (``--real-vectors``, an (n, 384) float32 ``.npy``).

Queries: fresh points drawn from the same generative process (not copies of data points) are
the dense query vectors (recall and dense search). The query *text* is a real SciFact query
string: it is embedded by ``rag.embedding.SentenceTransformerEmbedder().embed_query`` (the
product's path: ONNX Runtime when available, else one torch thread), and that time is included in the dense and hybrid latencies,
but the vector searched is the synthetic query (a real query vector is out of distribution for a
synthetic corpus). BM25 searches the real query text.

Texts: ~60 words per chunk (Poisson lengths), words drawn Zipf (p(r) ~ r^-1.1) over a 50k-word
vocabulary: SciFact's words ranked by frequency (padded with made-up words), so the text is
English-like and real queries hit realistic posting lists.

Phases, each in its own subprocess so peak RSS (``ru_maxrss``) belongs to it alone:

1. build: generate texts, build BM25 (``rag.index.sparse.BM25Index.build``), save it, free it
   and the texts; generate vectors in batches into ``rag.index.dense.DenseIndex`` (reserved),
   save; exact top-10 of the queries by brute-force inner product over the same stored vectors
   (``faiss.knn``, what ``IndexFlatIP`` computes, blocked, no copy).
2. serve: a fresh process loads ``dense.faiss`` and the BM25 folder from disk
   (``DenseIndex.load`` / ``BM25Index.load``) and the embedder, measures HNSW recall@10 against
   the exact top-10 (raising ``ef_search`` until >= 0.95 if the default falls short), then times
   >= 200 queries after a warm-up: BM25 alone, embedding alone, dense (embedding + search),
   hybrid (BM25 search on a worker thread while the query is embedded and searched densely, as
   ``rag.retrieval.HybridRetriever`` does; ``candidate_depth`` each, fused with the product default of ``RetrievalConfig``: convex, alpha, z-score norm, or RRF).

Memory is compared with the raw data: float32 vectors (n*384*4 bytes) + the chunk text bytes
(what the docstore holds). The docstore (SQLite) itself is not built here.

Usage::

    python benchmarks/scale.py --sizes 100000
    nohup python benchmarks/scale.py --sizes 1000000 --out benchmarks/results/scale.md > /tmp/scale_1m.txt 2>&1 &
    python benchmarks/scale.py --segments --sizes 1000000 --out benchmarks/results/segments.md   # commits on segments
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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
REAL_VECTORS = "/tmp/bm/scifact_vecs.npy"

DIM = 384
GEN = dict(n_centres=2000, rank=24, sigma=0.17, tight=0.3, g=1.0, alpha=1.0, n_super=50, ws=1.5, pool=256)
ZIPF_S = 1.1
BATCH = 50_000  # texts / vectors per generation batch
EF_SWEEP = (128, 192, 256, 384, 512, 768, 1024)


def maxrss_mb() -> float:
    """Peak resident set size of this process (``ru_maxrss``, KiB on Linux) in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class VectorGenerator:
    """The generative process of the module docstring; ``make(m)`` draws ``m`` fresh vectors."""

    def __init__(self, seed: int, n_centres: int, rank: int, sigma: float, tight: float, g: float,
                 alpha: float, n_super: int, ws: float, pool: int):
        rng = np.random.default_rng(seed)
        mu = rng.standard_normal(DIM)
        mu /= np.linalg.norm(mu)
        rot, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
        sd = np.arange(1, DIM + 1) ** (-alpha / 2)
        sd /= np.sqrt((sd ** 2).sum())
        topic = (rng.standard_normal((n_centres, DIM)) * sd) @ rot.T
        topic /= np.linalg.norm(topic, axis=1, keepdims=True)
        sup = (rng.standard_normal((n_super, DIM)) * sd) @ rot.T
        sup /= np.linalg.norm(sup, axis=1, keepdims=True)
        c = g * mu + topic + ws * sup[rng.integers(0, n_super, n_centres)]
        self.centres = (c / np.linalg.norm(c, axis=1, keepdims=True)).astype(np.float32)
        self.bases = np.stack([np.linalg.qr(rng.standard_normal((DIM, rank)))[0].T
                               for _ in range(pool)]).astype(np.float32)  # (pool, rank, DIM)
        self.csig = (sigma * np.exp(tight * rng.standard_normal(n_centres))).astype(np.float32)
        self.rank, self.pool, self.n_centres = rank, pool, n_centres
        self.rng = np.random.default_rng(seed + 1000)

    def make(self, m: int) -> np.ndarray:
        lab = self.rng.integers(0, self.n_centres, m)
        x = self.centres[lab]
        z = self.rng.standard_normal((m, self.rank), dtype=np.float32) * self.csig[lab][:, None]
        p = lab % self.pool
        order = np.argsort(p, kind="stable")
        for grp in np.split(order, np.flatnonzero(np.diff(p[order])) + 1):
            x[grp] += z[grp] @ self.bases[p[grp[0]]]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def neighbour_stats(x: np.ndarray) -> dict:
    """Top-1 / top-10 neighbour cosine percentiles (5, 25, 50, 75, 95), mean pairwise cosine,
    participation-ratio dimension of ``x`` (unit rows)."""
    from rag.index.dense import _faiss

    faiss = _faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    s, _ = faiss.knn(x, x, 11, faiss.METRIC_INNER_PRODUCT)
    pairs = np.random.default_rng(0).integers(0, len(x), (20000, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    ev = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    ev /= ev.sum()
    q = [5, 25, 50, 75, 95]
    return {"n": len(x), "top1": np.percentile(s[:, 1], q).tolist(), "top10": np.percentile(s[:, 10], q).tolist(),
            "pair_mean": float((x[pairs[:, 0]] * x[pairs[:, 1]]).sum(1).mean()),
            "pr_dim": float(1 / np.sum(ev ** 2))}


def vocabulary(size: int) -> list[str]:
    """``size`` words, most frequent first: SciFact's words by frequency, padded if needed."""
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


def query_texts(n: int) -> list[str]:
    """``n`` real SciFact query strings (cycled), or made-up ones without the data."""
    out: list[str] = []
    if (SCIFACT / "queries.jsonl").exists():
        with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as f:
            out = [json.loads(line)["text"] for line in f]
    if not out:
        vocab = vocabulary(5000)
        rng = np.random.default_rng(0)
        out = [" ".join(rng.choice(vocab, 8)) for _ in range(n)]
    return [out[i % len(out)] for i in range(n)]


def texts(n: int, vocab: list[str], words_per_chunk: int, seed: int) -> list[str]:
    """``n`` chunk texts of Zipf(s=1.1)-distributed words (lengths ~ Poisson around the mean)."""
    rng = np.random.default_rng(seed + 1)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** ZIPF_S
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


# --------------------------------------------------------------------------- phase 1: build
def build(n: int, work: Path, args: argparse.Namespace) -> dict:
    from rag.config import BM25Config, RetrievalConfig
    from rag.index.dense import DenseIndex, _faiss
    from rag.index.sparse import BM25Index

    faiss = _faiss()
    res: dict = {"n": n, "base_rss_mb": maxrss_mb()}
    vocab = vocabulary(args.vocab)
    t0 = time.perf_counter()
    chunk_texts = texts(n, vocab, args.words, args.seed)
    res["gen_text_s"] = time.perf_counter() - t0
    res["text_mb"] = sum(len(t.encode("utf-8")) for t in chunk_texts) / 2**20
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # arbitrary, not 0..n-1

    t0 = time.perf_counter()
    bm25 = BM25Index.build(chunk_texts, ids, BM25Config())
    res["bm25_build_s"] = time.perf_counter() - t0
    res["postings"] = int(bm25.data.shape[0])
    bm25.save(work / "sparse")
    del bm25, chunk_texts

    threshold = args.ann_threshold or RetrievalConfig().ann_threshold
    kind = "hnsw" if n >= threshold else "flat"
    gen = VectorGenerator(args.seed, **GEN)
    dense = DenseIndex.empty(DIM, kind)
    dense.reserve(n)
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        m = min(BATCH, n - s)
        dense.add(gen.make(m), ids[s:s + m], check_ids=False)
    res["dense_build_s"] = time.perf_counter() - t0
    res["kind"] = dense.kind
    res["vectors_mb"] = n * DIM * 4 / 2**20
    dense.save(work / "dense.faiss")
    res["dense_file_mb"] = folder_mb(work / "dense.faiss")
    res["sparse_file_mb"] = folder_mb(work / "sparse")

    # fresh in-distribution queries and their exact top-10 over the same stored vectors
    qv = gen.make(args.queries)
    t0 = time.perf_counter()
    _, pos = faiss.knn(qv, dense._storage(), 10, faiss.METRIC_INNER_PRODUCT)
    res["exact_s"] = time.perf_counter() - t0
    np.save(work / "queries.npy", qv)
    np.save(work / "exact_ids.npy", dense.ids[pos])
    res["build_peak_rss_mb"] = maxrss_mb()
    return res


# --------------------------------------------------------------------------- phase 2: serve
def serve(work: Path, args: argparse.Namespace) -> dict:
    from rag.config import RetrievalConfig
    from rag.embedding import SentenceTransformerEmbedder
    from rag.fusion import convex, rrf
    from rag.index.dense import DenseIndex, _faiss
    from rag.index.sparse import BM25Index
    from rag.retrieval import _pool as pool

    _faiss()
    res: dict = {"base_rss_mb": maxrss_mb()}
    t0 = time.perf_counter()
    dense = DenseIndex.load(work / "dense.faiss")
    bm25 = BM25Index.load(work / "sparse")
    res["load_s"] = time.perf_counter() - t0
    qv = np.load(work / "queries.npy")
    exact = np.load(work / "exact_ids.npy")
    qs = query_texts(len(qv))
    cfg = RetrievalConfig()
    depth, top_k = cfg.candidate_depth, args.top_k
    res["fusion"] = (f"convex alpha={cfg.alpha} norm={cfg.norm}" if cfg.fusion == "convex"
                     else f"rrf k={cfg.rrf_k} weights={list(cfg.weights)}")

    def recall(ef: int) -> tuple[float, float]:
        dense.ef_search = ef
        for i in range(10):
            dense.search(qv[i:i + 1], 10)
        lat, found = [], []
        for i in range(len(qv)):
            t = time.perf_counter()
            _, got = dense.search(qv[i:i + 1], 10)
            lat.append(time.perf_counter() - t)
            found.append(len(set(got[0].tolist()) & set(exact[i].tolist())) / 10)
        return float(np.mean(found)), pct(lat, 50)

    default_ef = dense.ef_search
    res["default_ef"] = default_ef
    sweep = []
    if dense.kind == "hnsw":
        r, ms = recall(default_ef)
        sweep.append((default_ef, r, ms))
        for ef in EF_SWEEP:
            if sweep[-1][1] >= 0.95 or ef <= default_ef:
                continue
            r, ms = recall(ef)
            sweep.append((ef, r, ms))
    else:
        sweep.append((0, 1.0, float("nan")))  # flat: exact by construction
    res["sweep"] = sweep
    res["recall_at_10"] = sweep[0][1]
    ok = [s for s in sweep if s[1] >= 0.95]
    res["ef_ok"] = ok[0][0] if ok and dense.kind == "hnsw" else None

    embedder = SentenceTransformerEmbedder()

    def fuse(d, s):
        if cfg.fusion == "convex":
            return convex([d, s], weights=[cfg.alpha, 1.0 - cfg.alpha], norm=cfg.norm)
        return rrf([d[0].tolist(), s[0].tolist()], k=cfg.rrf_k, weights=list(cfg.weights))

    def timed(ef: int) -> dict[str, list[float]]:
        dense.ef_search = ef
        for i in range(args.warmup):  # warm-up: model load, caches, page faults
            embedder.embed_query(qs[i])
            bm25.search(qs[i], depth)
            dense.search(qv[i:i + 1], depth)
        lat: dict[str, list[float]] = {"embed": [], "bm25": [], "dense": [], "hybrid": []}
        for i, q in enumerate(qs):
            v = qv[i:i + 1]
            t0 = time.perf_counter()
            bm25.search(q, top_k)
            lat["bm25"].append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            embedder.embed_query(q)
            t1 = time.perf_counter()
            dense.search(v, top_k)
            t2 = time.perf_counter()
            lat["embed"].append(t1 - t0)
            lat["dense"].append(t2 - t0)

            # as rag.retrieval.HybridRetriever does: BM25 on the worker thread meanwhile
            t0 = time.perf_counter()
            pending = pool().submit(bm25.search, q, depth)
            embedder.embed_query(q)
            ds, di = dense.search(v, depth)
            keep = di[0] >= 0
            ss, si = pending.result()
            fuse((di[0][keep], ds[0][keep]), (si, ss))[:top_k]
            lat["hybrid"].append(time.perf_counter() - t0)
        return lat

    for tag, ef in [("", default_ef)] + ([("ok_", res["ef_ok"])] if res["ef_ok"] not in (None, default_ef) else []):
        lat = timed(ef)
        for name, xs in lat.items():
            if tag and name in ("embed", "bm25"):
                continue
            res[f"{tag}{name}_p50_ms"] = pct(xs, 50)
            res[f"{tag}{name}_p95_ms"] = pct(xs, 95)
    res["n_queries"] = len(qs)
    res["serve_peak_rss_mb"] = maxrss_mb()
    return res


# --------------------------------------------------------------------------- report
def markdown(rows: list[dict]) -> str:
    head = ("| chunks | dense | build BM25 s | build dense s | raw MiB (vectors + text) | build peak RSS MiB (x raw) "
            "| serve peak RSS MiB (x raw) | dense file MiB | BM25 files MiB | HNSW recall@10 (efSearch) "
            "| embed p50 ms | BM25 p50/p95 ms | dense p50/p95 ms | hybrid p50/p95 ms |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        raw = r["vectors_mb"] + r["text_mb"]
        lines.append(
            f"| {r['n']:,} | {r['kind']} | {r['bm25_build_s']:.1f} | {r['dense_build_s']:.1f} | "
            f"{raw:,.0f} ({r['vectors_mb']:,.0f} + {r['text_mb']:,.0f}) | "
            f"{r['build_peak_rss_mb']:,.0f} ({r['build_peak_rss_mb'] / raw:.2f}x) | "
            f"{r['serve_peak_rss_mb']:,.0f} ({r['serve_peak_rss_mb'] / raw:.2f}x) | {r['dense_file_mb']:,.0f} | "
            f"{r['sparse_file_mb']:,.0f} | {r['recall_at_10']:.3f} ({r['default_ef']}) | {r['embed_p50_ms']:.1f} | "
            f"{r['bm25_p50_ms']:.2f} / {r['bm25_p95_ms']:.2f} | {r['dense_p50_ms']:.1f} / {r['dense_p95_ms']:.1f} | "
            f"{r['hybrid_p50_ms']:.1f} / {r['hybrid_p95_ms']:.1f} |")
    return "\n".join(lines)


def details(rows: list[dict]) -> str:
    out = []
    for r in rows:
        raw = r["vectors_mb"] + r["text_mb"]
        sweep = ", ".join(f"efSearch {ef}: {rc:.3f} ({ms:.2f} ms)" for ef, rc, ms in r["sweep"])
        if r["kind"] == "flat":
            sweep = "flat index, exact (1.000)"
        out.append(f"- {r['n']:,} chunks, HNSW recall@10 vs exact flat search ({r['n_queries']} fresh synthetic "
                   f"queries; dense-search-only p50): {sweep}.")
        if r.get("ef_ok") is None and r["kind"] == "hnsw":
            out.append(f"  efSearch up to {r['sweep'][-1][0]} does not reach 0.95.")
        elif r.get("ok_dense_p50_ms") is not None:
            out.append(f"  At efSearch {r['ef_ok']}: dense p50/p95 {r['ok_dense_p50_ms']:.1f} / {r['ok_dense_p95_ms']:.1f} ms, "
                       f"hybrid p50/p95 {r['ok_hybrid_p50_ms']:.1f} / {r['ok_hybrid_p95_ms']:.1f} ms (embedding included).")
        out.append(f"  Memory: raw {raw:,.0f} MiB = vectors {r['vectors_mb']:,.0f} + text {r['text_mb']:,.0f}; "
                   f"build peak RSS {r['build_peak_rss_mb']:,.0f} MiB ({r['build_peak_rss_mb'] / raw:.2f}x; "
                   f"interpreter+numpy+faiss baseline {r['base_rss_mb']:,.0f}); serving peak RSS "
                   f"{r['serve_peak_rss_mb']:,.0f} MiB ({r['serve_peak_rss_mb'] / raw:.2f}x; after imports "
                   f"{r['serve_base_rss_mb']:,.0f}; includes the query encoder), ru_maxrss of each process.")
        out.append(f"  Build: texts {r['gen_text_s']:.0f} s, BM25 {r['bm25_build_s']:.0f} s ({r['postings']:,} postings), "
                   f"dense {r['dense_build_s']:.0f} s, exact top-10 {r['exact_s']:.1f} s; serving load {r['load_s']:.1f} s; "
                   f"hybrid fusion: {r['fusion']}, candidate depth {r['depth']}; wall {r['wall_s']:.0f} s.")
    return "\n".join(out)


def stats_lines(args: argparse.Namespace) -> str:
    def fmt(name: str, s: dict) -> str:
        f = lambda xs: " / ".join(f"{v:.2f}" for v in xs)  # noqa: E731
        return (f"| {name} | {s['n']:,} | {f(s['top1'])} | {f(s['top10'])} | {s['pair_mean']:.3f} | "
                f"{s['pr_dim']:.0f} |")
    lines = ["| vectors | n | top-1 neighbour cosine p5/p25/p50/p75/p95 | top-10 neighbour cosine p5/.../p95 "
             "| mean pairwise cosine | participation-ratio dim |", "|---|---|---|---|---|---|"]
    n = 5183
    if args.real_vectors and Path(args.real_vectors).is_file():
        real = np.load(args.real_vectors).astype(np.float32)
        n = len(real)
        lines.append(fmt("real MiniLM SciFact abstracts", neighbour_stats(real)))
    lines.append(fmt("synthetic (this benchmark)", neighbour_stats(VectorGenerator(args.seed, **GEN).make(n))))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated chunk counts")
    p.add_argument("--queries", type=int, default=300, help="queries (>= 200 for the percentiles)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--words", type=int, default=60, help="mean words per chunk")
    p.add_argument("--vocab", type=int, default=50_000)
    p.add_argument("--ann-threshold", type=int, default=0, help="0: RetrievalConfig's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", default=None, help="folder for the saved indexes (deleted after)")
    p.add_argument("--real-vectors", default=REAL_VECTORS, help="(n, 384) float32 .npy of real embeddings to compare")
    p.add_argument("--out", default=None, help="also write the report (Markdown) here")
    p.add_argument("--work-dir", default=None,
                   help="keep each size's index under DIR/<n> (--segments: DIR/segments-<n>/base) and reuse a "
                        "finished build there")
    p.add_argument("--segments", action="store_true",
                   help="instead: commit costs and search latency with 10 live segments on a real index folder "
                        "(benchmarks/scale_segments.py)")
    p.add_argument("--phase", choices=["build", "serve"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase == "build":
        print(json.dumps(build(args.n, Path(args.work), args)), flush=True)
        return 0
    if args.phase == "serve":
        print(json.dumps(serve(Path(args.work), args)), flush=True)
        return 0

    if args.segments:
        import scale_segments

        out = []
        for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
            keep = args.work_dir is not None
            if keep:
                work = Path(args.work_dir) / f"segments-{n}"
                work.mkdir(parents=True, exist_ok=True)
            else:
                work = Path(tempfile.mkdtemp(prefix="rag-segments-", dir=args.tmp))
            try:
                out.append(scale_segments.report(scale_segments.run(n, work, args)))
            finally:
                if not keep:
                    shutil.rmtree(work, ignore_errors=True)
            print("\n" + out[-1], flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n\n".join(out) + "\n", encoding="utf-8")
        return 0

    from rag.config import RetrievalConfig

    report = ["Synthetic vectors vs real MiniLM vectors (5k sample each; see the module docstring for the generator):",
              "", stats_lines(args), ""]
    print("\n".join(report), flush=True)
    common = ["--queries", str(args.queries), "--warmup", str(args.warmup), "--top-k", str(args.top_k),
              "--words", str(args.words), "--vocab", str(args.vocab), "--ann-threshold", str(args.ann_threshold),
              "--seed", str(args.seed)]
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        keep = args.work_dir is not None
        if keep:
            work = Path(args.work_dir) / str(n)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(tempfile.mkdtemp(prefix="rag-scale-", dir=args.tmp))
        try:
            t0 = time.perf_counter()
            row: dict = {}
            for phase in ("build", "serve"):
                if phase == "build" and keep and (work / "build.json").exists():
                    row.update(json.loads((work / "build.json").read_text()))
                    print(f"[{n:,} build] reused {work}", flush=True)
                    continue
                cmd = [sys.executable, __file__, "--phase", phase, "--n", str(n), "--work", str(work)] + common
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return out.returncode
                got = json.loads(out.stdout.strip().splitlines()[-1])
                if phase == "serve":
                    got["serve_base_rss_mb"] = got.pop("base_rss_mb")
                row.update(got)
                if phase == "build" and keep:
                    (work / "build.json").write_text(json.dumps(got))
                print(f"[{n:,} {phase}] {json.dumps(got)}", flush=True)
            row["wall_s"] = time.perf_counter() - t0
            row["depth"] = RetrievalConfig().candidate_depth
            rows.append(row)
        finally:
            if not keep:
                shutil.rmtree(work, ignore_errors=True)
    table = ["", f"Scale benchmark ({os.cpu_count()} CPUs visible, {len(os.sched_getaffinity(0))} usable; "
             f"latencies over {args.queries} queries, embedding included in dense and hybrid):", "",
             markdown(rows), "", details(rows)]
    print("\n".join(table), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(report + table) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
