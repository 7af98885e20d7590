"""Conversations: follow-ups use history for retrieval; sessions and feedback persist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag import RAG, Answer, Conversation
from rag.conversation import SessionStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mini_rag(tmp_path, mini_corpus, hash_config):
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([mini_corpus])
    return RAG.open(tmp_path / "idx", hash_config)


def test_follow_up_retrieves_with_history(mini_rag):
    conv = Conversation(mini_rag, user_id="alice")
    first = conv.ask("What is the ZLIB compressed data format specification?")
    assert first.hits[0].chunk.source.endswith("rfc1950-excerpt.txt")
    follow = conv.ask("and who wrote it?")
    assert follow.query != "and who wrote it?" and "zlib" in follow.query.lower()
    assert follow.hits[0].chunk.source.endswith("rfc1950-excerpt.txt")


def test_sessions_and_feedback_survive_restart(tmp_path, mini_rag, hash_config):
    conv = Conversation(mini_rag, user_id="bob")
    conv.ask("What does HTTP/2 multiplexing allow?")
    pieces = list(conv.stream("and how do I enable it?"))
    assert isinstance(pieces[-1], Answer)
    sid = conv.session_id
    conv.feedback(2, "down", note="too vague")
    # a new process (restart): the store reads the same file
    r = subprocess.run([sys.executable, "-m", "rag", "feedback", sid, "1", "up", "--index", str(mini_rag.index_dir)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    store = SessionStore.for_index(mini_rag.index_dir)
    turns = store.turns(session_id=sid)
    assert [t["turn"] for t in turns] == [1, 2]
    assert turns[0]["feedback"] == "up" and turns[1]["feedback"] == "down" and turns[1]["feedback_note"] == "too vague"
    assert turns[0]["user_id"] == "bob" and turns[0]["created"].endswith("+00:00")
    assert turns[1]["query"] and "http" in turns[1]["query"].lower() and "multiplexing" in turns[1]["query"].lower()
    assert isinstance(turns[0]["citations"], list) and turns[0]["latency_s"] > 0
    # resuming the session restores its history
    resumed = Conversation(RAG.open(mini_rag.index_dir, hash_config), session_id=sid)
    assert len(resumed.history) == 4 and resumed.history[0]["content"] == "What does HTTP/2 multiplexing allow?"
    # export as JSONL through the CLI
    out = tmp_path / "turns.jsonl"
    r = subprocess.run([sys.executable, "-m", "rag", "history", "--index", str(mini_rag.index_dir), "--export", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["session_id"] for x in lines] == [sid, sid]
    r = subprocess.run([sys.executable, "-m", "rag", "feedback", sid, "9", "up", "--index", str(mini_rag.index_dir)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1 and "no turn 9" in r.stderr


def test_chat_repl_follow_up(tmp_path, mini_rag):
    """`rag chat` answers a follow-up that only makes sense with the history."""
    r = subprocess.run([sys.executable, "-m", "rag", "chat", "--index", str(mini_rag.index_dir), "--generator", "extractive"],
                       input="What is the ZLIB compressed data format specification?\nand who wrote it?\n\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("Sources:") == 2
    assert "rfc1950-excerpt.txt" in r.stdout.split("Sources:")[-1]
    store = SessionStore.for_index(mini_rag.index_dir)
    turns = store.turns()
    assert len(turns) == 2 and "zlib" in turns[1]["query"].lower()
