"""Retrieval evaluation on BEIR-format folders (Thakur et al. 2021).

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
``text``) and ``qrels/<split>.tsv`` (``query-id corpus-id score`` with a header). Chunks are
scored per document by max-pooling (a document is as relevant as its best chunk), and metrics
come from pytrec_eval (the trec_eval reference implementation): nDCG@10, Recall@10,
Recall@100, and MRR@10 (``recip_rank`` on the top 10).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import RagConfig
from .hashing import sha256_hex
from .errors import ConfigError

MEASURES = {"ndcg_cut_10": "nDCG@10", "recall_10": "Recall@10", "recall_100": "Recall@100"}


def load_beir(dataset_dir: str | Path, split: str = "test") -> tuple[Path, dict[str, str], dict[str, dict[str, int]]]:
    """(corpus path, {query id: text} for queries with qrels, qrels {qid: {doc id: grade}}).

    Raises ConfigError naming the missing or malformed file.
    """
    d = Path(dataset_dir)
    if not (d / "corpus.jsonl").exists() and (d / "passages.jsonl").exists() and (d / "questions.jsonl").exists():
        return _load_qa_as_retrieval(d)
    corpus = d / "corpus.jsonl"
    qpath = d / "queries.jsonl"
    rpath = d / "qrels" / f"{split}.tsv"
    for p in (corpus, qpath, rpath):
        if not p.exists():
            raise ConfigError(f"{p}: missing (not a BEIR folder, or no '{split}' split)")
    qrels: dict[str, dict[str, int]] = {}
    with open(rpath, encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t")
        for i, row in enumerate(rows):
            if not row or (i == 0 and not row[-1].strip().lstrip("-").isdigit()):
                continue
            if len(row) < 3:
                raise ConfigError(f"{rpath}:{i + 1}: expected 'query-id corpus-id score'")
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {str(q["_id"]): q["text"] for q in _jsonl(qpath) if str(q["_id"]) in qrels}
    return corpus, queries, qrels


def _jsonl(path: Path):
    """Records of a JSON-lines file; ConfigError naming the file and line on bad JSON."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                raise ConfigError(f"{path}:{n}: not valid JSON") from None


