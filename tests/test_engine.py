"""QueryEngine: one engine shared by many threads while another process commits; request-scoped
results; top_k validation (issue 12, defects 1 and 7)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rag import RAG
from rag.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

COMMITTER = """
import sys
from pathlib import Path
from rag import RAG
from rag.config import RagConfig
idx, marker, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
cfg = RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}})
rag = RAG.open(idx, cfg)
for k in range(1, n + 1):
    marker.write_text(f"Epochmarker zebra number {k}. This file changes on every commit.\\n")
    rep = rag.ingest([marker], wait_s=60)
    assert rep.changed, rep
    print(rep.generation, k, flush=True)
"""


def _marker_epoch(hits) -> int | None:
    for h in hits:
        words = h.chunk.text.split()
        if words and words[0] == "Epochmarker":
            return int(words[3].rstrip("."))
    return None


def test_shared_engine_survives_commits_and_each_answer_comes_from_one_generation(tmp_path, mini_corpus, hash_config):
    idx = tmp_path / "idx"
    marker = tmp_path / "marker.txt"
    marker.write_text("Epochmarker zebra number 0. This file changes on every commit.\n")
    base = RAG.create(idx, hash_config).ingest([mini_corpus, marker]).generation
    rag = RAG.open(idx, hash_config)
    n_commits = 30
    proc = subprocess.Popen([sys.executable, "-c", COMMITTER, str(idx), str(marker), str(n_commits)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    errors: list[str] = []
    seen: list[tuple[str, int, int | None]] = []  # (kind, generation, marker epoch in the hits)
    lock = threading.Lock()

    def worker(i: int) -> None:
        while proc.poll() is None:
            try:
                if i % 2:
                    res = rag.search_result("epochmarker zebra", top_k=5)
                    row = ("search", res.generation, _marker_epoch(res.hits))
                else:
                    ans = rag.ask("epochmarker zebra number?", top_k=5)
                    row = ("ask", ans.generation, _marker_epoch(ans.hits))
                with lock:
                    seen.append(row)
            except Exception as e:  # noqa: BLE001 - the test counts every failure
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    out, err = proc.communicate(timeout=600)
    for t in threads:
        t.join(timeout=60)
    assert proc.returncode == 0, err
    assert errors == [], errors[:5]
    commits = [tuple(int(x) for x in line.split()) for line in out.splitlines()]
    assert len(commits) == n_commits
    # commit k made generation base + k (nobody else writes this index)
    assert all(g == base + k for g, k in commits)
    asks = [r for r in seen if r[0] == "ask"]
    assert len(asks) > 0 and len(seen) > 20
    # every result's hits come from the generation it names: the marker text matches it
    for kind, gen, epoch in seen:
        assert epoch is not None, (kind, gen)
        assert epoch == gen - base, (kind, gen, epoch)
    assert len({g for _, g, _ in seen}) >= 3  # the workers really saw commits happen


def test_search_result_is_request_scoped(tmp_path, mini_corpus, hash_config):
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([mini_corpus])
    a = rag.search_result("compression", top_k=3)
    b = rag.search_result("HTTP/2 streams", top_k=3, mode="bm25")
    assert a.generation == b.generation == rag.generation == 1
    assert {"embed_s", "dense_s", "sparse_s", "fusion_s", "total_s"} <= set(a.timings)
    assert "embed_s" not in b.timings and b.query_vector is None
    assert a.query_vector.shape == (64,) and a.query_vector.dtype.name == "float32"
    assert [h.chunk.id for h in a.hits] == [h.chunk.id for h in rag.search("compression", top_k=3)]
    assert not hasattr(rag.engine.retriever, "last_timings")
    ans = rag.ask("What does DEFLATE compress?")
    assert ans.generation == 1 and "retrieval_s" in ans.timings


@pytest.mark.parametrize("bad", [0, -1, 2.7, True, "3", 1.0])
def test_library_top_k_is_validated(tmp_path, mini_corpus, hash_config, bad):
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([mini_corpus])
    with pytest.raises(ConfigError, match="top_k"):
        rag.search("compression", top_k=bad)
    with pytest.raises(ConfigError, match="top_k"):
        rag.ask("what is compression?", top_k=bad)


def test_top_k_none_means_the_configured_default(tmp_path, mini_corpus, hash_config):
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([mini_corpus])
    assert len(rag.search("compression")) == rag.config.retrieval.top_k == 5
    assert len(rag.search("compression", top_k=2)) == 2


def test_warm_up_loads_models_once(tmp_path, mini_corpus, hash_config):
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([mini_corpus])
    parts = rag.warm_up()
    assert {"embedder_s", "generator_s", "index_s"} <= set(parts)
    emb, gen = rag.embedder, rag.generator
    rag.ask("What does DEFLATE compress?")
    assert rag.embedder is emb and rag.generator is gen


def test_warm_up_primes_each_prompt_family_of_a_token_scorer(tmp_path, mini_corpus, hash_config):
    """A generator that scores tokens gets one span prompt and one yes/no prompt at warm-up, the
    two prompt families whose shared prefixes the first question would otherwise compute."""
    from rag.answering.spans import span_messages
    from rag.answering.verdict import yes_no_messages
    from rag.generation import EchoGenerator

    class Scorer(EchoGenerator):
        def __init__(self):
            super().__init__()
            self.systems = []

        def token_logprobs(self, messages, texts, **kw):
            self.systems.append(messages[0]["content"])
            return [([len(t)], [-1.0], []) for t in texts]

        def score_continuations(self, messages, candidates, prefix=""):
            return [-1.0 for _ in candidates]

    gen = Scorer()
    rag = RAG.create(tmp_path / "idx", hash_config, generator=gen)
    rag.ingest([mini_corpus])
    parts = rag.warm_up()
    assert parts["prime_s"] >= 0
    assert gen.systems == [span_messages("q", "t", "s")[0]["content"], yes_no_messages("q", "s")[0]["content"]]
    assert gen.systems[0] != gen.systems[1]
