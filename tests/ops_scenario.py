"""The chatbot-operations scenario shared by test_records.py and test_stats.py: 30 questions
from 3 users over 2 sessions each, asked through the library (Conversation, record_answer) and
the CLI (`rag chat`, `rag ask`), with feedback, on the mini corpus (testing:hash-64 embedder,
extractive generator). Everything the tests compare against is collected here by hand, from
what each entry point returned, never from the record store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

QUESTIONS = [
    "What is the ZLIB compressed data format specification?", "and who wrote it?", "What checksum does zlib use?",
    "How do penguins sleep?", "What does HTTP/2 multiplexing allow?",
    "What is the Zen of Python?", "Is explicit better than implicit?", "How do I catch an exception in Python?",
    "Why do cats purr at night?", "What compression method does deflate use?",
    "How does HTTP/2 server push work?", "What is header compression in HTTP/2?", "Who wrote zlib?",
    "How do penguins sleep?", "What does the Adler-32 checksum compute?",
    "What is the capital of Mongolia?", "Which exceptions are built in?", "What does flat is better than nested mean?",
    "How do penguins sleep?", "What is a stream in HTTP/2?",
    "What is the window size of deflate?", "How are exceptions raised?", "Why do cats purr at night?",
    "What does the FLG byte hold?", "How do penguins sleep?",
    "What is the Zen of Python about errors?", "What is the maximum frame size in HTTP/2?", "Who designed the zlib format?",
    "Why do cats purr at night?", "What is a dictionary in zlib?",
]
CFG = {"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}}


def cli(*args, input: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rag", *args], capture_output=True, text=True, cwd=ROOT,
                          input=input, timeout=timeout)


@dataclass
class Expected:
    """One question as the test saw it asked: who, where, and what came back."""

    user: str
    session: str
    turn: int
    question: str
    via: str
    generation: int
    answer: dict[str, Any] | None = None  # Answer.to_dict() where the entry point returned one


@dataclass
class Scenario:
    index: Path
    corpus: Path
    expected: list[Expected] = field(default_factory=list)
    feedback: dict[tuple[str, int], str] = field(default_factory=dict)
    chat_output: dict[str, str] = field(default_factory=dict)


def build(tmp_path: Path) -> Scenario:
    """Run the scenario into ``tmp_path/idx``; returns what was asked and rated."""
    from rag import RAG, Conversation
    from rag.config import RagConfig
    from rag.conversation import record_answer
    from rag.records import RecordStore

    cfg = RagConfig.from_dict(CFG)
    corpus = tmp_path / "mini"
    shutil.copytree(DATA / "mini", corpus)
    idx = tmp_path / "idx"
    RAG.create(idx, cfg).ingest([corpus])
    rag = RAG.open(idx, cfg)
    sc = Scenario(idx, corpus)
    q = iter(QUESTIONS)

    def lib_session(user: str, sid: str, n: int) -> Conversation:
        conv = Conversation(rag, session_id=sid, user_id=user)
        for turn in range(1, n + 1):
            question = next(q)
            ans = conv.ask(question)
            sc.expected.append(Expected(user, sid, turn, question, "Conversation", rag.generation, ans.to_dict()))
        return conv

    a1 = lib_session("alice", "a1", 5)
    a1.feedback(1, "up")
    a1.feedback(2, "down", note="not what I asked")
    sc.feedback.update({("a1", 1): "up", ("a1", 2): "down"})
    lib_session("alice", "a2", 5)
    b1 = lib_session("bob", "b1", 5)
    b1.feedback(5, "up")
    sc.feedback[("b1", 5)] = "up"

    # the corpus changes: a new generation; later records must name it
    (corpus / "notes.md").write_text("# Penguins\n\nEmperor penguins sleep standing up, in short naps of a few seconds.\n")
    RAG.create(idx, cfg).ingest([corpus])
    gen2 = RAG.open(idx, cfg).generation
    assert gen2 == 2

    # bob's second session and carol's first through `rag chat` (one process each)
    for user, sid in (("bob", "b2"), ("carol", "c1")):
        qs = [next(q) for _ in range(5)]
        r = cli("chat", "--index", str(idx), "--session", sid, "--user", user, "--generator", "extractive",
                input="\n".join(qs) + "\n\n")
        assert r.returncode == 0, r.stderr
        sc.chat_output[sid] = r.stdout
        for turn, question in enumerate(qs, 1):
            sc.expected.append(Expected(user, sid, turn, question, "rag chat", gen2))
    r = cli("feedback", "b2", "3", "up", "--note", "great", "--index", str(idx))
    assert r.returncode == 0, r.stderr
    sc.feedback[("b2", 3)] = "up"

    # carol's second session: three `rag ask` turns, then two library calls with a session
    for turn in (1, 2, 3):
        question = next(q)
        r = cli("ask", question, "--index", str(idx), "--user", "carol", "--session", "c2", "--generator", "extractive",
                "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert isinstance(out["record_id"], int)
        sc.expected.append(Expected("carol", "c2", turn, question, "rag ask", gen2, out))
        if turn == 2:
            r = cli("feedback", "--record", str(out["record_id"]), "down", "--index", str(idx))
            assert r.returncode == 0, r.stderr
            sc.feedback[("c2", 2)] = "down"
    rag2 = RAG.open(idx, cfg)
    store = RecordStore.for_index(idx)
    for turn in (4, 5):
        question = next(q)
        ans = rag2.ask(question)
        record_answer(store, rag2, ans, user_id="carol", session_id="c2")
        sc.expected.append(Expected("carol", "c2", turn, question, "record_answer", gen2, ans.to_dict()))
    store.close()
    assert len(sc.expected) == 30 and next(q, None) is None
    return sc
