"""Development harness for the QA stage (before/independent of rag.pipeline).

Embeds the 240 XQuAD passages with all-MiniLM-L6-v2 (cached in /tmp as .npy), retrieves top-k
by cosine, wraps passages as Chunk/Hit (metadata record_id = passage id) and runs
rag.eval_qa.evaluate_qa with the GroundedAnswerer.

    .venv/bin/python benchmarks/qa_harness.py --limit 100 --split dev --generator transformers
"""
import argparse, json, os, sys, time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from rag.answering import GroundedAnswerer
from rag.config import EmbeddingConfig, GenerationConfig
from rag.embedding import SentenceTransformerEmbedder
from rag.eval_qa import evaluate_qa, load_ood_questions, read_jsonl
from rag.generation import make_generator
from rag.types import Chunk, Hit

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def build(k=5):
    passages = read_jsonl(DATA / "qa-xquad-en" / "passages.jsonl")
    emb = SentenceTransformerEmbedder(EmbeddingConfig())
    cache = Path("/tmp/xquad_passages_minilm.npy")
    if cache.exists():
        P = np.load(cache)
    else:
        P = emb.embed_documents([p["text"] for p in passages]); np.save(cache, P)
    chunks = [Chunk(id=i, doc_id="passages.jsonl#" + p["id"], ordinal=0, start=0, end=len(p["text"]), text=p["text"],
                    source="passages.jsonl", title=p["title"], metadata={"record_id": p["id"]}) for i, p in enumerate(passages)]

    def retrieve(q):
        v = emb.embed_query(q)
        s = P @ v
        idx = np.argsort(-s)[:k]
        return [Hit(chunk=chunks[i], score=float(s[i]), rank=r + 1, dense_score=float(s[i]), dense_rank=r + 1) for r, i in enumerate(idx)]

    return emb, retrieve


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--split", default="dev")
    ap.add_argument("--generator", default="transformers")
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--ood", type=int, default=0)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--starts", type=int, default=8)
    ap.add_argument("--lb", type=float, default=0.0)
    ap.add_argument("--rows", default="")
    a = ap.parse_args()
    emb, retrieve = build(a.k)
    gen = make_generator(GenerationConfig(backend=a.generator))
    ans = GroundedAnswerer(gen, emb, GenerationConfig(backend=a.generator), mode=a.mode, span_top_starts=a.starts or None, length_bonus=a.lb)
    if a.generator == "transformers":
        t = time.time(); gen.model; print("load", round(time.time() - t, 1), file=sys.stderr)
    ood = load_ood_questions(DATA / "beir-scifact" / "queries.jsonl", a.ood) if a.ood else ()
    t = time.time()
    res = evaluate_qa(DATA / "qa-xquad-en", lambda q: ans.answer(q, retrieve(q)), limit=a.limit, ood_questions=ood,
                      k=a.k, stream=lambda q: ans.stream(q, retrieve(q)), split=a.split, per_question=bool(a.rows))
    rows = res.pop("rows", None)
    if rows:
        Path(a.rows).write_text(json.dumps(rows, indent=1))
    res["wall_s"] = round(time.time() - t, 1)
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))


if __name__ == "__main__":
    main()
