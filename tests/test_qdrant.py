"""The Qdrant backend's own contracts: locations, BM25 term weights against our BM25Index,
filter compilation, consistency after an interrupted write, the writer lock, one-line errors.
Embedded local mode throughout; ``test_real_server`` runs only when RAG_QDRANT_URL is set."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from rag.config import BM25Config, RagConfig
from rag.errors import ConfigError, IndexFormatError, IndexLockedError, IndexNotFoundError
from rag.index.backend import TRUSTED, DocumentRecord, FileRecord, Filter
from rag.index.qdrant import open_qdrant, parse_location
from rag.index.qdrant.filters import compile_source, source_fields
from rag.index.qdrant.index import close_clients
from rag.index.qdrant.terms import TermWeighter, term_id
from rag.types import Chunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TEXTS = [
    "The zlib compressed data format uses the deflate algorithm and an Adler-32 checksum.",
    "Adler-32 is a checksum algorithm; it is faster than CRC32 but less reliable for short messages.",
    "HTTP/2 streams are multiplexed over one connection; each stream has its own flow control.",
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.",
    "Exceptions are raised when an error is detected; handlers catch them by class.",
    "The colour of the licence plate was organised by the centre.",
    "checksum checksum checksum",
    "",
]


@pytest.fixture(autouse=True)
def _close():
    yield
    close_clients()


def _unit(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write(ix, docs: dict[str, list[str]], *, dim: int = 8, acl: dict[str, tuple] | None = None, avgdl=None, seed=0,
           model_id: str = "t"):
    """Ingest ``{source: [chunk texts]}`` through the writer; returns the commit's metadata."""
    with ix.writer(embedder={"name": model_id, "model_id": model_id, "dim": dim}, settings={"bm25": {}}, avgdl=avgdl) as w:
        for j, (src, texts) in enumerate(docs.items()):
            rec = DocumentRecord(key=src, source=src, content_hash=f"c{j}", text_hash=f"t{j}", metadata={"type": "text"},
                                 acl=(acl or {}).get(src, ()))
            chunks = [Chunk(id=-1, doc_id=src, ordinal=i, start=0, end=len(t), text=t) for i, t in enumerate(texts)]
            w.upsert(rec, chunks, _unit(len(texts), dim, seed + j))
            w.put_file(FileRecord(source=src, content_hash=f"c{j}", n_documents=1))
        return w.commit()


# ---- locations ---------------------------------------------------------------------------------
def test_parse_locations():
    a = parse_location("qdrant+local:indexes/q")
    assert (a.kind, a.path, a.collection) == ("local", "indexes/q", "rag")
    b = parse_location("qdrant://db.example:7000/papers")
    assert (b.kind, b.url, b.collection) == ("server", "http://db.example:7000", "papers")
    c = parse_location("qdrants://db.example/papers")
    assert c.url == "https://db.example:6333"
    for bad, why in [("qdrant://host", "no collection"), ("qdrant+local:", "needs a folder"),
                     ("qdrant:///c", "no host"), ("qdrant://h/c-lock", "bad collection name")]:
        with pytest.raises(ConfigError, match=why) as e:
            parse_location(bad)
        assert "\n" not in str(e.value)


def test_import_is_lazy():
    code = "import sys, rag.index, rag.index.qdrant; rag.index.open_index('qdrant://h/c'); print('qdrant_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr


# ---- BM25 --------------------------------------------------------------------------------------
def test_term_ids_are_stable_uint32():
    assert term_id("checksum") == term_id("checksum") and 0 <= term_id("checksum") < 2**32
    assert term_id("checksum") == int.from_bytes(__import__("hashlib").blake2b(b"checksum", digest_size=4).digest(), "big")


