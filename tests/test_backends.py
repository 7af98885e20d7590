"""The same ingest / delete / sync / filter / ACL / search scenarios on both index backends:
the local folder and Qdrant (embedded local mode), through the seam's users (Indexer and
QueryEngine), plus a cross-check that both backends give the same answers."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rag.config import RagConfig
from rag.engine import QueryEngine
from rag.ingest import Indexer
from rag.testing import HashEmbedder

BACKENDS = ["local", "qdrant"]


def _config() -> RagConfig:
    return RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}})


class Env:
    """One index of one backend with its Indexer and QueryEngine."""

    def __init__(self, kind: str, root):
        from rag.index import open_index

        self.kind = kind
        self.config = _config()
        loc = str(root / "idx") if kind == "local" else f"qdrant+local:{root / 'q'}"
        self.index = open_index(loc, self.config)
        self.embedder = HashEmbedder(64)
        cache = root / "embcache.sqlite"
        self.indexer = Indexer(self.index, self.config, self.embedder, cache_path=cache, index_dir=loc)
        self.engine = QueryEngine(self.index, self.config, embedder=self.embedder)

    def ingest(self, *paths, **kw):
        return self.indexer.ingest([str(p) for p in paths], **kw)

    def search(self, q, **kw):
        return self.engine.search(q, **{"top_k": 5, **kw}).hits

    def close(self):
        if self.kind == "qdrant":
            from rag.index.qdrant.index import close_clients

            close_clients()


def assert_same_hits(a, b, what) -> None:
    """Same scores (float32 precision) and the same chunks; chunks with equal scores may come in
    either order (the fake embedder makes ties), and ties at the cut may differ in which made it."""
    assert np.allclose([h.score for h in a], [h.score for h in b], rtol=1e-4, atol=1e-5), what
    key = lambda hits: sorted((-round(h.score, 4), h.chunk.id, h.chunk.text) for h in hits)  # noqa: E731
    cut = round(min(h.score for h in a), 4) if a else 0
    assert [x for x in key(a) if -x[0] > cut] == [x for x in key(b) if -x[0] > cut], what


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    env = Env(request.param, tmp_path)
    yield env
    env.close()


def test_ingest_counts_and_incremental(backend, mini_corpus):
    r = backend.ingest(mini_corpus)
    assert r.files_ingested == 5 and r.total_chunks > 5 and r.changed
    with backend.index.lease() as reader:
        assert reader.counts.chunks == r.total_chunks
        assert reader.counts.files == 5
        gen = reader.generation
    again = backend.ingest(mini_corpus)
    assert not again.changed and again.files_unchanged == 5 and again.total_chunks == r.total_chunks
    with backend.index.lease() as reader:
        assert reader.generation == gen
    f = mini_corpus / "exceptions.md"
    f.write_text(f.read_text() + "\n\nA brand new paragraph about zeppelins and quokkas.\n")
    third = backend.ingest(mini_corpus)
    assert third.files_ingested == 1 and third.files_unchanged == 4
    hits = backend.search("zeppelins quokkas", mode="bm25")
    assert hits and hits[0].chunk.source.endswith("exceptions.md") and "zeppelins" in hits[0].chunk.text


def test_sync_and_delete_keep_other_ids(backend, mini_corpus):
    backend.ingest(mini_corpus)
    with backend.index.lease() as reader:
        before = {c.id: c.text for c in reader.chunks(range(0, 1000))}
    (mini_corpus / "http2.md").unlink()
    r = backend.ingest(mini_corpus, sync=True)
    assert [s.rsplit("/", 1)[1] for s in r.files_removed] == ["http2.md"]
    assert all(not h.chunk.source.endswith("http2.md") for h in backend.search("HTTP/2 streams frames", top_k=20))
    d = backend.indexer.delete([str(mini_corpus / "*.rst")])
    assert [s.rsplit("/", 1)[1] for s in d.files_removed] == ["pep-0020.rst"] and d.chunks_removed > 0
    with backend.index.lease() as reader:
        after = {c.id: c.text for c in reader.chunks(range(0, 1000))}
        assert reader.counts.files == 3 and reader.counts.chunks == len(after)
    assert after and all(before[i] == t for i, t in after.items())  # surviving chunks keep id and text


def test_filters_source_globs_and_metadata(backend, mini_corpus):
    backend.ingest(mini_corpus)
    md = backend.search("checksum compression streams errors", top_k=50, filters={"source": "*.md"})
    assert md and {h.chunk.source.rsplit("/", 1)[1] for h in md} <= {"exceptions.md", "http2.md"}
    one = backend.search("checksum", top_k=50, filters={"source": str(mini_corpus / "rfc1950-excerpt.txt")})
    assert one and {h.chunk.source.rsplit("/", 1)[1] for h in one} == {"rfc1950-excerpt.txt"}
    folder = backend.search("checksum", top_k=50, filters={"source": str(mini_corpus)})
    assert len(folder) >= len(one)
    name = backend.search("beautiful ugly", top_k=50, filters={"source": "pep-0020.rst"})
    assert name and {h.chunk.source.rsplit("/", 1)[1] for h in name} == {"pep-0020.rst"}
    typed = backend.search("checksum", top_k=50, filters={"type": "text"})
    assert typed and all(h.chunk.source.endswith(".txt") for h in typed)
    assert backend.search("checksum", filters={"type": "no-such-type"}) == ()


def test_acl(backend, mini_corpus, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    shutil.move(str(mini_corpus / "http2.md"), secret / "http2.md")
    backend.ingest(mini_corpus)
    backend.ingest(secret, acl=["team-a"])
    q = "HTTP/2 streams frames multiplexing"
    public = backend.search(q, top_k=50, principals=[])
    assert public and all("secret" not in h.chunk.source for h in public)
    other = backend.search(q, top_k=50, principals=["team-b"])
    assert [h.chunk.id for h in other] == [h.chunk.id for h in public]
    team = backend.search(q, top_k=50, principals=["team-a"])
    assert any("secret" in h.chunk.source for h in team)
    trusted = backend.search(q, top_k=50)
    assert {h.chunk.id for h in team} == {h.chunk.id for h in trusted}


def test_duplicates_alias_filter_and_revive(backend, mini_corpus, tmp_path):
    copy = tmp_path / "copies"
    copy.mkdir()
    shutil.copy(mini_corpus / "pep-0020.rst", copy / "zen-copy.rst")
    backend.ingest(mini_corpus, copy)
    with backend.index.lease() as reader:
        assert reader.counts.duplicate_documents == 1
        docs = {d.source.rsplit("/", 1)[1]: d for d in reader.documents()}
    alias = docs["zen-copy.rst"] if docs["zen-copy.rst"].alias_of else docs["pep-0020.rst"]
    kept = docs["pep-0020.rst"] if alias is docs["zen-copy.rst"] else docs["zen-copy.rst"]
    assert alias.alias_of == kept.key and kept.alias_of is None
    q = "beautiful is better than ugly"
    via_alias = backend.search(q, top_k=5, filters={"source": alias.source})
    assert via_alias and via_alias[0].chunk.source == kept.source  # the kept copy, seen through its alias
    backend.indexer.delete([kept.source])
    back = backend.search(q, top_k=5, mode="bm25")
    assert back and back[0].chunk.source == alias.source  # the alias's own text came back
    with backend.index.lease() as reader:
        assert reader.counts.duplicate_documents == 0


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_both_backends_answer_the_same(mode, mini_corpus, tmp_path):
    """Same corpus, same settings: same chunk ids, and scores equal to float32 precision."""
    envs = [Env(k, tmp_path / k) for k in BACKENDS]
    try:
        for e in envs:
            (tmp_path / e.kind).mkdir(exist_ok=True)
            e.ingest(mini_corpus)
        for q in ["adler-32 checksum", "HTTP/2 streams", "beautiful is better than ugly", "exception handling",
                  "compression with deflate", "licence"]:
            a, b = (e.search(q, top_k=8, mode=mode) for e in envs)
            assert_same_hits(a, b, q)
    finally:
        for e in envs:
            e.close()


def test_migrate_there_and_back(mini_corpus, tmp_path):
    """local -> Qdrant -> local with stored vectors: same ids, texts, records and search results."""
    from rag.index import open_index
    from rag.migrate import migrate

    copy = tmp_path / "copies"
    copy.mkdir()
    shutil.copy(mini_corpus / "pep-0020.rst", copy / "zen-copy.rst")
    (tmp_path / "src").mkdir()
    src = Env("local", tmp_path / "src")
    src.ingest(mini_corpus, copy)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "plan.txt").write_text("The adler-32 checksum plan is secret: team A only.\n")
    src.ingest(secret, acl=["team-a"])
    q_loc, back_loc = f"qdrant+local:{tmp_path / 'mq'}", str(tmp_path / "back")
    there = migrate(str(src.index.dir), q_loc, src.config)
    assert there["chunks"] > 0 and there["aliases"] == 1 and there["ids_kept"] and there["vectors"] == there["chunks"]
    back = migrate(q_loc, back_loc, src.config)
    assert {k: back[k] for k in ("documents", "aliases", "files", "chunks", "ids_kept")} == \
        {k: there[k] for k in ("documents", "aliases", "files", "chunks", "ids_kept")}
    emb = HashEmbedder(64)
    engines = [src.engine] + [QueryEngine(open_index(loc, src.config), src.config, embedder=emb) for loc in (q_loc, back_loc)]
    for q in ["adler-32 checksum", "beautiful is better than ugly", "HTTP/2 streams", "exceptions"]:
        for kw in ({"mode": "hybrid"}, {"mode": "bm25", "principals": []}, {"mode": "dense", "filters": {"source": "*.rst"}}):
            res = [e.search(q, top_k=6, **kw).hits for e in engines]
            assert_same_hits(res[0], res[1], (q, kw))
            assert_same_hits(res[0], res[2], (q, kw))
    with open_index(back_loc, src.config).lease() as r, src.index.lease() as r0:
        assert [(d.key, d.alias_of, d.acl, d.content_hash) for d in r.documents()] == \
            [(d.key, d.alias_of, d.acl, d.content_hash) for d in r0.documents()]
        assert np.array_equal(r.chunk_ids(), r0.chunk_ids()) and np.allclose(r.vectors(), r0.vectors())
    with pytest.raises(Exception, match="already holds an index"):
        migrate(str(src.index.dir), back_loc, src.config)
    src.close()


def test_engine_rrf_equals_our_rrf(mini_corpus, tmp_path):
    """[store] fusion = "qdrant-rrf": Qdrant fuses in one query, with the same RRF scores as ours."""
    from rag.index import open_index

    env = Env("qdrant", tmp_path)
    env.ingest(mini_corpus)
    ours_cfg = env.config.updated({"retrieval": {"fusion": "rrf"}})
    engine_cfg = env.config.updated({"store": {"fusion": "qdrant-rrf"}})
    ours = QueryEngine(env.index, ours_cfg, embedder=env.embedder)
    theirs = QueryEngine(open_index(f"qdrant+local:{tmp_path / 'q'}", engine_cfg), engine_cfg, embedder=env.embedder)
    for q in ["adler-32 checksum", "HTTP/2 streams", "beautiful is better than ugly"]:
        a, b = ours.search(q, top_k=6).hits, theirs.search(q, top_k=6).hits
        assert_same_hits(a, b, q)
        assert all(h.dense_rank is None for h in b)  # per-retriever ranks are not reported by the engine
    env.close()


def test_exclusion_filter(backend, mini_corpus, tmp_path):
    from rag.index.backend import Filter

    extra = tmp_path / "extra"
    extra.mkdir()
    shutil.move(str(mini_corpus / "http2.md"), extra / "http2.md")
    backend.ingest(mini_corpus)
    backend.ingest(extra, tags={"kind": "synthetic"})
    q = "HTTP/2 streams frames"
    assert any("extra" in h.chunk.source for h in backend.search(q, top_k=50))
    kept = backend.search(q, top_k=50, filters=Filter(exclude=(("kind", ("synthetic",)),)))
    assert kept and all("extra" not in h.chunk.source for h in kept)
