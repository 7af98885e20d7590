"""Conversation records: one record per answered question from every entry point, every field
checked; feedback; migration of old sessions files; erasure; anonymised export."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

import ops_scenario
from ops_scenario import cli

KINDS = {"yes_no", "factoid", "explanatory", "list", "comparison"}


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "userdata"))


@pytest.fixture
def scenario(tmp_path):
    return ops_scenario.build(tmp_path)


def test_every_entry_point_writes_one_full_record(scenario):
    from rag.records import RecordStore

    store = RecordStore.for_index(scenario.index)
    assert store.path == scenario.index / "records.sqlite"
    recs = store.records()
    assert len(recs) == 30
    by_key = {(r["session_id"], r["turn"]): r for r in recs}
    assert len(by_key) == 30
    assert {r["user_id"] for r in recs} == {"alice", "bob", "carol"}
    assert {s["session_id"]: (s["user_id"], s["turns"]) for s in store.sessions()} == {
        "a1": ("alice", 5), "a2": ("alice", 5), "b1": ("bob", 5), "b2": ("bob", 5), "c1": ("carol", 5), "c2": ("carol", 5)}
    assert store.session("b2") == {**next(x for x in store.sessions() if x["session_id"] == "b2"), "turns": 5}
    assert store.session("b2")["user_id"] == "bob" and store.session("nope") is None
    created = [r["created"] for r in recs]
    assert created == sorted(created)
    corpus_files = {str(p) for p in scenario.corpus.iterdir()}
    for e in scenario.expected:
        r = by_key[(e.session, e.turn)]
        assert r["user_id"] == e.user and r["question"] == e.question, e
        t = datetime.fromisoformat(r["created"])
        assert t.utcoffset().total_seconds() == 0 and abs((datetime.now(timezone.utc) - t).total_seconds()) < 600
        assert r["kind"] in KINDS
        assert r["query"] and isinstance(r["query"], str)
        assert r["generation"] == e.generation, (e, r["generation"])
        assert r["index_dir"] == str(scenario.index.resolve())
        assert r["latency_s"] > 0 and r["timings"]["total_s"] > 0 and r["timings"]["retrieval_s"] > 0
        assert r["latency_s"] >= r["timings"]["retrieval_s"]
        assert isinstance(r["abstained"], bool)
        if r["abstained"]:
            assert r["citations"] == []
        else:
            assert r["citations"], r
        for c in r["citations"]:
            assert isinstance(c["chunk_id"], int) and c["source"] and c["doc_id"] and c["n"] >= 1
            assert f"[{c['n']}]" in r["answer"]
            assert c["source"] in corpus_files
        if e.answer is not None:  # the entry point returned the Answer: the record equals it
            a = e.answer
            assert r["answer"] == a["answer"] and r["query"] == a["query"] and r["kind"] == a["kind"]
            assert r["abstained"] == a["abstained"]
            assert [(c["chunk_id"], c["doc_id"], c["n"]) for c in r["citations"]] == \
                [(c["chunk_id"], c["doc_id"], c["n"]) for c in a["citations"]]
            hits = {h["chunk"]["id"] if "chunk" in h else h["chunk_id"]: h for h in a["hits"]}
            for c in r["citations"]:  # each cited chunk is a retrieved chunk of the same source
                h = hits[c["chunk_id"]]
                assert (h["chunk"]["source"] if "chunk" in h else h["source"]) == c["source"]
            assert set(r["timings"]) == {k for k, v in a["timings"].items() if isinstance(v, (int, float))}
        fb = scenario.feedback.get((e.session, e.turn))
        assert r["feedback"] == fb
        assert (r["feedback_at"] is not None) == (fb is not None)
    assert by_key[("a1", 2)]["feedback_note"] == "not what I asked" and by_key[("b2", 3)]["feedback_note"] == "great"
    # follow-ups were rewritten with the session's history, in the CLI chat as in the library
    assert "zlib" in by_key[("a1", 2)]["query"].lower()
    # `rag chat` printed exactly the recorded answers
    for sid in ("b2", "c1"):
        printed = scenario.chat_output[sid]
        for t in range(1, 6):
            assert f"rag> {by_key[(sid, t)]['answer']}\n" in printed


def test_cli_history_and_json(scenario):
    r = cli("history", "--index", str(scenario.index))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 6 and "user=carol  turns=5" in r.stdout
    r = cli("history", "--index", str(scenario.index), "--session", "b2")
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["turn"] for x in rows] == [1, 2, 3, 4, 5] and rows[2]["feedback"] == "up"
    r = cli("feedback", "b2", "9", "up", "--index", str(scenario.index))
    assert r.returncode == 1 and "no turn 9" in r.stderr and r.stderr.count("\n") == 1
    r = cli("feedback", "b2", "1", "sideways", "--index", str(scenario.index))
    assert r.returncode == 2
    r = cli("ask", "Who wrote zlib?", "--index", str(scenario.index), "--generator", "extractive", "--no-record", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["record_id"] is None
    from rag.records import RecordStore

    assert len(RecordStore.for_index(scenario.index).records()) == 30


def test_cli_ask_without_user_is_the_local_user_in_a_session_of_the_day(tmp_path, mini_corpus, hash_config):
    """`rag ask` without --user/--session: user "local" (as keyless `rag serve`), session
    ask-local-<UTC date>, turns numbered; listed by `rag history`, erased by --forget-user local."""
    from rag import RAG
    from rag.records import RecordStore

    idx = tmp_path / "idx"
    RAG.create(idx, hash_config).ingest([mini_corpus])
    for q in ("Who wrote zlib?", "What does Adler-32 compute?"):
        r = cli("ask", q, "--index", str(idx), "--generator", "extractive")
        assert r.returncode == 0, r.stderr
    r = cli("ask", "Who wrote zlib?", "--index", str(idx), "--generator", "extractive", "--user", "dana")
    assert r.returncode == 0, r.stderr
    today = datetime.now(timezone.utc).date().isoformat()
    recs = RecordStore.for_index(idx).records()
    assert [(x["user_id"], x["session_id"], x["turn"]) for x in recs] == [
        ("local", f"ask-local-{today}", 1), ("local", f"ask-local-{today}", 2), ("dana", f"ask-dana-{today}", 1)]
    r = cli("history", "--index", str(idx))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and any(x.startswith(f"ask-local-{today}  user=local  turns=2  ") for x in lines)
    # --session without --user: the session's own user, not "local"
    r = cli("ask", "Who wrote zlib?", "--index", str(idx), "--generator", "extractive", "--session", f"ask-dana-{today}")
    assert r.returncode == 0, r.stderr
    assert RecordStore.for_index(idx).records()[-1]["user_id"] == "dana"
    r = cli("history", "--index", str(idx), "--forget-user", "local")
    assert r.returncode == 0 and "2 record(s), 1 session(s)" in r.stdout
    left = RecordStore.for_index(idx).records()
    assert [x["user_id"] for x in left] == ["dana", "dana"]
    assert "--user" in (h := cli("ask", "--help").stdout) and "local" in h and "ask-USER-YYYY-MM-DD" in h


def test_forget_user_leaves_no_row(scenario):
    from rag.records import RecordStore

    path = scenario.index / "records.sqlite"
    r = cli("history", "--index", str(scenario.index), "--forget-user", "bob")
    assert r.returncode == 0, r.stderr
    assert "10 record(s), 2 session(s), 2 feedback rating(s)" in r.stdout
    conn = sqlite3.connect(path)
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert {"sessions", "records"} <= set(tables)
    for t in tables:
        for row in conn.execute(f"SELECT * FROM {t}"):
            assert "bob" not in json.dumps(row), (t, row)
            assert not any(str(v) in ("b1", "b2") for v in row), (t, row)
    conn.close()
    # nothing of bob's text is left on disk either (secure_delete, WAL checkpointed)
    b1_only = "What does the Adler-32 checksum compute?"  # asked in bob's b1 session only
    for f in path.parent.glob("records.sqlite*"):
        raw = f.read_bytes()
        assert b"bob" not in raw and b1_only.encode() not in raw, f
    store = RecordStore(path)
    assert len(store.records()) == 20 and store.users() == ["alice", "carol"]
    r = cli("history", "--index", str(scenario.index), "--forget-user", "bob")
    assert r.returncode == 0 and "0 record(s), 0 session(s)" in r.stdout


def test_anonymised_export(scenario, tmp_path):
    from rag.records import RecordStore, anonymise_user

    store = RecordStore.for_index(scenario.index)
    store.add(_answer("My mail is jane.doe@example.com, call +44 20 7946 0958", "Write to jane.doe@example.com [1]"),
              user_id="dave", session_id="d1")
    out = tmp_path / "anon.jsonl"
    r = cli("history", "--index", str(scenario.index), "--export", str(out), "--anonymise")
    assert r.returncode == 0, r.stderr and "31 record(s)" in r.stdout
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 31
    salt = store.salt()
    users = {x["user_id"] for x in rows}
    assert users == {anonymise_user(u, salt) for u in ("alice", "bob", "carol", "dave")}
    assert all(re.fullmatch(r"u-[0-9a-f]{16}", u) for u in users)
    text = out.read_text()
    for secret in ("alice", "bob", "carol", "dave", "jane.doe@example.com", "+44 20 7946 0958", "7946 0958"):
        assert secret not in text
    dave = [x for x in rows if x["session_id"] == "d1"][0]
    assert dave["question"] == "My mail is [EMAIL], call [PHONE]" and dave["answer"] == "Write to [EMAIL] [1]"
    # the salt is stored with the records: a second export gives the same pseudonyms; a given salt others
    out2 = tmp_path / "anon2.jsonl"
    assert cli("history", "--index", str(scenario.index), "--export", str(out2), "--anonymise").returncode == 0
    assert out2.read_text() == text
    out3 = tmp_path / "anon3.jsonl"
    assert cli("history", "--index", str(scenario.index), "--export", str(out3), "--anonymise", "--salt", "s3").returncode == 0
    assert {json.loads(x)["user_id"] for x in out3.read_text().splitlines()} == {
        anonymise_user(u, "s3") for u in ("alice", "bob", "carol", "dave")}
    r = cli("history", "--index", str(scenario.index), "--anonymise")
    assert r.returncode == 2 and "--export" in r.stderr


def _answer(question: str, text: str):
    from rag.types import Answer, Citation

    return Answer(question=question, text=text, query=question, citations=(Citation(1, 0, "/x/a.txt", doc_id="/x/a.txt"),),
                  timings={"retrieval_s": 0.01, "total_s": 0.02}, generation=1)


V1_SCHEMA = """
CREATE TABLE sessions(session_id TEXT PRIMARY KEY, user_id TEXT, created TEXT NOT NULL, updated TEXT NOT NULL);
CREATE TABLE turns(
  session_id TEXT NOT NULL, turn INTEGER NOT NULL, created TEXT NOT NULL, question TEXT NOT NULL, query TEXT,
  answer TEXT NOT NULL, abstained INTEGER NOT NULL, citations TEXT NOT NULL, latency_s REAL,
  feedback TEXT, feedback_note TEXT, PRIMARY KEY(session_id, turn));
