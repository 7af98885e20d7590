"""Index integrity: validation on open, verify/repair, no code execution from data, locking."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import RAG
from rag.errors import IndexFormatError, IndexLockedError, ModelError
from rag.index.store import IndexStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def built(tmp_path, mini_corpus, hash_config) -> Path:
    idx = tmp_path / "idx"
    RAG.create(idx, hash_config).ingest([mini_corpus])
    return idx


def _files(idx: Path) -> list[str]:
    return sorted(json.loads((idx / "manifest.json").read_text())["files"])


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rag", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=300)


@pytest.mark.parametrize("damage", ["truncate", "delete", "swap"])
def test_every_damaged_file_is_named(tmp_path, built, damage):
    files = _files(built)
    assert len(files) >= 5  # docstore, vectors, dense, bm25 arrays, vocab, params
    for rel in files:
        idx = tmp_path / f"copy-{damage}"
        if idx.exists():
            shutil.rmtree(idx)
        shutil.copytree(built, idx)
        p = idx / rel
        if damage == "truncate":
            data = p.read_bytes()
            p.write_bytes(data[: len(data) // 2])
        elif damage == "delete":
            p.unlink()
        else:  # replace with another file of the index (same name elsewhere would be caught too)
            other = idx / next(f for f in files if f != rel)
            p.write_bytes(other.read_bytes())
        with pytest.raises(IndexFormatError) as e:
            RAG(idx).verify()
        assert str(p) in str(e.value), (rel, str(e.value))
        assert "\n" not in str(e.value)
        with pytest.raises(IndexFormatError) as e2:
            RAG.open(idx)
        assert str(p) in str(e2.value)


def test_cli_verify_and_ask_refuse_with_the_same_message(tmp_path, built):
    rel = next(f for f in _files(built) if f.endswith("docstore.sqlite"))
    p = built / rel
    p.write_bytes(p.read_bytes()[:1000])
    v = _cli("verify", "--index", str(built))
    a = _cli("ask", "what is adler-32?", "--index", str(built), "--generator", "extractive")
    assert v.returncode == 1 and a.returncode == 1
    assert "Traceback" not in v.stderr + a.stderr
    assert v.stderr.strip() == a.stderr.strip()
    assert str(p) in v.stderr and "truncated" in v.stderr


def test_format_version_and_embedder_mismatch(tmp_path, built, hash_config):
    m = json.loads((built / "manifest.json").read_text())
    m2 = dict(m, format_version=99)
    (built / "manifest.json").write_text(json.dumps(m2))
    with pytest.raises(IndexFormatError, match="format version 99"):
        RAG.open(built)
    (built / "manifest.json").write_text(json.dumps(m))
    from rag.config import RagConfig

    other = RagConfig.from_dict({"embedding": {"model": "hash-32"}})
    with pytest.raises(IndexFormatError, match="embedder"):
        RAG.open(built, other)


def test_count_mismatch_is_detected(tmp_path, built):
    m = json.loads((built / "manifest.json").read_text())
    m["counts"]["chunks"] += 1
    (built / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="chunks"):
        RAG.open(built)


def test_repair_rebuilds_derived_files(tmp_path, built, hash_config):
    rag = RAG.open(built, hash_config)
    before = [(h.chunk.id, round(h.score, 5)) for h in rag.search("ADLER-32 checksum", top_k=5)]
    rel = next(f for f in _files(built) if f.endswith("dense.faiss"))
    (built / rel).write_bytes(b"garbage")
    with pytest.raises(IndexFormatError):
        RAG(built).verify()
    res = RAG(built, hash_config).repair()
    assert RAG(built).verify()["chunks"] == res["chunks"]
    after = [(h.chunk.id, round(h.score, 5)) for h in RAG.open(built, hash_config).search("ADLER-32 checksum", top_k=5)]
    assert after == before


class _Payload:
    """Unpickling this runs a command that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payloads_never_run(tmp_path, built, hash_config):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_Payload(marker))
    gen = built / json.loads((built / "manifest.json").read_text())["gen_dir"]
    # where a careless loader would look: pickled docstore/index files beside ours
    for name in ("docstore.pkl", "index.pkl", "bm25.pkl", "sparse/bm25.pkl", "sparse/retriever.pkl", "vectors.pkl"):
        (gen / name).parent.mkdir(exist_ok=True)  # a generation of segments has no sparse/ folder
        (gen / name).write_bytes(payload)
    (built / "config.pkl").write_bytes(payload)
    rag = RAG.open(built, hash_config)
    rag.search("checksum", top_k=3)
    RAG(built).verify()
    assert not marker.exists()
    # an object array (pickled) inside our own .npz/.npy is refused, not loaded
    np.save(tmp_path / "evil.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    vec_rel = next(f for f in _files(built) if f.endswith("vectors.npy"))
    shutil.copy(tmp_path / "evil.npy", built / vec_rel)
    with pytest.raises(IndexFormatError):
        RAG(built).verify()
    with pytest.raises(IndexFormatError):
        RAG(built, hash_config).repair()
    assert not marker.exists()


def test_pickled_model_weights_are_refused(tmp_path):
    from rag.config import EmbeddingConfig
    from rag.embedding import SentenceTransformerEmbedder

    model = tmp_path / "evil-model"
    model.mkdir()
    marker = tmp_path / "PWNED"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    (model / "config.json").write_text("{}")
    emb = SentenceTransformerEmbedder(EmbeddingConfig(model=str(model)))
    with pytest.raises(ModelError, match="pickled"):
        emb.embed_query("hello")
    assert not marker.exists()


def test_config_file_is_data_only(tmp_path):
    from rag.config import RagConfig
    from rag.errors import ConfigError

    marker = tmp_path / "PWNED"
    cfg = tmp_path / "rag.toml"
    cfg.write_text(f'[embedding]\nmodel = "__import__(\'os\').system(\'touch {marker}\')"\n[nope]\nx = 1\n')
    with pytest.raises(ConfigError, match="unknown config section 'nope'"):
        RagConfig.load(cfg)
    assert not marker.exists()


def test_second_writer_waits_then_names_holder(tmp_path, built, hash_config, mini_corpus):
    store = IndexStore(built)
    with store.lock(0):
        with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
            RAG.create(built, hash_config).ingest([mini_corpus], wait_s=0.2)
        r = _cli("ingest", str(mini_corpus), "--index", str(built), "--embedder", "testing:hash-64", "--wait", "0.5")
        assert r.returncode == 1 and f"pid {os.getpid()}" in r.stderr and "Traceback" not in r.stderr


def test_stale_temporary_files_are_cleaned(tmp_path, built, hash_config, mini_corpus):
    gen = json.loads((built / "manifest.json").read_text())["generation"]
    (built / f"gen-{gen + 1:06d}.tmp-99999").mkdir()
    (built / f"gen-{gen + 1:06d}.tmp-99999" / "docstore.sqlite").write_bytes(b"half")
    (built / f"gen-{gen + 5:06d}").mkdir()  # renamed but never committed
    (built / ".manifest.json.tmp-99999").write_text("{")
    before = RAG.open(built, hash_config).search("checksum", top_k=3)
    (mini_corpus / "new.txt").write_text("Telescopes observe distant galaxies and zebras graze on savannas.")
    RAG.create(built, hash_config).ingest([mini_corpus])
    names = {p.name for p in built.iterdir()}
    assert not any(".tmp-" in n for n in names)
    assert f"gen-{gen + 5:06d}" not in names
    assert RAG(built).verify()
    assert before
