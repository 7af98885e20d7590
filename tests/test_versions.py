"""Index versions: the last N generations are kept and listed with what changed, `rollback`
makes an old one current (and forward again) while a long-lived RAG keeps answering, `--at`
reads an old one, and every kept generation verifies."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ops_scenario import cli

CFG = {"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}, "index": {"keep_generations": 3}}
QUESTION = "Which fruit is the secret word of the orchard?"


def _config():
    from rag.config import RagConfig

    return RagConfig.from_dict(CFG)


def _fruit(answer) -> str | None:
    quotes = " ".join(c.quote for c in answer.citations).lower()
    found = [f for f in ("apple", "banana", "cherry", "damson", "elder") if f in quotes]
    return found[0] if len(found) == 1 else None


@pytest.fixture
def history(tmp_path):
    """Five generations: 1 adds orchard.txt (apple) and notes.txt, 2 changes orchard (banana),
    3 adds extra.txt, 4 removes notes.txt (sync), 5 changes orchard (cherry)."""
    from rag import RAG

    docs = tmp_path / "docs"
    docs.mkdir()
    idx = tmp_path / "idx"
    orchard = docs / "orchard.txt"

    def write(fruit):
        orchard.write_text(f"The orchard keeps one secret. The secret word of the orchard is the fruit {fruit}.\n")

    write("apple")
    (docs / "notes.txt").write_text("Notes about rivers, boats and bridges in the old town.\n")
    steps = []
    rag = RAG.create(idx, _config())
    steps.append(rag.ingest([docs]).generation)
    write("banana")
    steps.append(rag.ingest([docs]).generation)
    (docs / "extra.txt").write_text("Extra pages on mountains, snow and winter sports.\n")
    steps.append(rag.ingest([docs]).generation)
    (docs / "notes.txt").unlink()
    steps.append(rag.ingest([docs], sync=True).generation)
    write("cherry")
    steps.append(rag.ingest([docs]).generation)
    assert steps == [1, 2, 3, 4, 5]
    (tmp_path / "rag.toml").write_text("[index]\nkeep_generations = 3\n")
    return idx, docs


def test_keeps_last_n_and_lists_changes(history):
    idx, docs = history
    assert sorted(p.name for p in idx.glob("gen-*")) == ["gen-000003", "gen-000004", "gen-000005"]
    r = cli("versions", "--index", str(idx), "--json")
    assert r.returncode == 0, r.stderr
    vs = json.loads(r.stdout)
    assert [v["generation"] for v in vs] == [3, 4, 5] and [v["current"] for v in vs] == [False, False, True]
    src = {n: str((docs / n).resolve()) for n in ("orchard.txt", "notes.txt", "extra.txt")}
    assert vs[0]["changes"] == {"added": [src["extra.txt"]], "changed": [], "removed": []}
    assert vs[1]["changes"] == {"added": [], "changed": [], "removed": [src["notes.txt"]]}
    assert vs[2]["changes"] == {"added": [], "changed": [src["orchard.txt"]], "removed": []}
    assert [v["documents"] for v in vs] == [3, 2, 2] and all(v["chunks"] >= v["documents"] for v in vs)
    assert all(v["time"] and v["time"].endswith("+00:00") and v["bytes"] > 0 for v in vs)
    assert sorted(p.name for p in (idx / "versions").iterdir()) == ["gen-000003.json", "gen-000004.json", "gen-000005.json"]
    r = cli("versions", "--index", str(idx), "--files")
    assert r.returncode == 0 and "(current)" in r.stdout and f"+ {src['extra.txt']}" in r.stdout
    r = cli("info", "--index", str(idx))
    assert r.returncode == 0 and "generations kept: 3" in r.stdout
    info = json.loads(cli("info", "--index", str(idx), "--json").stdout)
    assert info["generations_kept"]["generations"] == 3
    assert info["generations_kept"]["bytes"] == sum(v["bytes"] for v in vs)


def test_rollback_and_forward_with_at_and_verify(history):
    from rag import RAG
    from rag.conversation import Conversation

    idx, _ = history
    rag = RAG.open(idx, _config())
    assert _fruit(rag.ask(QUESTION)) == "cherry"
    # --at reads an older generation; the answer and its record name it
    r = cli("ask", QUESTION, "--index", str(idx), "--at", "3", "--json", "--user", "u", "--generator", "extractive")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["generation"] == 3 and "banana" in " ".join(c["quote"] for c in out["citations"]).lower()
    from rag.records import RecordStore

    assert RecordStore.for_index(idx).record(out["record_id"])["generation"] == 3
    s3 = json.loads(cli("search", "secret fruit orchard", "--index", str(idx), "--at", "3", "--json").stdout)
    assert s3["generation"] == 3 and "banana" in s3["hits"][0]["text"]
    r = cli("ask", QUESTION, "--index", str(idx), "--at", "1", "--generator", "extractive")
    assert r.returncode == 1 and "generation 1 is not kept (kept: 3, 4, 5)" in r.stderr and r.stderr.count("\n") == 1
    # roll back to 3: a new generation 6 with 3's files (hard links), readers switch
    m3 = json.loads((idx / "versions" / "gen-000003.json").read_text())["manifest"]
    conv = Conversation(rag, session_id="s", user_id="u")
    assert _fruit(conv.ask(QUESTION)) == "cherry" and conv.last_record["generation"] == 5
    r = cli("--config", str(idx.parent / "rag.toml"), "rollback", "3", "--index", str(idx))
    assert r.returncode == 0, r.stderr and "Restored generation 3 as generation 6" in r.stdout
    a = conv.ask(QUESTION)
    assert _fruit(a) == "banana" and a.generation == 6 and conv.last_record["generation"] == 6
    s6 = json.loads(cli("search", "secret fruit orchard", "--index", str(idx), "--json").stdout)
    assert s6["generation"] == 6 and [(h["chunk_id"], h["text"]) for h in s6["hits"]] == [(h["chunk_id"], h["text"]) for h in s3["hits"]]
    m6 = json.loads((idx / "manifest.json").read_text())
    assert m6["restored_from"] == 3 and m6["counts"] == m3["counts"]
    assert {k.split("/", 1)[1]: v for k, v in m6["files"].items()} == {k.split("/", 1)[1]: v for k, v in m3["files"].items()}
    vs = json.loads(cli("versions", "--index", str(idx), "--json").stdout)
    assert [v["generation"] for v in vs] == [4, 5, 6] and vs[-1]["restored_from"] == 3
    # and forward again to 5 (still kept): generation 7, cherry again
    assert cli("--config", str(idx.parent / "rag.toml"), "rollback", "5", "--index", str(idx)).returncode == 0
    assert _fruit(conv.ask(QUESTION)) == "cherry" and conv.last_record["generation"] == 7
    assert [r["generation"] for r in conv.store.records(session_id="s")] == [5, 6, 7]
    for g in (5, 6, 7):
        r = cli("verify", "--index", str(idx), "--at", str(g))
        assert r.returncode == 0 and f"generation {g}" in r.stdout, r.stderr
    assert cli("verify", "--index", str(idx)).returncode == 0
    r = cli("rollback", "7", "--index", str(idx))
    assert r.returncode == 1 and "already current" in r.stderr
    # a later ingest continues from the restored state with fresh chunk ids
    m = json.loads((idx / "manifest.json").read_text())
    docs = history[1]
    (docs / "new.txt").write_text("A new page about lakes.\n")
    rep = RAG.create(idx, _config()).ingest([docs])
    assert rep.generation == 8
    m8 = json.loads((idx / "manifest.json").read_text())
    assert m8["next_chunk_id"] > m["next_chunk_id"]


def test_rollback_while_a_long_lived_rag_answers(history):
    """Threads ask the same RAG without pause while the index is rolled back and forward four
    times by another process: no error, and every answer is the fruit of the generation it names."""
    from rag import RAG

    idx, _ = history
    rag = RAG.open(idx, _config())
    truth = {5: "cherry"}
    errors: list[BaseException] = []
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            try:
                a = rag.ask(QUESTION)
                seen.append((a.generation, _fruit(a)))
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)
                return

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for target, fruit in ((3, "banana"), (5, "cherry"), (6, "banana"), (7, "cherry")):
            time.sleep(0.3)
            r = cli("--config", str(idx.parent / "rag.toml"), "rollback", str(target), "--index", str(idx), "--wait", "30")
            assert r.returncode == 0, r.stderr
            gen = json.loads((idx / "manifest.json").read_text())["generation"]
            truth[gen] = fruit
            deadline = time.time() + 20
            while time.time() < deadline and not any(g == gen for g, _ in seen[-50:]):
                time.sleep(0.05)
            assert any(g == gen for g, _ in seen), f"no answer from generation {gen}"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
    assert len(seen) > 20
    assert {g for g, _ in seen} == set(truth)
    assert all(truth[g] == f for g, f in seen), [x for x in seen if truth[x[0]] != x[1]][:5]
    kept = [v["generation"] for v in json.loads(cli("versions", "--index", str(idx), "--json").stdout)]
    assert kept == sorted(truth)[-3:]
    for g in kept:
        r = cli("verify", "--index", str(idx), "--at", str(g))
        assert r.returncode == 0, r.stderr