"""


def test_old_sessions_file_is_migrated(tmp_path):
    from rag.records import RecordStore

    idx = tmp_path / "idx"
    idx.mkdir()
    old = sqlite3.connect(idx / "sessions.sqlite")
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(V1_SCHEMA)
    old.execute("INSERT INTO sessions VALUES('s1', 'erin', '2026-11-30T10:00:00.000+00:00', '2026-11-30T10:01:00.000+00:00')")
    cit = json.dumps([{"n": 1, "chunk_id": 4, "source": "/d/a.txt", "doc_id": "/d/a.txt"}])
    old.executemany("INSERT INTO turns VALUES(?,?,?,?,?,?,?,?,?,?,?)", [
        ("s1", 1, "2026-11-30T10:00:00.000+00:00", "Who wrote zlib?", "Who wrote zlib?", "Gailly [1]", 0, cit, 0.5, "up", None),
        ("s1", 2, "2026-11-30T10:01:00.000+00:00", "and when?", "zlib when?", "no answer", 1, "[]", 0.4, None, None)])
    old.commit()
    old.close()
    store = RecordStore.for_index(idx)
    assert store.path == idx / "records.sqlite" and not (idx / "sessions.sqlite").exists()
    recs = store.records()
    assert [(r["session_id"], r["turn"], r["user_id"], r["question"], r["feedback"], r["abstained"]) for r in recs] == [
        ("s1", 1, "erin", "Who wrote zlib?", "up", False), ("s1", 2, "erin", "and when?", None, True)]
    assert recs[0]["citations"][0]["chunk_id"] == 4 and recs[0]["latency_s"] == 0.5 and recs[0]["generation"] is None
    new = store.add(_answer("What is deflate?", "LZ77 [1]"), user_id="erin", session_id="s1")
    assert new["turn"] == 3 and new["generation"] == 1
    store.close()
    conn = sqlite3.connect(idx / "records.sqlite")
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name='turns'").fetchone()[0] == 0
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    # the CLI reads the migrated file
    r = cli("history", "--index", str(idx))
    assert r.returncode == 0 and "s1  user=erin  turns=3" in r.stdout


def test_records_location(tmp_path, monkeypatch, mini_corpus, hash_config):
    """--records / [records] path choose the file; a read-only index folder falls back to a
    per-user file; an unusable location is one clear error."""
    import os

    from rag import RAG, Conversation
    from rag.records import fallback_path, records_path

    idx = tmp_path / "idx"
    RAG.create(idx, hash_config).ingest([mini_corpus])
    elsewhere = tmp_path / "ops" / "chat.sqlite"
    r = cli("ask", "Who wrote zlib?", "--index", str(idx), "--generator", "extractive", "--records", str(elsewhere),
            "--user", "u1")
    assert r.returncode == 0, r.stderr
    assert elsewhere.exists() and not (idx / "records.sqlite").exists()
    conf = tmp_path / "rag.toml"
    conf.write_text(f'[records]\npath = "{elsewhere}"\n')
    r = cli("--config", str(conf), "history", "--index", str(idx))
    today = datetime.now(timezone.utc).date().isoformat()
    assert r.returncode == 0 and r.stdout.startswith(f"ask-u1-{today}  user=u1  turns=1  ")
    r = cli("--config", str(conf), "history", "--index", str(idx), "--export", str(tmp_path / "e.jsonl"))
    assert r.returncode == 0 and json.loads((tmp_path / "e.jsonl").read_text())["user_id"] == "u1"
    r = cli("history", "--index", str(idx))  # without the config: nothing beside the index
    assert r.returncode == 1 and "no conversation sessions here" in r.stderr
    # an unusable location: one line naming it
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("ask", "Who wrote zlib?", "--index", str(idx), "--generator", "extractive", "--records", str(blocker / "r.sqlite"))
    assert r.returncode == 0 and "rag: warning: answer not recorded" in r.stderr and str(blocker) in r.stderr
    r = cli("chat", "--index", str(idx), "--generator", "extractive", "--records", str(blocker / "r.sqlite"), input="\n")
    assert r.returncode == 1 and r.stderr.startswith("rag: error: ") and r.stderr.count("\n") == 1
    # a read-only index folder (simulated: tests run as root, which may write anywhere)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if (mode & os.W_OK and Path(p) == idx) else real_access(p, mode, **kw))
    assert records_path(idx) == fallback_path(idx) and str(fallback_path(idx)).startswith(str(tmp_path / "userdata"))
    conv = Conversation(RAG.open(idx, hash_config), user_id="ro")
    conv.ask("Who wrote zlib?")
    assert conv.store.path == fallback_path(idx) and len(conv.store.records(user_id="ro")) == 1
    assert not (idx / "records.sqlite").exists()