def test_bm25_scores_equal_our_bm25_index(tmp_path):
    """Qdrant's IDF x our TF weights = BM25Index's Lucene BM25 score, for the same avgdl."""
    from rag.index.docstore import index_text
    from rag.index.sparse import BM25Index

    local = BM25Index.build([index_text(None, t) for t in TEXTS], np.arange(len(TEXTS)), BM25Config())
    ix = open_qdrant(f"qdrant+local:{tmp_path / 'q'}")
    _write(ix, {f"/d/{i}.txt": [t] for i, t in enumerate(TEXTS)}, avgdl=local.avgdl)
    with ix.lease() as r:
        for q in ["adler-32 checksum", "checksum checksum", "better than ugly", "license colors center", "the of",
                  "HTTP/2 stream flow"]:
            got = dict(r.sparse_search(q, 10, TRUSTED))
            s, ids = local.search(q, 10)
            want = dict(zip(ids.tolist(), s.tolist()))
            assert set(got) == set(want), q
            for i in want:
                assert got[i] == pytest.approx(want[i], rel=1e-5), (q, i)


def test_weights_saturate_and_normalise_by_length():
    w = TermWeighter(BM25Config(k1=0.9, b=0.4), avgdl=4.0)
    ids, vals = w.document("checksum checksum checksum")  # dl 3, tf 3
    assert len(ids) == 1 and vals[0] == pytest.approx(3 / (3 + 0.9 * (0.6 + 0.4 * 3 / 4)))
    q = dict(zip(*w.query("checksum checksum adler")))
    assert q[term_id("checksum")] == 2.0 and q[term_id("adler")] == 1.0  # weight 1 per occurrence
    assert dict(zip(*w.query("licence")))[term_id("licens")] == 1.0  # the other spelling's stem is queried too
    assert w.document("") == ([], [])


# ---- filters -------------------------------------------------------------------------------------
def test_source_fields_and_globs():
    f = source_fields("/a/b/c.tar.gz")
    assert f == {"source": "/a/b/c.tar.gz", "dirs": ["/", "/a", "/a/b"], "name": "c.tar.gz", "sfx": [".tar.gz", ".gz"]}
    assert compile_source("*") is None
    for ok in ["/a/b", "/a/b/*", "/a/b/*.md", "*.md", "*/notes.md"]:
        compile_source(ok)
    for bad in ["/a/b/x*.md", "/a/?.md", "/a/[ab].md", "/a/*/*.md", "*notes.md", "/a/*/notes.md"]:
        with pytest.raises(ConfigError, match="cannot be compiled") as e:
            compile_source(bad)
        assert "\n" not in str(e.value)


def test_filters_on_the_collection(tmp_path):
    ix = open_qdrant(f"qdrant+local:{tmp_path / 'q'}")
    _write(ix, {"/x/a.md": TEXTS[:2], "/x/sub/b.txt": TEXTS[2:4], "/y/c.tar.gz": TEXTS[4:5]},
           acl={"/x/sub/b.txt": ("team-a",)})
    q = _unit(1)[0]

    def sources(flt):
        with ix.lease() as r:
            got = r.dense_search(q, 50, flt)
            return sorted({c.source for c in r.chunks(got.ids.tolist())})

    assert sources(TRUSTED) == ["/x/a.md", "/x/sub/b.txt", "/y/c.tar.gz"]
    assert sources(Filter(sources=("*.md",))) == ["/x/a.md"]
    assert sources(Filter(sources=("/x",))) == ["/x/a.md", "/x/sub/b.txt"]
    assert sources(Filter(sources=("/x/*.txt", "*.gz"))) == ["/x/sub/b.txt", "/y/c.tar.gz"]
    assert sources(Filter(sources=("*/a.md",))) == ["/x/a.md"]
    assert sources(Filter(principals=())) == ["/x/a.md", "/y/c.tar.gz"]
    assert sources(Filter(principals=("team-a", "z"))) == ["/x/a.md", "/x/sub/b.txt", "/y/c.tar.gz"]
    assert sources(Filter(fields=(("type", ("text",)),), principals=("other",))) == ["/x/a.md", "/y/c.tar.gz"]
    assert sources(Filter(fields=(("type", ("pdf",)),))) == []
    assert sources(Filter(fields=(("doc_id", ("/y/c.tar.gz",)),))) == ["/y/c.tar.gz"]
    assert sources(Filter(exclude=(("type", ("text",)),))) == []
    assert sources(Filter(exclude=(("type", ("pdf", "md")),))) == ["/x/a.md", "/x/sub/b.txt", "/y/c.tar.gz"]
    with ix.lease() as r, pytest.raises(ConfigError, match="cannot be compiled"):
        r.sparse_search("checksum", 5, Filter(sources=("/x/?.md",)))
    with ix.lease() as r, pytest.raises(ConfigError, match="glob values"):
        r.dense_search(q, 5, Filter(fields=(("type", ("te*",)),)))


