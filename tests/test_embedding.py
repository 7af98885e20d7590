"""Embedder: ONNX Runtime batches keep input order and ignore padding; document vectors agree
with PyTorch's (slow)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from rag.config import EmbeddingConfig

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """An OnnxEncoder over a hand-built graph (last_hidden_state = table[input_ids] * mask, so a
    padding position that leaked into the mean would change the vector) and a word-level
    tokenizer with [CLS]/[SEP]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    from rag.onnx_embedding import OnnxEncoder

    d = tmp_path_factory.mktemp("tiny")
    words = [f"w{i}" for i in range(40)]
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{w: i + 4 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(d / "tokenizer.json"))
    table = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    table[0] = 100.0  # padding rows would dominate any mean they entered
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("Add", ["masked", "zero_types"], ["last_hidden_state"]),
        helper.make_node("Cast", ["token_type_ids"], ["typesf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["typesf"], ["types_sum"], keepdims=0),
        helper.make_node("Mul", ["types_sum", "zero"], ["zero_types"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", 8])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], dtype=np.int64), "axis"),
         numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(d / "tiny.onnx"))
    return OnnxEncoder(d / "tiny.onnx", d / "tokenizer.json", max_seq_length=12, normalize=True), table, vocab


def test_length_sorted_batches_return_vectors_in_input_order(tiny_encoder):
    enc, table, vocab = tiny_encoder
    rng = np.random.default_rng(1)
    texts = [" ".join(f"w{int(j)}" for j in rng.integers(0, 40, size=int(n))) for n in rng.integers(1, 20, size=37)]
    got = enc.encode_batch(texts, batch_size=5)
    assert got.shape == (37, 8) and got.dtype == np.float32
    for i, t in enumerate(texts):
        ids = [2] + [vocab[w] for w in t.split()][:10] + [3]  # truncated at 12 with [CLS]/[SEP]
        v = table[ids].mean(axis=0)
        assert np.allclose(got[i], v / np.linalg.norm(v), atol=1e-5), i
        assert np.allclose(got[i], enc.encode(t), atol=1e-5)
    assert enc.encode_batch([], batch_size=5).shape == (0, 8)


def test_batches_run_in_parallel_give_the_same_vectors_in_input_order(tiny_encoder):
    from rag.onnx_embedding import OnnxEncoder

    enc, table, vocab = tiny_encoder
    par = OnnxEncoder(enc.path, enc.tokenizer_json, 12, True, batch_workers=3)
    assert par.session.get_session_options().intra_op_num_threads == 1  # one thread per batch
    rng = np.random.default_rng(2)
    texts = [" ".join(f"w{int(j)}" for j in rng.integers(0, 40, size=int(n))) for n in rng.integers(1, 20, size=53)]
    got = par.encode_batch(texts, batch_size=4)
    assert got.shape == (53, 8) and par._pool is not None  # 14 batches went to the 3 workers
    assert np.array_equal(got, enc.encode_batch(texts, batch_size=4))
    for i in (0, 17, 52):
        ids = [2] + [vocab[w] for w in texts[i].split()][:10] + [3]
        v = table[ids].mean(axis=0)
        assert np.allclose(got[i], v / np.linalg.norm(v), atol=1e-5), i


@pytest.mark.slow
def test_onnx_document_vectors_match_pytorch(shared_data):
    import json

    from rag.embedding import SentenceTransformerEmbedder

    lines = (shared_data / "beir-scifact" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    texts = [json.loads(x)["title"] + "\n" + json.loads(x)["text"] for x in lines] + ["short", "a b c"]
    torch_emb = SentenceTransformerEmbedder(EmbeddingConfig(document_backend="torch"))
    ref = torch_emb.embed_documents(texts)
    fp32 = SentenceTransformerEmbedder(EmbeddingConfig(document_backend="onnx-fp32"))
    int8 = SentenceTransformerEmbedder(EmbeddingConfig(document_backend="onnx-int8"))
    assert fp32.document_backend == "onnx-fp32" and int8.document_backend == "onnx-int8"
    v32, v8 = fp32.embed_documents(texts), int8.embed_documents(texts)
    assert v32.shape == v8.shape == (42, 384) and v32.dtype == v8.dtype == np.float32
    assert np.allclose(np.linalg.norm(v8, axis=1), 1.0, atol=1e-5)
    assert (ref * v32).sum(axis=1).min() >= 0.999
    assert (ref * v8).sum(axis=1).min() >= 0.97 and (ref * v8).sum(axis=1).mean() >= 0.99
    # short texts and queries take the fp32 encoder, whatever the document backend
    assert np.allclose(int8.embed_queries(texts[:3]), v32[:3], atol=1e-5)
    assert np.allclose(int8.embed_query(texts[0]), v32[0], atol=1e-5)
    assert int8._model is None  # graphs came from the cache: no PyTorch model loaded
    # documents ran on the split int8 graph: the whole int8 graph's vectors, one shared word table
    split8, whole8 = int8.onnx_encoder("int8-split"), int8.onnx_encoder("int8")
    assert split8.word_table is not None and split8.word_table == int8.query_encoder().word_table
    # the split graphs keep their weights beside them (mapped on load), not inside the protobuf
    from rag.onnx_embedding import weights_file

    for g in (split8.path, int8.query_encoder().path):
        assert weights_file(g).stat().st_size > 10_000_000 > 20 * g.stat().st_size, g
    # (int8 activations are quantised per batch: the same batches, so the same vectors)
    from rag.onnx_embedding import DOCUMENT_BATCH

    assert split8.batch_workers == whole8.batch_workers >= 1 and split8.session.get_session_options().intra_op_num_threads == (
        1 if split8.batch_workers > 1 else min(2, len(os.sched_getaffinity(0))))
    assert (whole8.encode_batch(texts, batch_size=DOCUMENT_BATCH) * v8).sum(axis=1).min() >= 0.99999


def test_split_graph_gives_the_whole_graphs_vectors_from_a_memory_mapped_word_table(tiny_encoder, tmp_path):
    from rag.onnx_embedding import WORD_VECTORS_INPUT, make_split_graph

    enc, table, _ = tiny_encoder
    graph, words = tmp_path / "q.onnx", tmp_path / "q-words.npy"
    q = make_split_graph(enc, graph, words)
    assert q is not None and q.path == graph and q.word_table == words
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q-words.npy", "q.onnx"]  # no temporary files left
    assert np.array_equal(np.load(words), table)  # the table left the graph ...
    assert graph.stat().st_size < 1000 < enc.path.stat().st_size
    assert WORD_VECTORS_INPUT in {i.name for i in q.session.get_inputs()}
    texts = ["w1 w2 w3", "w5", " ".join(f"w{i}" for i in range(30)), "w39 w0 w7 w7"]
    assert np.allclose(q.encode_batch(texts, batch_size=3), enc.encode_batch(texts, batch_size=3), atol=1e-6)
    assert np.allclose(q.encode(texts[0]), enc.encode(texts[0]), atol=1e-6)
    # ... and a new process loads the saved files without deriving them again
    from rag.onnx_embedding import OnnxEncoder

    again = OnnxEncoder(graph, enc.tokenizer_json, 12, True, word_table=words, optimized=True)
    assert np.allclose(again.encode(texts[2]), enc.encode(texts[2]), atol=1e-6)


def test_no_split_graph_for_a_graph_without_a_word_lookup(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from rag.onnx_embedding import OnnxEncoder, make_split_graph

    d = tmp_path / "m"
    d.mkdir()
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(d / "tokenizer.json"))
    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["f", "axis"], ["last_hidden_state"])]
    graph = helper.make_graph(
        nodes, "no-lookup",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in ("input_ids", "attention_mask", "token_type_ids")],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "tokens", 1])],
        [onnx.numpy_helper.from_array(np.array([2], dtype=np.int64), "axis")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(d / "g.onnx"))
    enc = OnnxEncoder(d / "g.onnx", d / "tokenizer.json", 8, False)
    assert make_split_graph(enc, tmp_path / "out" / "q.onnx", tmp_path / "out" / "q.npy") is None
    assert list((tmp_path / "out").iterdir()) == []