def _load_qa_as_retrieval(d: Path) -> tuple[Path, dict[str, str], dict[str, dict[str, int]]]:
    """A QA folder (``passages.jsonl`` + ``questions.jsonl`` with ``gold_passage_ids``, the
    format of ../shared/data/qa-xquad-en) read as retrieval: question -> gold passage."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in _jsonl(d / "questions.jsonl"):
        gold = q.get("gold_passage_ids") or []
        if gold:
            queries[str(q["id"])] = q["question"]
            qrels[str(q["id"])] = {str(g): 1 for g in gold}
    return d / "passages.jsonl", queries, qrels


def default_eval_index(dataset_dir: Path, config: RagConfig) -> Path:
    """A persistent index folder per dataset and index settings, so a second evaluation reuses
    it (incremental ingest makes the re-check a content-hash comparison)."""
    key = json.dumps({k: config.to_dict()[k] for k in ("embedding", "chunking", "bm25", "dedup")}, sort_keys=True)
    h = sha256_hex(str(Path(dataset_dir).resolve()) + key)[:10]
    return Path("indexes") / "eval" / f"{Path(dataset_dir).resolve().name}-{h}"


def evaluate_retrieval(dataset_dir: str | Path, index_dir: str | Path | None = None, modes: Sequence[str] = ("bm25", "dense", "hybrid"),
                       split: str = "test", config: RagConfig | None = None, limit: int | None = None,
                       progress=None, rag=None) -> dict[str, Any]:
    """Evaluate each retrieval mode on a BEIR folder.

    Returns ``{"dataset", "split", "queries", "index", "fusion", "modes": {mode: {"nDCG@10",
    "Recall@10", "Recall@100", "MRR@10", "latency_p50_ms", "latency_p95_ms"}}}``. Latency is
    wall time in milliseconds of a search for the top ``LATENCY_TOP_K`` (10) documents, query
    embedding included, timed separately from the 100-deep search that Recall@100 needs
    (reading 100 instead of 10 chunks from the docstore adds about 2-3 ms).
    """
    import pytrec_eval

    from .index import is_remote_location
    from .pipeline import RAG

    cfg = config or RagConfig()
    corpus, queries, qrels = load_beir(dataset_dir, split)
    qids = sorted(queries)
    if limit:
        qids = qids[:limit]
    if rag is None:
        idx = (str(index_dir) if is_remote_location(str(index_dir)) else Path(index_dir)) if index_dir \
            else default_eval_index(Path(dataset_dir), cfg)  # a Qdrant location stays a string (qdrant://h/c)
        rag = RAG.create(idx, cfg)
        if index_dir is None or not rag.store.exists():
            rag.ingest([corpus], progress=progress)
        rag = RAG.open(idx)
        rag.config = rag.config.updated({"retrieval": {k: v for k, v in cfg.to_dict()["retrieval"].items()}})
    out: dict[str, Any] = {"dataset": str(dataset_dir), "split": split, "queries": len(qids), "index": str(getattr(rag, "location", rag.index_dir)),
                           "fusion": {"method": rag.config.retrieval.fusion, "alpha": rag.config.retrieval.alpha,
                                      "norm": rag.config.retrieval.norm, "rrf_k": rag.config.retrieval.rrf_k,
                                      "candidate_depth": rag.config.retrieval.candidate_depth}, "modes": {}}
    rag.search(queries[qids[0]], top_k=1) if qids else None  # load models before timing
    for mode in modes:
        run: dict[str, dict[str, float]] = {}
        run10: dict[str, dict[str, float]] = {}
        lat = []
        for qid in qids:
            t = time.perf_counter()
            rag.search(queries[qid], top_k=LATENCY_TOP_K, mode=mode, aggregate="document")
            lat.append(time.perf_counter() - t)
            hits = rag.search(queries[qid], top_k=100, mode=mode, aggregate="document")  # for Recall@100
            ranking: dict[str, float] = {}
            for h in hits:
                did = str(h.chunk.metadata.get("record_id", h.chunk.doc_id))
                if did not in ranking:
                    ranking[did] = float(len(hits) - len(ranking))  # strictly decreasing with rank
            run[qid] = ranking or {"__none__": 0.0}
            run10[qid] = dict(list(ranking.items())[:10]) or {"__none__": 0.0}
        sub_qrels = {q: qrels[q] for q in qids}
        ev = pytrec_eval.RelevanceEvaluator(sub_qrels, set(MEASURES))
        res = ev.evaluate(run)
        mrr = pytrec_eval.RelevanceEvaluator(sub_qrels, {"recip_rank"}).evaluate(run10)
        m = {name: float(np.mean([res[q][key] for q in qids])) for key, name in MEASURES.items()}
        m["MRR@10"] = float(np.mean([mrr[q]["recip_rank"] for q in qids]))
        m["latency_p50_ms"] = float(np.percentile(lat, 50) * 1000) if lat else 0.0
        m["latency_p95_ms"] = float(np.percentile(lat, 95) * 1000) if lat else 0.0
        out["modes"][mode] = m
    return out


LATENCY_TOP_K = 10
"""Depth of the timed search: the top 10 that nDCG@10 scores (and what a chatbot shows)."""


def format_table(res: dict[str, Any]) -> str:
    """A Markdown table of :func:`evaluate_retrieval` results."""
    cols = ["nDCG@10", "Recall@10", "Recall@100", "MRR@10", "latency_p50_ms", "latency_p95_ms"]
    lines = [f"{res['dataset']} ({res['split']}, {res['queries']} queries; fusion {res['fusion']['method']}; index {res['index']})", "",
             "| mode | " + " | ".join(c.replace("latency_", "").replace("_ms", f" ms (top {LATENCY_TOP_K})") for c in cols) + " |",
             "|---" * (len(cols) + 1) + "|"]
    for mode, m in res["modes"].items():
        lines.append(f"| {mode} | " + " | ".join(f"{m[c]:.1f}" if c.endswith("_ms") else f"{m[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)
