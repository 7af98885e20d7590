"""Qdrant backend vs the local index on a BEIR set: same retrieval quality, latency beside it,
migrate there and back, BM25 avgdl sensitivity and term-id collisions.

Usage (the local index must exist; build it with `rag eval retrieval DATASET` first):
    python benchmarks/qdrant_parity.py --dataset ../shared/data/beir-scifact \
        --local indexes/eval/beir-scifact-XXXX --qdrant qdrant+local:indexes/q [--limit N] [--out FILE]

Steps: (1) `rag migrate` the local index into the Qdrant location unless it already holds one
(stored vectors, no re-embedding); (2) migrate Qdrant back into a fresh folder and compare the
hybrid top 10 (chunk ids and scores) of the first 50 queries on all three; (3) BM25 nDCG@10 of
the local index with its avgdl scaled (what a stale avgdl costs), with IDF computed per shard
(what a sharded collection's BM25 does), and colliding term ids among the corpus's stems; (4)
for each mode, one 100-deep document-level search per test query on each backend (nDCG@10,
Recall@10/100 from pytrec_eval, MRR@10, wall-time latency p50/p95 including query embedding).
Prints a Markdown report, written to --out after every step.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def engine_for(location: str):
    from rag.config import RagConfig
    from rag.engine import QueryEngine
    from rag.index import open_index

    index = open_index(location, RagConfig())
    cfg = RagConfig().updated({k: v for k, v in index.stored_settings().items() if k in ("embedding", "chunking", "bm25", "dedup")})
    return QueryEngine(open_index(location, cfg), cfg)


def run_mode(engine, queries, qids, mode: str):
    """{qid: {doc: score}} and per-query latencies (s) of one 100-deep search per query."""
    run, lat = {}, []
    for qid in qids:
        t = time.perf_counter()
        hits = engine.search(queries[qid], top_k=100, mode=mode, aggregate="document").hits
        lat.append(time.perf_counter() - t)
        ranking: dict[str, float] = {}
        for h in hits:
            did = str(h.chunk.metadata.get("record_id", h.chunk.doc_id))
            if did not in ranking:
                ranking[did] = float(len(hits) - len(ranking))
        run[qid] = ranking or {"__none__": 0.0}
    return run, lat


def metrics(run, qrels, qids):
    import pytrec_eval

    sub = {q: qrels[q] for q in qids}
    res = pytrec_eval.RelevanceEvaluator(sub, {"ndcg_cut_10", "recall_10", "recall_100"}).evaluate(run)
    run10 = {q: dict(list(r.items())[:10]) for q, r in run.items()}
    mrr = pytrec_eval.RelevanceEvaluator(sub, {"recip_rank"}).evaluate(run10)
    return {"nDCG@10": float(np.mean([res[q]["ndcg_cut_10"] for q in qids])),
            "Recall@10": float(np.mean([res[q]["recall_10"] for q in qids])),
            "Recall@100": float(np.mean([res[q]["recall_100"] for q in qids])),
            "MRR@10": float(np.mean([mrr[q]["recip_rank"] for q in qids]))}


def _flat_bm25(reader):
    """The generation's BM25 as one flat :class:`~rag.index.sparse.BM25Index` (the studies below
    read its postings): built from the docstore's index texts with the index's BM25 settings,
    since a segmented generation keeps per-segment term counts, not one posting matrix."""
    from rag.config import BM25Config
    from rag.index.sparse import BM25Index

    sp = reader.snapshot.sparse
    if hasattr(sp, "indptr"):
        return sp
    cfg = BM25Config(**(reader.manifest.get("config", {}).get("bm25") or {}))
    pairs = list(reader.snapshot.docstore.iter_index_texts())
    return BM25Index.build([t for _, t in pairs], np.asarray([i for i, _ in pairs], dtype=np.int64), cfg)


def avgdl_sensitivity(local_dir: str, queries, qrels, qids, factors=(0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 2.0)):
    """BM25 nDCG@10 of the local index with its weights recomputed for avgdl x factor (what
    weights written with a stale avgdl cost). Stored weights are ``idf * tf / (tf + n(d))``;
    tf is recovered from them exactly and re-saturated with the other ``n(d)``."""
    from rag.config import BM25Config
    from rag.index.local import LocalIndex
    from rag.index.sparse import BM25Index

    out = {}
    with LocalIndex(local_dir).lease() as r:
        sp = _flat_bm25(r)
        rec = {c.id: str(c.metadata.get("record_id", c.doc_id)) for c in r.chunks(r.chunk_ids().tolist())}
        cfg = BM25Config(**(r.manifest.get("config", {}).get("bm25") or {}))
        df = np.diff(sp.indptr)
        idf = np.repeat(np.log1p((sp.n_docs - df + 0.5) / (df + 0.5)), df)
        dl = sp.doc_lengths[sp.indices].astype(np.float64)
        n_true = cfg.k1 * (1 - cfg.b + cfg.b * dl / sp.avgdl)
        sat = sp.data / idf
        tf = sat * n_true / (1 - sat)
        for f in factors:
            n_new = cfg.k1 * (1 - cfg.b + cfg.b * dl / (sp.avgdl * f))
            idx = BM25Index(indptr=sp.indptr, indices=sp.indices, data=(idf * tf / (tf + n_new)).astype(np.float32),
                            ids=sp.ids, doc_lengths=sp.doc_lengths, vocab=sp.vocab, tokenizer=sp.tokenizer,
                            k1=sp.k1, b=sp.b, idf=sp.idf, avgdl=sp.avgdl * f)
            out[f] = metrics(_bm25_run(idx, queries, qids, rec), qrels, qids)["nDCG@10"]
        return sp.avgdl, out


def _bm25_run(idx, queries, qids, rec) -> dict[str, dict[str, float]]:
    """The run (qid -> record id -> score) of BM25 ``idx``: top 300 chunks per query, folded
    to records (a record scores by its best chunk's rank), the top 100 records kept."""
    run = {}
    for qid in qids:
        _, ids = idx.search(queries[qid], 300)
        ranking: dict[str, float] = {}
        for cid in ids.tolist():
            if rec[cid] not in ranking:
                ranking[rec[cid]] = float(300 - len(ranking))
        run[qid] = dict(list(ranking.items())[:100]) or {"__none__": 0.0}
    return run


def shard_idf(local_dir: str, queries, qrels, qids, shard_counts=(1, 2, 4, 8, 16)):
    """BM25 nDCG@10 when IDF comes from each shard's own statistics (N and df of the shard a
    chunk lives in, chunks spread over shards by id as Qdrant's automatic sharding does by
    point id hash) and per-shard top lists are merged by score: what a sharded collection's
    BM25 does. TF weights stay the same (our avgdl is global)."""
    from rag.index.local import LocalIndex
    from rag.index.sparse import BM25Index

    out = {}
    with LocalIndex(local_dir).lease() as r:
        sp = _flat_bm25(r)
        rec = {c.id: str(c.metadata.get("record_id", c.doc_id)) for c in r.chunks(r.chunk_ids().tolist())}
        df = np.diff(sp.indptr)
        row = np.repeat(np.arange(df.size), df)
        idf_global = np.log1p((sp.n_docs - df + 0.5) / (df + 0.5))[row]
        sat = sp.data / idf_global
        rng = np.random.default_rng(0)
        for n_shards in shard_counts:
            shard_of_doc = rng.integers(0, n_shards, sp.n_docs)  # a hash of the point id: uniform
            shard = shard_of_doc[sp.indices]
            n_s = np.bincount(shard_of_doc, minlength=n_shards).astype(np.float64)
            df_ts = np.bincount(row * n_shards + shard, minlength=df.size * n_shards).reshape(df.size, n_shards)
            d = df_ts[row, shard].astype(np.float64)
            idf = np.log1p((n_s[shard] - d + 0.5) / (d + 0.5))
            idx = BM25Index(indptr=sp.indptr, indices=sp.indices, data=(idf * sat).astype(np.float32), ids=sp.ids,
                            doc_lengths=sp.doc_lengths, vocab=sp.vocab, tokenizer=sp.tokenizer, k1=sp.k1, b=sp.b,
                            idf=sp.idf, avgdl=sp.avgdl)
            out[n_shards] = metrics(_bm25_run(idx, queries, qids, rec), qrels, qids)["nDCG@10"]
    return out


def collisions(local_dir: str) -> tuple[int, int]:
    from rag.index.local import LocalIndex
    from rag.index.qdrant.terms import term_id

    with LocalIndex(local_dir).lease() as r:
        vocab = _flat_bm25(r).vocab
    seen: dict[int, str] = {}
    pairs = 0
    for t in vocab:
        i = term_id(t)
        if i in seen:
            pairs += 1
        seen[i] = t
    return len(vocab), pairs


def main() -> int:
    from rag.eval_retrieval import load_beir
    from rag.index import open_index
    from rag.migrate import migrate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--local", required=True)
    ap.add_argument("--qdrant", default="qdrant+local:indexes/q")
    ap.add_argument("--modes", default="dense,hybrid,bm25")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--compare", type=int, default=50, help="queries compared after migrating back")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only-bm25-studies", action="store_true", help="only the avgdl, shard-IDF and collision studies")
    args = ap.parse_args()
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    _, queries, qrels = load_beir(args.dataset, "test")
    qids = sorted(queries)[: args.limit] if args.limit else sorted(queries)
    if args.only_bm25_studies:
        for title, fn in (("avgdl", avgdl_sensitivity), ("shards", shard_idf)):
            say(f"{title}: {fn(args.local, queries, qrels, qids)}")
        say(f"term ids (stems, colliding pairs): {collisions(args.local)}")
        return 0
    def flush() -> None:
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")

    if not open_index(args.qdrant).exists():
        rep = migrate(args.local, args.qdrant)
        say(f"migrated {args.local} -> {args.qdrant}: {rep['chunks']} chunks, {rep['documents']} documents, "
            f"{rep['files']} files in {rep['seconds']:.1f} s (no re-embedding; ids kept: {rep['ids_kept']})")
    engines = {"local": engine_for(args.local), "qdrant": engine_for(args.qdrant)}
    for e in engines.values():
        e.search(queries[qids[0]], top_k=1)  # load the query encoder before timing
    # 1. migrate back and compare (first: it is the cheap, decisive check)
    tmp = Path(tempfile.mkdtemp(prefix="rag-back-", dir=str(ROOT / "indexes")))
    back_dir = str(tmp / "back")
    rep = migrate(args.qdrant, back_dir)
    back = engine_for(back_dir)
    same_back = same_q = ids_back = 0
    max_diff = 0.0
    cmp = qids[: args.compare]
    for qid in cmp:
        res = [e.search(queries[qid], top_k=10, mode="hybrid").hits for e in (engines["local"], engines["qdrant"], back)]
        key = [[(h.chunk.id, round(h.score, 5)) for h in r] for r in res]
        same_back += key[0] == key[2]
        ids_back += [h.chunk.id for h in res[0]] == [h.chunk.id for h in res[2]]
        max_diff = max([max_diff] + [abs(h.score - g.score) for h, g in zip(res[0], res[2])])
        same_q += [h.chunk.id for h in res[0]] == [h.chunk.id for h in res[1]] and \
            np.allclose([h.score for h in res[0]], [h.score for h in res[1]], atol=1e-4)
    say(f"migrate back {args.qdrant} -> {back_dir}: {rep['chunks']} chunks in {rep['seconds']:.1f} s; hybrid top 10 of "
        f"the first {len(cmp)} queries: identical chunk ids and scores (5 decimals) to the original local index for "
        f"{same_back}/{len(cmp)} (same chunk ids for {ids_back}/{len(cmp)}, largest score difference {max_diff:.2g}); "
        f"Qdrant itself: same ids and scores within 1e-4 for {same_q}/{len(cmp)}")
    shutil.rmtree(tmp, ignore_errors=True)
    flush()
    # 2. BM25 studies on the local index
    true_avgdl, sens = avgdl_sensitivity(args.local, queries, qrels, qids)
    say(f"\nBM25 nDCG@10 when the weights were computed with avgdl x factor (true avgdl {true_avgdl:.2f} terms):\n")
    say("| avgdl factor | " + " | ".join(f"{f:g}" for f in sens) + " |")
    say("|---|" + "---|" * len(sens))
    say("| nDCG@10 | " + " | ".join(f"{v:.4f}" for v in sens.values()) + " |")
    shards = shard_idf(args.local, queries, qrels, qids)
    say("\nBM25 nDCG@10 with IDF from each shard's own statistics (chunks spread uniformly over shards, "
        "per-shard top lists merged by score):\n")
    say("| shards | " + " | ".join(str(k) for k in shards) + " |")
    say("|---|" + "---|" * len(shards))
    say("| nDCG@10 | " + " | ".join(f"{v:.4f}" for v in shards.values()) + " |")
    v, pairs = collisions(args.local)
    say(f"\nterm ids: {v} distinct stems, {pairs} colliding pair(s) under blake2b-32")
    flush()
    # 3. quality and latency, mode by mode (the embedded Qdrant side is the slow part)
    say(f"\n{len(qids)} test queries of {args.dataset}; one 100-deep document search per query; shared 2-core "
        "machine under load (latencies are upper bounds)\n")
    say("| mode | backend | nDCG@10 | Recall@10 | Recall@100 | MRR@10 | p50 ms | p95 ms |")
    say("|---|---|---|---|---|---|---|---|")
    results = {}
    for mode in args.modes.split(","):
        for name, eng in engines.items():
            run, lat = run_mode(eng, queries, qids, mode)
            m = metrics(run, qrels, qids)
            results[(mode, name)] = m
            say(f"| {mode} | {name} | {m['nDCG@10']:.4f} | {m['Recall@10']:.4f} | {m['Recall@100']:.4f} | {m['MRR@10']:.4f} | "
                f"{np.percentile(lat, 50) * 1000:.1f} | {np.percentile(lat, 95) * 1000:.1f} |")
            flush()
        d = results[(mode, "qdrant")]["nDCG@10"] - results[(mode, "local")]["nDCG@10"]
        say(f"| {mode} | difference | {d:+.4f} | | | | | |")
        flush()
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
