"""``benchmarks/scale.py --segments``: what a commit costs on a large segmented local index.

Builds a real index folder of N chunks through the product's write path (``LocalIndex.writer``:
docstore, one segment with HNSW/flat FAISS and BM25 postings; synthetic vectors and texts from
:mod:`benchmarks.scale`, documents of 100 chunks), then, each commit timed end to end (writer
lock, base opened, docstore copied, segment written, manifest, garbage collection):

1. 9 commits adding one 100-chunk document each (one new segment each: 10 live segments),
   while a lease keeps the 1-segment state readable;
2. one commit deleting one 100-chunk document of the big segment (tombstones only);
3. search latency of the 1-segment state (the baseline) and of the 10 segments with the
   tombstones, interleaved query by query in one loop, so both see the same machine load;
4. one more 100-chunk commit: 10 small segments of one level, so the merge policy merges them.

With ``--work-dir DIR`` the built index is kept in ``DIR/segments-N/base`` and reused by later
runs (steps 1-4 then run on a hard-linked copy, ``DIR/segments-N/index``: segment and
docstore files are never modified in place, so the copy's commits leave the base intact).

Latencies as ``scale.py``'s serve phase: BM25 on the real query text, dense = query embedding
(the product's embedder) + search of the synthetic query vector, hybrid = BM25 on the worker
thread while the query is embedded and searched densely, then fused (``RetrievalConfig``
defaults); searches go through ``LocalReader`` (``dense_search``/``sparse_search``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

DOC_CHUNKS = 100


def _docs(start_doc: int, n_docs: int, vocab, words: int, seed: int, gen):
    """(DocumentRecord, chunks, vectors, FileRecord) for ``n_docs`` synthetic 100-chunk documents."""
    from rag.index.backend import DocumentRecord, FileRecord
    from rag.types import Chunk

    from scale import texts  # noqa: E402 (benchmarks/ is on sys.path when run from scale.py)

    all_texts = texts(n_docs * DOC_CHUNKS, vocab, words, seed)
    vecs = gen.make(n_docs * DOC_CHUNKS)
    for d in range(n_docs):
        key = f"/synthetic/doc-{start_doc + d:07d}.txt"
        chunks = []
        pos = 0
        for j in range(DOC_CHUNKS):
            t = all_texts[d * DOC_CHUNKS + j]
            chunks.append(Chunk(id=-1, doc_id=key, ordinal=j, start=pos, end=pos + len(t), text=t, source=key,
                                title=f"doc {start_doc + d}"))
            pos += len(t) + 1
        rec = DocumentRecord(key=key, source=key, content_hash=f"{start_doc + d:064x}", text_hash=f"{start_doc + d:064x}",
                             title=f"doc {start_doc + d}", n_chunks=DOC_CHUNKS)
        yield rec, chunks, vecs[d * DOC_CHUNKS:(d + 1) * DOC_CHUNKS], FileRecord(source=key, content_hash=rec.content_hash,
                                                                                n_documents=1)


def run(n: int, work: Path, args) -> dict:
    """Build, commit and search as described in the module docstring; returns the figures."""
    from rag.config import RetrievalConfig
    from rag.embedding import SentenceTransformerEmbedder
    from rag.fusion import convex, rrf
    from rag.index.backend import Filter
    from rag.index.local import LocalIndex
    from rag.retrieval import _pool as pool

    from scale import DIM, GEN, VectorGenerator, maxrss_mb, pct, query_texts, vocabulary

    log_lines: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            log_lines.append(record.getMessage())

    logging.getLogger("rag").addHandler(_Keep())
    logging.getLogger("rag").setLevel(logging.INFO)
    res: dict = {"n": n}
    cfg = RetrievalConfig()
    threshold = args.ann_threshold or cfg.ann_threshold
    emb = {"name": "synthetic", "model_id": "synthetic-384", "dim": DIM}
    vocab = vocabulary(args.vocab)
    gen = VectorGenerator(args.seed, **GEN)
    n_docs = n // DOC_CHUNKS
    base, built = work / "base", work / "base.json"
    if built.is_file():
        res.update(json.loads(built.read_text()))
        print(f"[segments {n:,}] reused the index built in {base}", flush=True)
    else:
        shutil.rmtree(base, ignore_errors=True)
        t0 = time.perf_counter()
        with LocalIndex(base, ann_threshold=threshold).writer(embedder=emb, settings={}) as w:
            for b in range(0, n_docs, 500):
                for rec, chunks, vecs, f in _docs(b, min(500, n_docs - b), vocab, args.words, args.seed + b, gen):
                    w.upsert(rec, chunks, vecs)
                    w.put_file(f)
            t1 = time.perf_counter()
            w.commit()
        res["build_upsert_s"] = t1 - t0
        res["build_commit_s"] = time.perf_counter() - t1
        res["build_peak_rss_mb"] = maxrss_mb()
        print(f"[segments {n:,}] built in {time.perf_counter() - t0:.1f} s (docstore {res['build_upsert_s']:.1f} s, "
              f"commit {res['build_commit_s']:.1f} s)", flush=True)
        if args.work_dir:
            built.write_text(json.dumps({k: res[k] for k in ("build_upsert_s", "build_commit_s", "build_peak_rss_mb")}))
    shutil.rmtree(work / "index", ignore_errors=True)
    shutil.copytree(base, work / "index", copy_function=os.link, ignore=shutil.ignore_patterns(".lock"))
    index = LocalIndex(work / "index", ann_threshold=threshold)
    gen.rng = np.random.default_rng(args.seed + 2000)  # queries and added chunks: the same whether built or reused

    embedder = SentenceTransformerEmbedder()
    qs = query_texts(args.queries)
    qv = gen.make(args.queries)
    depth, top_k = cfg.candidate_depth, args.top_k

    def fuse(d, s):
        if cfg.fusion == "convex":
            return convex([d, s], weights=[cfg.alpha, 1.0 - cfg.alpha], norm=cfg.norm)
        return rrf([d[0].tolist(), s[0].tolist()], k=cfg.rrf_k, weights=list(cfg.weights))

    def latencies(readers: dict) -> None:
        """Both states in one loop, query by query (1 segment, then 10, then the next query),
        so a change of machine load during the run hits both alike."""
        flt = Filter()
        lat: dict[str, dict[str, list[float]]] = {}
        for tag, r in readers.items():
            res[f"{tag}_segments"] = len(r.manifest["segments"])
            res[f"{tag}_tombstones"] = int(r.manifest["tombstones"])
            lat[tag] = {"bm25": [], "dense": [], "hybrid": []}
            for i in range(args.warmup):
                embedder.embed_query(qs[i])
                r.sparse_search(qs[i], depth, flt)
                r.dense_search(qv[i], depth, flt)
        for i, q in enumerate(qs):
            for tag, r in readers.items():
                t = time.perf_counter()
                r.sparse_search(q, top_k, flt)
                lat[tag]["bm25"].append(time.perf_counter() - t)
                t = time.perf_counter()
                embedder.embed_query(q)
                r.dense_search(qv[i], top_k, flt)
                lat[tag]["dense"].append(time.perf_counter() - t)
                t = time.perf_counter()
                pending = pool().submit(r.sparse_search, q, depth, flt)
                embedder.embed_query(q)
                d = r.dense_search(qv[i], depth, flt)
                s = pending.result()
                fuse((d.ids, d.scores), (s.ids, s.scores))[:top_k]
                lat[tag]["hybrid"].append(time.perf_counter() - t)
        load = os.getloadavg()
        for tag in readers:
            for name, xs in lat[tag].items():
                res[f"{tag}_{name}_p50_ms"], res[f"{tag}_{name}_p95_ms"] = pct(xs, 50), pct(xs, 95)
            res[f"{tag}_load"] = load
            print(f"[segments {n:,}] {tag}: {res[f'{tag}_segments']} segment(s), {res[f'{tag}_tombstones']} tombstones: "
                  + ", ".join(f"{k} p50/p95 {pct(v, 50):.2f}/{pct(v, 95):.2f} ms" for k, v in lat[tag].items())
                  + f"; load average {load[0]:.2f}", flush=True)

    def commit(add_doc: int | None = None, delete: str | None = None) -> dict:
        log_lines.clear()
        t0 = time.perf_counter()
        with index.writer() as w:
            t1 = time.perf_counter()
            if add_doc is not None:
                for rec, chunks, vecs, f in _docs(add_doc, 1, vocab, args.words, args.seed + 7919 + add_doc, gen):
                    w.upsert(rec, chunks, vecs)
                    w.put_file(f)
            if delete is not None:
                w.delete_files([delete])
            t2 = time.perf_counter()
            m = w.commit()
        out = {"total_s": time.perf_counter() - t0, "open_s": t1 - t0, "stage_s": t2 - t1,
               "commit_s": time.perf_counter() - t2, "segments": len(m["segments"]), "log": list(log_lines)}
        return out

    base_lease = index.lease()
    one = base_lease.__enter__()  # the 1-segment state stays readable (and its segment loaded) while commits run
    adds = []
    for k in range(9):
        c = commit(add_doc=n_docs + k)
        adds.append(c)
        print(f"[segments {n:,}] add 100 chunks #{k + 1}: {c['total_s']:.2f} s (writer open incl. docstore copy "
              f"{c['open_s']:.2f} s, commit {c['commit_s']:.2f} s) -> {c['segments']} segments", flush=True)
    dele = commit(delete="/synthetic/doc-0000003.txt")
    print(f"[segments {n:,}] delete one 100-chunk document: {dele['total_s']:.2f} s (writer open "
          f"{dele['open_s']:.2f} s, commit {dele['commit_s']:.2f} s)", flush=True)
    with index.lease() as ten:
        latencies({"one": one, "ten": ten})
    base_lease.__exit__(None, None, None)
    print(f"[segments {n:,}] hybrid p50: {res['one_hybrid_p50_ms']:.2f} ms with 1 segment, {res['ten_hybrid_p50_ms']:.2f} ms "
          f"with {res['ten_segments']} live segments + {res['ten_tombstones']} tombstones (same run; p95 "
          f"{res['one_hybrid_p95_ms']:.2f} / {res['ten_hybrid_p95_ms']:.2f} ms)", flush=True)
    merge = commit(add_doc=n_docs + 9)
    print(f"[segments {n:,}] add 100 chunks, merging the small segments: {merge['total_s']:.2f} s -> "
          f"{merge['segments']} segments; {merge['log'][-1] if merge['log'] else ''}", flush=True)
    res["add_s"] = [round(c["total_s"], 3) for c in adds]
    res["add_open_s"] = [round(c["open_s"], 3) for c in adds]
    res["add_commit_s"] = [round(c["commit_s"], 3) for c in adds]
    res["delete_s"], res["delete_open_s"] = round(dele["total_s"], 3), round(dele["open_s"], 3)
    res["merge_commit_s"], res["after_merge_segments"] = round(merge["total_s"], 3), merge["segments"]
    res["peak_rss_mb"] = maxrss_mb()
    res["docstore_mb"] = (work / "index" / json.loads((work / "index" / "manifest.json").read_text())["gen_dir"]
                          / "docstore.sqlite").stat().st_size / 2**20
    shutil.rmtree(work / "index", ignore_errors=True)
    return res


def report(res: dict) -> str:
    """Markdown lines for the figures of :func:`run`."""
    n = res["n"]
    return "\n".join([
        f"Segments at {n:,} chunks ({os.cpu_count()} CPUs; load average {res['ten_load'][0]:.2f} after the latencies, "
        f"which interleave the 1- and 10-segment states query by query):", "",
        f"- build through LocalIndex.writer: docstore {res['build_upsert_s']:.1f} s, commit {res['build_commit_s']:.1f} s, "
        f"peak RSS {res['build_peak_rss_mb']:.0f} MiB; docstore file {res['docstore_mb']:.0f} MiB",
        f"- add 100 chunks (one commit each, 9 runs): median {np.median(res['add_s']):.2f} s, max {max(res['add_s']):.2f} s "
        f"(writer open incl. docstore copy median {np.median(res['add_open_s']):.2f} s; commit median "
        f"{np.median(res['add_commit_s']):.2f} s)",
        f"- delete one 100-chunk document: {res['delete_s']:.2f} s (writer open {res['delete_open_s']:.2f} s)",
        f"- 10th small commit merges the small segments: {res['merge_commit_s']:.2f} s -> {res['after_merge_segments']} segments",
        f"- hybrid p50 {res['one_hybrid_p50_ms']:.2f} ms with 1 segment, {res['ten_hybrid_p50_ms']:.2f} ms with "
        f"{res['ten_segments']} live segments (same run)",
        "", "| live segments | tombstones | BM25 p50/p95 ms | dense p50/p95 ms | hybrid p50/p95 ms |", "|---|---|---|---|---|",
        *[f"| {res[f'{t}_segments']} | {res[f'{t}_tombstones']} | {res[f'{t}_bm25_p50_ms']:.2f} / {res[f'{t}_bm25_p95_ms']:.2f} | "
          f"{res[f'{t}_dense_p50_ms']:.2f} / {res[f'{t}_dense_p95_ms']:.2f} | {res[f'{t}_hybrid_p50_ms']:.2f} / "
          f"{res[f'{t}_hybrid_p95_ms']:.2f} |" for t in ("one", "ten")],
    ])
