"""The local backend's leases (rag/index/local.py): a generation held by a lease in this process
stays open and on disk through any number of commits, and is closed once its last lease ends."""

from __future__ import annotations

from rag import RAG, Filter
from rag.config import RagConfig


def test_a_held_lease_survives_commits_and_keeps_its_generation_on_disk(tmp_path, mini_corpus):
    cfg = RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}, "index": {"keep_generations": 1}})
    idx = tmp_path / "idx"
    rag = RAG.create(idx, cfg)
    rag.ingest([mini_corpus])
    note = tmp_path / "note.txt"
    with rag.lease() as old:
        assert old.generation == 1
        before = {c.id: c.text for c in old.chunks(old.chunk_ids().tolist())}
        for k in range(4):  # four commits in this process, keeping only 1 generation besides leased ones
            note.write_text(f"Note number {k} about walruses.")
            assert rag.ingest([note]).generation == k + 2
        assert (idx / "gen-000001").is_dir()  # leased here, so the writer kept it
        assert {c.id: c.text for c in old.chunks(old.chunk_ids().tolist())} == before  # still readable
        assert len(old.sparse_search("compression data", 3, Filter())) == 3
        assert len(old.dense_search(rag.embedder.embed_query("compression"), 3, Filter())) == 3
        with rag.lease() as new:
            assert new.generation == 5 and new.counts.chunks == old.counts.chunks + 1
    note.write_text("Note number 5 about walruses.")
    rag.ingest([note])
    assert not (idx / "gen-000001").exists()  # no lease holds it any more: removed by the next commit
    assert rag.generation == 6


def test_leases_of_one_generation_share_one_open_state(tmp_path, mini_corpus, hash_config):
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([mini_corpus])
    with rag.lease() as a, rag.lease() as b:
        assert a is b
    rag.close()
    with rag.lease() as c:
        assert c.generation == 1 and c is not a
