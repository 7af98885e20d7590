"""Document-embedding throughput: PyTorch vs ONNX Runtime fp32 vs ONNX Runtime int8.

Takes a fixed sample of SciFact chunks (the first ``--docs`` abstracts of
``../shared/data/beir-scifact/corpus.jsonl``, chunked as ``rag ingest`` does: 128 word pieces, 32
overlap, embedded as ``title + "\\n" + chunk``), embeds them with each backend of the default
embedder and prints chunks/s and the cosine agreement of each backend's vectors with PyTorch's.
"ONNX fp32, corpus order" embeds the same chunks in consecutive batches of 64 without sorting by
length, to show what the length-sorted batching saves.

    nice -n 10 .venv/bin/python benchmarks/ingest_throughput.py [--docs 300] [--repeat 1]

The first run on a machine also exports (and quantises) the ONNX graphs into the cache; that
time is not counted. Wall-clock figures need an idle machine; CPU seconds (all threads of the
process) are less sensitive to other load and bound what an idle 2-core machine can do.
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

from rag.chunking import Chunker  # noqa: E402
from rag.config import EmbeddingConfig  # noqa: E402
from rag.embedding import SentenceTransformerEmbedder  # noqa: E402
from rag.types import Document  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "beir-scifact" / "corpus.jsonl"


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=300, help="SciFact abstracts in the sample (default 300)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per backend; the fastest counts")
    args = ap.parse_args()
    if not CORPUS.exists():
        print(f"{CORPUS}: not found (the SciFact corpus is needed)", file=sys.stderr)
        return 1
    torch_emb = SentenceTransformerEmbedder(EmbeddingConfig(document_backend="torch"))
    texts = sample_texts(args.docs, Chunker(torch_emb.path, 128, 32))
    lengths = [len(torch_emb.tokenizer(t)["input_ids"]) for t in texts]
    fp32 = torch_emb.onnx_encoder("fp32")  # export / quantise now, outside the timings
    int8 = torch_emb.onnx_encoder("int8")
    bs = torch_emb.config.batch_size

    def corpus_order(ts):
        return np.concatenate([fp32.encode_batch(ts[i : i + bs], batch_size=bs) for i in range(0, len(ts), bs)])

    runs = [("PyTorch (sentence-transformers)", torch_emb.embed_documents)]
    if fp32 is not None:
        runs += [("ONNX fp32, corpus order", corpus_order),
                 ("ONNX fp32, length-sorted", lambda ts: fp32.encode_batch(ts, batch_size=bs))]
    if int8 is not None:
        runs.append(("ONNX int8, length-sorted", lambda ts: int8.encode_batch(ts, batch_size=bs)))
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


if __name__ == "__main__":
    raise SystemExit(main())
