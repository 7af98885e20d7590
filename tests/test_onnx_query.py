"""ONNX Runtime query encoder: same vectors as PyTorch, cached export, safe fallbacks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rag.config import EmbeddingConfig, RagConfig
from rag.errors import ConfigError
from rag.onnx_query import plain_mean_pooling_model


def _st_folder(tmp_path, modules, pooling, lower=False, tokenizer=True):
    d = tmp_path / "m"
    (d / "1_Pooling").mkdir(parents=True)
    (d / "modules.json").write_text(json.dumps(modules))
    (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": lower}))
    if tokenizer:
        (d / "tokenizer.json").write_text("{}")
    return d


MODS = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
MEAN = {"word_embedding_dimension": 8, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}


def test_only_plain_mean_pooling_folders_qualify(tmp_path):
    assert plain_mean_pooling_model(_st_folder(tmp_path / "a", MODS, MEAN)) == (128, True)
    assert plain_mean_pooling_model(_st_folder(tmp_path / "b", MODS[:2], MEAN)) == (128, False)
    cls = dict(MEAN, pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    assert plain_mean_pooling_model(_st_folder(tmp_path / "c", MODS, cls)) is None
    assert plain_mean_pooling_model(_st_folder(tmp_path / "d", MODS, MEAN, lower=True)) is None
    assert plain_mean_pooling_model(_st_folder(tmp_path / "e", MODS, MEAN, tokenizer=False)) is None
    dense_head = MODS[:2] + [{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]
    assert plain_mean_pooling_model(_st_folder(tmp_path / "f", dense_head, MEAN)) is None
    assert plain_mean_pooling_model(tmp_path / "missing") is None


def test_query_backend_is_validated():
    with pytest.raises(ConfigError, match="query_backend"):
        RagConfig.from_dict({"embedding": {"query_backend": "tensorflow"}})


@pytest.mark.slow
def test_onnx_query_vectors_equal_pytorch_and_export_is_cached(tmp_path, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    import logging

    from rag.embedding import SentenceTransformerEmbedder

    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    torch_only = SentenceTransformerEmbedder(EmbeddingConfig(query_backend="torch"))
    assert torch_only.query_encoder() is None
    first = SentenceTransformerEmbedder()
    with caplog.at_level(logging.WARNING, logger="rag.setup"):
        assert first.query_encoder() is not None  # exported from the loaded PyTorch model
    # the one-time wait is announced (the CLI shows rag.setup notices without -v)
    notices = [r.getMessage() for r in caplog.records if r.name == "rag.setup"]
    assert len(notices) == 1 and notices[0].startswith("preparing the embedder all-MiniLM-L6-v2 once"), notices
    cache = tmp_path / "cache" / "onnx"
    files = [f for f in cache.glob("*.onnx") if ".split." not in f.name]  # the fp32 export
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    # queries run on the graph split from it (word-embedding table memory-mapped)
    version = __import__("onnxruntime").__version__
    assert sorted(f.name.split(".", 1)[1] for f in cache.iterdir() if f.is_file()) == \
        ["onnx", f"split.ort-{version}.data", f"split.ort-{version}.onnx", "words.npy"]  # weights beside the graph
    assert first.query_encoder().word_table is not None
    queries = ["What is the capital of France?", "0-dimensional biomaterials show inductive properties.",
               "zlib " * 400]  # the last one is truncated at 256 word pieces like PyTorch does
    ref = np.stack([torch_only.embed_query(q) for q in queries])
    got = np.stack([first.embed_query(q) for q in queries])
    assert got.dtype == np.float32 and got.shape == (3, 384)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (ref * got).sum(axis=1).min() > 0.99999
    second = SentenceTransformerEmbedder()  # a new process would do the same: load the cached file
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rag.setup"):
        assert np.allclose(second.embed_query(queries[0]), got[0], atol=1e-6)
    assert not [r for r in caplog.records if r.name == "rag.setup"]  # nothing to prepare any more
    assert second._model is None  # no PyTorch model was needed for the query
    assert second.query_encoder().word_table is not None and "fp32" not in second._onnx  # nor the whole graph
    # damaged cache files are replaced by a fresh export, never a crash
    query_graph = next(cache.glob("*.split.*.onnx"))
    files[0].write_bytes(b"not an onnx graph")
    query_graph.write_bytes(b"not an onnx graph")
    third = SentenceTransformerEmbedder()  # embed_queries: the ONNX encoder, never the numpy one
    assert np.allclose(third.embed_queries(queries[:1])[0], got[0], atol=1e-5)
    assert files[0].stat().st_size > 1_000_000 and query_graph.stat().st_size > 10_000
    from rag.onnx_embedding import weights_file

    weights = weights_file(query_graph)
    assert weights.stat().st_size > 1_000_000
    weights.write_bytes(b"cut short")  # a graph whose weights file is damaged is made again too
    fourth = SentenceTransformerEmbedder()
    assert np.allclose(fourth.embed_queries(queries[:1])[0], got[0], atol=1e-5)
    assert weights.stat().st_size > 1_000_000