# ---- consistency ------------------------------------------------------------------------------------
_KILLED_WRITER = textwrap.dedent("""
    import os, sys, numpy as np
    sys.path.insert(0, {root!r})
    from rag.index.qdrant import open_qdrant
    from rag.index.backend import DocumentRecord
    from rag.types import Chunk
    ix = open_qdrant({loc!r})
    ix.store.upsert_batch = 1
    w_cm = ix.writer()
    w = w_cm.__enter__()
    w.delete(["/d/0.txt"])
    for j in range(3):
        src = f"/new/{{j}}.txt"
        rec = DocumentRecord(key=src, source=src, content_hash="n", text_hash=f"n{{j}}")
        w.upsert(rec, [Chunk(id=-1, doc_id=src, ordinal=0, start=0, end=5, text="checksum adler novel words")],
                 np.ones((1, 8), np.float32) / np.sqrt(8))
    w._flush(); w._mark_removed()
    os._exit(9)   # like kill -9: no abort, no commit, lock left behind
""")


def test_interrupted_write_leaves_the_old_state(tmp_path):
    loc = f"qdrant+local:{tmp_path / 'q'}"
    ix = open_qdrant(loc)
    _write(ix, {f"/d/{i}.txt": [t] for i, t in enumerate(TEXTS[:6])})
    q = _unit(1, seed=5)[0]
    with ix.lease() as r:
        before = (r.generation, r.counts, list(r.sparse_search("checksum adler", 10, TRUSTED)),
                  list(r.dense_search(q, 10, TRUSTED)))
    close_clients()  # embedded mode: one process per folder
    out = subprocess.run([sys.executable, "-c", _KILLED_WRITER.format(root=ROOT, loc=loc)], capture_output=True, text=True)
    assert out.returncode == 9, out.stderr
    ix = open_qdrant(loc)
    with ix.lease() as r:
        assert r.dirty  # leftovers: readers filter by generation and scope IDF to it
        after = (r.generation, r.counts, list(r.sparse_search("checksum adler", 10, TRUSTED)),
                 list(r.dense_search(q, 10, TRUSTED)))
    assert after[:2] == before[:2]
    assert [i for i, _ in after[2]] == [i for i, _ in before[2]]
    assert np.allclose([s for _, s in after[2]], [s for _, s in before[2]], rtol=1e-6)
    assert [i for i, _ in after[3]] == [i for i, _ in before[3]]
    assert np.allclose([s for _, s in after[3]], [s for _, s in before[3]], rtol=1e-6)
    v = ix.verify()
    assert v["chunks"] == 6 and v["leftovers"] > 0
    fixed = ix.verify(repair=True)
    assert fixed["leftovers"] == 0 and fixed["repaired"]["uncommitted_removed"] == 6  # 3 chunks + 3 records
    with ix.lease() as r:
        assert not r.dirty and list(r.sparse_search("checksum adler", 10, TRUSTED))[0][0] == before[2][0][0]
    _write(ix, {"/e/1.txt": ["more text"]})  # the next writer takes over the dead writer's lock
    with ix.lease() as r:
        assert r.generation == 2 and r.counts.chunks == 7


def test_second_writer_is_refused(tmp_path):
    ix = open_qdrant(f"qdrant+local:{tmp_path / 'q'}")
    _write(ix, {"/d/a.txt": ["alpha"]})
    with ix.writer():
        with pytest.raises(IndexLockedError, match=r"another ingest \(pid \d+ on .*\) is writing") as e:
            with open_qdrant(f"qdrant+local:{tmp_path / 'q'}").writer(wait_s=0):
                pass
        assert "\n" not in str(e.value)
    code = f"import sys; sys.path.insert(0, {ROOT!r}); from rag.index.qdrant import open_qdrant; open_qdrant('qdrant+local:{tmp_path / 'q'}').exists()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "open in another process" in out.stderr.strip().splitlines()[-1]


