"""Ingest throughput: ``rag ingest`` of SciFact against pure embedding of the same chunks (the
issue-14 acceptance figures); with ``--backends``, document embedding by backend.

Default: ingest the first ``--docs`` abstracts of ``../shared/data/beir-scifact/corpus.jsonl``
(``--docs 0``: the whole corpus, as the acceptance does) into a new index in a temporary folder
with ``.venv/bin/rag ingest`` (a new process, timed from spawn to exit), then embed the same
chunks' texts (title + "\n" + chunk, read back from the new index) with the same document encoder,
in the same windows of texts, in this process, and print ingest seconds, pure-embedding seconds
and the ingest's overhead over pure embedding (wall and CPU). The stored vectors are checked
against the recomputed ones (same chunks, same encoder). ``--eval`` then runs
``rag eval retrieval`` on the new index (hybrid nDCG@10; meaningful with ``--docs 0``).

    nice -n 10 .venv/bin/python benchmarks/ingest_throughput.py --docs 1000     # a sample
    .venv/bin/python benchmarks/ingest_throughput.py --docs 0 --eval            # the acceptance (idle machine)
    nice -n 10 .venv/bin/python benchmarks/ingest_throughput.py --backends [--docs 300] [--repeat 1]

``--backends`` takes the chunks of the first ``--docs`` abstracts (128 word pieces, 32 overlap,
embedded as ``title + "\n" + chunk``), embeds them with each backend of the default embedder
and prints chunks/s and the cosine agreement of each backend's vectors with PyTorch's; "ONNX
fp32, corpus order" embeds them in consecutive batches of 64 without sorting by length, to show
what the length-sorted batching saves, and the two int8 rows compare one batch at a time on
two intra-op threads with the default: single-threaded batches run side by side.

The first run on a machine also exports (and quantises, and splits) the ONNX graphs into the
cache; that is done before any timing. Wall-clock figures need an idle machine: the load
average is printed next to them. CPU seconds (all threads, user + system) are less sensitive
to other load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.chunking import Chunker  # noqa: E402
from rag.config import EmbeddingConfig  # noqa: E402
from rag.embedding import SentenceTransformerEmbedder  # noqa: E402
from rag.types import Document  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "beir-scifact" / "corpus.jsonl"
RAG_BIN = ROOT / ".venv" / "bin" / "rag"


def sample_texts(n_docs: int, chunker: Chunker) -> list[str]:
    """The embedded texts (title + newline + chunk) of the first ``n_docs`` SciFact abstracts."""
    docs = []
    with CORPUS.open(encoding="utf-8") as fh:
        for line in fh:
            if len(docs) >= n_docs:
                break
            r = json.loads(line)
            docs.append(Document(id=str(r["_id"]), text=r["text"], source="scifact", title=r.get("title") or None))
    texts = []
    for doc, chunks in zip(docs, chunker.chunk_documents(docs)):
        for c in chunks:
            texts.append(f"{doc.title}\n{c.text}" if doc.title else c.text)
    return texts


def timed(fn, texts: list[str], repeat: int) -> tuple[float, float, np.ndarray]:
    """(best wall seconds, CPU seconds of that run (all threads of this process), vectors)."""
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn(texts)
        if time.perf_counter() - t < best:
            best, cpu = time.perf_counter() - t, time.process_time() - c
    return best, cpu, out  # type: ignore[return-value]


def backends(args) -> int:
    """The backend table (``--backends``)."""
    torch_emb = SentenceTransformerEmbedder(EmbeddingConfig(document_backend="torch"))
    texts = sample_texts(args.docs, Chunker(torch_emb.path, 128, 32))
    lengths = [len(torch_emb.tokenizer(t)["input_ids"]) for t in texts]
    fp32 = torch_emb.onnx_encoder("fp32")  # export / quantise now, outside the timings
    int8 = torch_emb.onnx_encoder("int8-split")  # what ingest runs
    bs = torch_emb.config.batch_size

    def corpus_order(ts):
        return np.concatenate([fp32.encode_batch(ts[i : i + bs], batch_size=bs) for i in range(0, len(ts), bs)])

    runs = [("PyTorch (sentence-transformers)", torch_emb.embed_documents)]
    if fp32 is not None:
        runs += [("ONNX fp32, corpus order", corpus_order),
                 ("ONNX fp32, length-sorted", lambda ts: fp32.encode_batch(ts, batch_size=bs))]
    if int8 is not None:
        from rag.onnx_embedding import DOCUMENT_BATCH, OnnxEncoder

        one_at_a_time = OnnxEncoder(int8.path, int8.tokenizer_json, int8.max_seq_length, int8.normalize,
                                    word_table=int8.word_table, optimized=True, batch_workers=1)
        runs += [(f"ONNX int8, length-sorted, one batch of {bs} at a time on 2 intra-op threads",
                  lambda ts: one_at_a_time.encode_batch(ts, batch_size=bs)),
                 (f"ONNX int8, length-sorted, {int8.batch_workers} batches of {DOCUMENT_BATCH} at once (ingest's default)",
                  lambda ts: int8.encode_batch(ts, batch_size=DOCUMENT_BATCH))]
    torch_emb.embed_documents(texts[:bs])  # load the PyTorch model outside the timing
    results = []
    for name, fn in runs:
        secs, cpu, vecs = timed(fn, texts, args.repeat)
        results.append((name, secs, cpu, vecs))
    ref = results[0][3]
    print(f"{len(texts)} SciFact chunks from {args.docs} abstracts; word pieces per text: "
          f"median {int(np.median(lengths))}, max {max(lengths)}; batch {bs}\n")
    print("| backend | seconds | chunks/s | x PyTorch | CPU s | chunks per CPU s | cosine to PyTorch: min | mean |")
    print("|---|---|---|---|---|---|---|---|")
    for name, secs, cpu, vecs in results:
        cos = (ref * vecs).sum(axis=1)
        print(f"| {name} | {secs:.1f} | {len(texts) / secs:.1f} | {results[0][1] / secs:.2f} | {cpu:.1f} | "
              f"{len(texts) / max(cpu, 1e-9):.1f} | {cos.min():.5f} | {cos.mean():.5f} |")
    return 0


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def ingest_vs_embedding(args) -> int:
    """``rag ingest`` into a new index, then pure embedding of the same chunks (the default)."""
    from rag.ingest import WINDOW_TEXTS, Indexer
    from rag.ingest_plan import embedded_text
    from rag.pipeline import RAG

    tmp = Path(tempfile.mkdtemp(prefix="rag-ingest-bench-"))
    try:
        if args.docs > 0:
            src = tmp / "sample.jsonl"
            with CORPUS.open(encoding="utf-8") as fin, src.open("w", encoding="utf-8") as fout:
                for n, line in enumerate(fin):
                    if n >= args.docs:
                        break
                    fout.write(line)
        else:
            src = CORPUS
        emb = SentenceTransformerEmbedder(EmbeddingConfig())
        encoder = emb.onnx_encoder("int8-split")  # make the cached graphs now, outside the timings
        emb.query_encoder()
        ix = tmp / "ix"
        load_before = _load()
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(RAG_BIN), "ingest", str(src), "--index", str(ix), "--json"], stdout=subprocess.PIPE,
                                cwd=ROOT, text=True)
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        ingest_s = time.perf_counter() - t0
        load_after = _load()
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"rag ingest failed (exit {os.waitstatus_to_exitcode(status)})", file=sys.stderr)
            return 1
        report = json.loads(out)
        ingest_cpu, ingest_rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024

        rag = RAG.open(ix)
        indexer = Indexer(rag.store, rag.config, emb, index_dir=str(ix))
        titles: dict = {}
        with rag.lease() as reader:
            ids = reader.chunk_ids()
            chunks = reader.chunks(ids.tolist())
            stored = np.asarray(reader.vectors(), dtype=np.float32).copy()
        texts = [embedded_text(indexer.fit_title(c.title, titles)[0], c.text) for c in chunks]
        emb.embed_documents(texts[:64])  # warm the encoder (first-run allocations) outside the timing
        windows = [texts[i:i + WINDOW_TEXTS] for i in range(0, len(texts), WINDOW_TEXTS)]
        t0, c0 = time.perf_counter(), time.process_time()
        vecs = np.concatenate([emb.embed_documents(w) for w in windows])
        embed_s, embed_cpu = time.perf_counter() - t0, time.process_time() - c0
        load_end = _load()
        cos = (vecs * stored).sum(axis=1)
        print(f"rag ingest of {report['documents']} SciFact documents ({src.name}): {len(texts)} chunks; document "
              f"encoder {emb.document_backend} ({encoder.path.name if encoder else '-'}); {os.cpu_count()} cores\n")
        print("| run | wall s | chunks/s | CPU s | peak RSS MB | load average (1/5/15 min) |")
        print("|---|---|---|---|---|---|")
        print(f"| `rag ingest` (process start to exit) | {ingest_s:.1f} | {len(texts) / ingest_s:.1f} | {ingest_cpu:.1f} | "
              f"{ingest_rss:.0f} | {load_before} before, {load_after} after |")
        print(f"| pure embedding of the same chunks (windows of {WINDOW_TEXTS}) | {embed_s:.1f} | {len(texts) / embed_s:.1f} | "
              f"{embed_cpu:.1f} | - | {load_end} after |")
        print(f"\ningest overhead over pure embedding: {100 * (ingest_s - embed_s) / embed_s:.1f} % wall, "
              f"{100 * (ingest_cpu - embed_cpu) / embed_cpu:.1f} % CPU; ingest report: {report['seconds']:.1f} s in-process, "
              f"{report['chunks_embedded']} embedded, {len(report['duplicates'])} duplicates")
        print(f"stored vs recomputed vectors: cosine min {cos.min():.5f}, mean {cos.mean():.5f} "
              "(int8 activations are quantised per batch: a vector depends slightly on its batch)")
        if args.eval:
            dataset = CORPUS.parent
            res = subprocess.run([str(RAG_BIN), "eval", "retrieval", str(dataset), "--index", str(ix)], cwd=ROOT,
                                 capture_output=True, text=True)
            print(f"\n`rag eval retrieval {dataset} --index NEW` (load {_load()}):\n{res.stdout}{res.stderr[-500:]}")
        return 0
    finally:
        if args.keep:
            print(f"(index kept at {tmp / 'ix'})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--docs", type=int, default=None,
                    help="SciFact abstracts in the sample; 0: all (default 1000, --backends 300)")
    ap.add_argument("--backends", action="store_true", help="the backend table instead of the ingest figures")
    ap.add_argument("--repeat", type=int, default=1, help="--backends: runs per backend; the fastest counts")
    ap.add_argument("--eval", action="store_true", help="also run rag eval retrieval on the new index")
    ap.add_argument("--keep", action="store_true", help="keep the new index (its folder is printed)")
    args = ap.parse_args()
    if not CORPUS.exists():
        print(f"{CORPUS}: not found (the SciFact corpus is needed)", file=sys.stderr)
        return 1
    if args.backends:
        args.docs = 300 if args.docs is None else args.docs
        return backends(args)
    args.docs = 1000 if args.docs is None else args.docs
    return ingest_vs_embedding(args)


if __name__ == "__main__":
    raise SystemExit(main())
