"""Shared fixtures. Fast tests use the deterministic HashEmbedder; tests marked ``slow`` load
the real packaged models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Derived model files (the ONNX query encoder) go to a per-session folder, not ~/.cache."""
    import os

    old = os.environ.get("RAG_CACHE_DIR")
    os.environ["RAG_CACHE_DIR"] = str(tmp_path_factory.mktemp("rag-cache"))
    yield
    if old is None:
        os.environ.pop("RAG_CACHE_DIR", None)
    else:
        os.environ["RAG_CACHE_DIR"] = old


@pytest.fixture
def mini_corpus(tmp_path) -> Path:
    """A writable copy of tests/data/mini (5 real document excerpts)."""
    dst = tmp_path / "mini"
    shutil.copytree(DATA / "mini", dst)
    return dst


@pytest.fixture
def hash_config():
    from rag.config import RagConfig

    return RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}})


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED


@pytest.fixture(scope="session")
def corpora_index(tmp_path_factory) -> Path:
    """Folder of an index of the demo corpus (corpora/) built once per test session with the
    REAL packaged embedder (all-MiniLM-L6-v2; about 40 s). Read-only: open it with RAG.open.
    Only tests marked slow should use it."""
    from rag import RAG

    path = tmp_path_factory.mktemp("corpora-index") / "idx"
    report = RAG.create(path).ingest([ROOT / "corpora"])
    assert report.files_ingested >= 10 and not report.skipped, report.skipped
    return path
