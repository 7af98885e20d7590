"""A fake-embedder index with access groups and metadata, shared by the integration tests
(LangChain, LlamaIndex): records with random words, a random subset of GROUPS as ``acl`` and a
``lang`` field, and the ground truth of who may see what, to check filters and principals
against ``RAG.search`` with 0 leaks."""

from __future__ import annotations

import json
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag import RAG
from rag.config import RagConfig
from rag.loaders import LoaderOptions

GROUPS = ["hr", "eng", "legal"]
WORDS = "salary budget merger contract launch roadmap invoice lawsuit hiring patent server outage audit".split()
FAKE = {"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}, "dedup": {"enabled": False}}
FILTERS = [None, {"source": "*/a.jsonl"}, {"lang": "de"}, {"lang": ["en", "de"]}, {"source": "*/b.jsonl", "lang": "en"}]


def write_acl_corpus(folder: Path, seed: int, n_docs: int = 60) -> dict[str, dict]:
    """Two JSONL files (a.jsonl, b.jsonl) of ``n_docs // 2`` records each; returns record id ->
    ``{"acl": set of groups, "lang": "en"|"de", "file": name}``."""
    rng = random.Random(seed)
    truth: dict[str, dict] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("a", "b"):
        lines = []
        for i in range(n_docs // 2):
            rid = f"{name}{i}"
            groups = sorted(rng.sample(GROUPS, rng.randint(0, 2)))
            lang = rng.choice(["en", "de"])
            truth[rid] = {"acl": set(groups), "lang": lang, "file": f"{name}.jsonl"}
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30))) + f" unique{rid}."
            lines.append(json.dumps({"id": rid, "title": f"record {rid}", "text": text, "acl": groups, "lang": lang}))
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return truth


def build_acl_rag(base: Path, seed: int) -> tuple[RAG, dict[str, dict]]:
    """Index ``write_acl_corpus(base / "corpus", seed)`` into ``base / "idx"`` (fake embedder,
    ``acl`` and ``lang`` kept as metadata); the opened RAG and the truth."""
    truth = write_acl_corpus(base / "corpus", seed)
    cfg = RagConfig.from_dict(FAKE)
    RAG.create(base / "idx", cfg).ingest([base / "corpus"], loader_options=LoaderOptions(metadata_fields=("acl", "lang")))
    return RAG.open(base / "idx", cfg), truth


def visible(meta: dict, principals, filters) -> bool:
    """Whether a record (``meta`` from the truth) may be shown to ``principals`` under ``filters``."""
    if principals is not None and meta["acl"] and not meta["acl"] & set(principals):
        return False
    for key, want in (filters or {}).items():
        wanted = want if isinstance(want, list) else [want]
        have = meta["file"] if key == "source" else meta[key]
        if not any(have == w or (key == "source" and w.endswith("/" + have)) for w in wanted):
            return False
    return True


def acl_search_cases(test):
    """Hypothesis cases for a test ``(acl_rag, principals, filters, words, top_k, mode)`` that
    compares an adapter's retriever with ``RAG.search``: 300 examples over the groups (and one
    nobody holds), FILTERS, query words (some matching one record, one matching none), top_k
    1..20 and the three modes."""
    cases = given(principals=st.one_of(st.none(), st.lists(st.sampled_from(GROUPS + ["nobody"]), max_size=2, unique=True)),
                  filters=st.sampled_from(FILTERS),
                  words=st.lists(st.sampled_from(WORDS + ["uniquea3", "uniqueb7", "zzz"]), min_size=1, max_size=3),
                  top_k=st.integers(1, 20), mode=st.sampled_from(["hybrid", "dense", "bm25"]))
    return settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])(cases(test))