def test_one_line_errors(tmp_path):
    ix = open_qdrant(f"qdrant+local:{tmp_path / 'empty'}")
    assert not ix.exists()
    with pytest.raises(IndexNotFoundError, match="no Qdrant folder here"):
        with ix.lease():
            pass
    _write(ix, {"/d/a.txt": ["alpha"]}, dim=8)
    with pytest.raises(IndexFormatError, match="holds 8-dimensional vectors but the embedder makes 16"):
        with ix.writer(embedder={"name": "t", "model_id": "t", "dim": 16}):
            pass
    with ix.lease() as r, pytest.raises(ValueError, match="dimensions"):
        r.dense_search(np.ones(16, np.float32), 5, TRUSTED)
    far = open_qdrant("qdrant://127.0.0.1:9/nothing", RagConfig.from_dict({"store": {"timeout_s": 2}}))
    with pytest.raises(IndexNotFoundError, match="Qdrant server unreachable") as e:
        far.exists()
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not os.environ.get("RAG_QDRANT_URL"), reason="RAG_QDRANT_URL is not set (no Qdrant server to test against)")
def test_real_server():
    """Against a real server: RAG_QDRANT_URL=http://host:6333 (a throwaway collection is made and dropped)."""
    url = os.environ["RAG_QDRANT_URL"].rstrip("/").replace("http://", "qdrant://").replace("https://", "qdrants://")
    coll = f"rag-test-{uuid.uuid4().hex[:8]}"
    ix = open_qdrant(f"{url}/{coll}")
    try:
        _write(ix, {f"/d/{i}.txt": [t] for i, t in enumerate(TEXTS[:6])}, acl={"/d/2.txt": ("team-a",)})
        with ix.lease() as r:
            assert r.counts.chunks == 6
            dense, sparse = r.search_both(_unit(1)[0], "adler checksum", 5, Filter(principals=()))
            assert len(dense) == 5 and sparse.ids.tolist()[:1] in ([0], [1], [6])
            assert 2 not in dense.ids.tolist()
        assert ix.verify()["leftovers"] == 0
    finally:
        for c in (coll, f"{coll}-records", f"{coll}-lock"):
            with __import__("contextlib").suppress(Exception):
                ix.client("delete_collection", c)


def test_lock_of_another_host_expires(tmp_path):
    import time

    from qdrant_client import models as qm

    ix = open_qdrant(f"qdrant+local:{tmp_path / 'q'}")
    _write(ix, {"/d/a.txt": ["alpha"]})

    def foreign_lock(expires: float) -> None:
        ix.client("create_collection", ix.lock_name, vectors_config={})
        ix.client("upsert", ix.lock_name, points=[qm.PointStruct(id=0, vector={}, payload={
            "host": "another-machine", "pid": 1, "expires": expires})], wait=True)

    foreign_lock(time.time() + 600)
    with pytest.raises(IndexLockedError, match="pid 1 on another-machine"):
        with ix.writer():
            pass
    ix.client("delete_collection", ix.lock_name)
    foreign_lock(time.time() - 1)  # its heartbeat stopped: taken over
    _write(ix, {"/d/b.txt": ["beta"]})
    with ix.lease() as r:
        assert r.generation == 2 and r.counts.chunks == 2
    assert not ix.client("collection_exists", ix.lock_name)


def test_hybrid_is_one_round_trip(tmp_path, monkeypatch):
    """A hybrid search costs one metadata read, ONE query request for both candidate lists and
    one read of the hits' chunks."""
    from rag.engine import QueryEngine
    from rag.index.qdrant.index import Client
    from rag.testing import HashEmbedder

    ix = open_qdrant(f"qdrant+local:{tmp_path / 'q'}")
    _write(ix, {f"/d/{i}.txt": [t] for i, t in enumerate(TEXTS[:6])}, dim=64, model_id="hash-64")
    eng = QueryEngine(ix, RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}}), embedder=HashEmbedder(64))
    calls: list[str] = []
    real = Client.__call__

    def counting(self, method, *a, **kw):
        calls.append(method)
        return real(self, method, *a, **kw)

    monkeypatch.setattr(Client, "__call__", counting)
    hits = eng.search("adler-32 checksum", top_k=3, mode="hybrid").hits
    assert hits and calls.count("query_batch_points") == 1 and "query_points" not in calls
    assert calls == ["retrieve", "query_batch_points", "retrieve"]
