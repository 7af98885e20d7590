"""Question routing measured on 329 labelled real questions (XQuAD-en, BoolQ dev, demo)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from rag.answering import ROUTES, route

FIXTURE = Path(__file__).parent / "fixtures" / "question_routes.jsonl"


def _rows():
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_fixture_has_300_labelled_real_questions():
    rows = _rows()
    assert len(rows) >= 300
    assert {r["route"] for r in rows} <= set(ROUTES)
    origin = Counter(r["source"].split()[0] for r in rows)
    assert origin["xquad-en"] >= 150 and origin["boolq-dev"] >= 100 and origin["demo"] >= 30


def test_router_accuracy_on_labelled_questions():
    rows = _rows()
    right = Counter()
    total = Counter()
    for r in rows:
        total[r["route"]] += 1
        right[r["route"]] += route(r["question"]) == r["route"]
    acc = sum(right.values()) / len(rows)
    assert acc >= 0.95, f"routing accuracy {acc:.3f}"
    assert right["yes_no"] / total["yes_no"] >= 0.97  # the route that changes the answer most
    assert right["factoid"] / total["factoid"] >= 0.95


@pytest.mark.parametrize("question, expected", [
    ("What checksum does the zlib format use?", "factoid"),
    ("Which compression method does zlib use?", "factoid"),
    ("What is the Zen of Python?", "explanatory"),
    ("Why is Adler-32 faster than CRC-32?", "explanatory"),
    ("Is zlib free to use in commercial software?", "yes_no"),
    ("is barq's root beer a pepsi product?", "yes_no"),
    ("How many points did the Panthers defense surrender?", "factoid"),
    ("What is the difference between HTTP/1.1 and HTTP/2?", "comparison"),
    ("Is Adler-32 faster or slower than CRC-32?", "comparison"),
    ("is there a difference between a dove and a pigeon?", "yes_no"),
    ("Does gzip differ from zlib in its header?", "yes_no"),
    ("What are the types of exceptions in httpx?", "list"),
    ("What is chloroplast DNA abbreviated as?", "factoid"),
    ("And does it support HTTP/2?", "yes_no"),
])
def test_route_examples(question, expected):
    assert route(question) == expected
