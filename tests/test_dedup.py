"""Exact and near-duplicate detection on real SciFact abstracts with planted duplicates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rag.dedup import Deduplicator, Duplicate, lsh_params, normalise_text, text_hash

DOCS = Path(__file__).resolve().parent / "data" / "docs"
SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "beir-scifact" / "corpus.jsonl"
needs_scifact = pytest.mark.skipif(not SCIFACT.is_file(), reason="shared SciFact data not present")


def _abstracts(path: Path, min_words: int = 100) -> list[tuple[str, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if len(r["text"].split()) >= min_words:
                out.append((r["_id"], r["text"]))
    return out


def _edit(text: str, fraction: float, rng: random.Random, vocab: list[str]) -> str:
    words = text.split()
    n = max(1, round(fraction * len(words)))
    for i in rng.sample(range(len(words)), n):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def _respace(text: str, rng: random.Random) -> str:
    words = text.split()
    return "".join(w.upper() if rng.random() < 0.3 else w for w in (
        w + rng.choice([" ", "  ", "\n", "\t "]) for w in words))


def test_normalise_and_hash():
    assert normalise_text("  Ｆｕｌｌ\u00a0WIDTH\n\tStraße ") == "full width strasse"
    assert text_hash("Hello   World") == text_hash("hello world\n")
    assert text_hash("Hello World") != text_hash("Hello World!")
    assert len(text_hash("x")) == 64


def test_lsh_banding_recall():
    bands, rows = lsh_params(0.8, 128)
    assert (bands, rows) == (21, 6)
    assert 1 - (1 - 0.8**rows) ** bands >= 0.995


def test_fixture_abstracts_planted_duplicates():
    """Runs without the shared data: the 20 SciFact records in tests/data/docs/beir."""
    rng = random.Random(3)
    items = _abstracts(DOCS / "beir" / "corpus.jsonl", min_words=60)
    vocab = [w for _, t in items for w in t.split()]
    dd = Deduplicator()
    for key, text in items:
        assert dd.check_and_add(key, text) is None
    key, text = items[4]
    assert dd.check_and_add("copy", text) == Duplicate("copy", key, "exact", 1.0)
    assert dd.check_and_add("respaced", _respace(text, rng)).kind == "exact"
    near = dd.check_and_add("edited", _edit(text, 0.02, rng, vocab))
    assert near.kind == "near" and near.kept_key == key and 0.8 <= near.similarity < 1.0
    assert len(dd) == len(items) and "copy" not in dd


def test_short_texts_exact_only_and_add_remove():
    dd = Deduplicator()
    dd.add("a", "Yes no")  # fewer words than a shingle: exact matching only
    assert dd.check_and_add("b", "yes  NO").kind == "exact"
    assert dd.check_and_add("c", "yes maybe") is None
    with pytest.raises(ValueError, match="already registered"):
        dd.check_and_add("c", "other text entirely")
    long_text = "the quick brown fox jumps over the lazy dog " * 5
    dd.add("fox", long_text)
    assert dd.check_and_add("fox2", long_text.replace("lazy", "sleepy", 1)).kept_key == "fox"
    dd.remove("fox")
    assert "fox" not in dd
    assert dd.check_and_add("fox3", long_text) is None  # the original is gone
    exact_only = Deduplicator(near=False)
    exact_only.add("x", long_text)
    assert exact_only.check_and_add("y", long_text.replace("lazy", "sleepy", 1)) is None


def test_most_similar_kept_item_is_named():
    rng = random.Random(5)
    base = " ".join(f"token{i}" for i in range(300))
    vocab = [f"other{i}" for i in range(1000)]
    far = _edit(base, 0.03, rng, vocab)
    close = _edit(base, 0.01, rng, vocab)
    dd = Deduplicator(near_threshold=0.7)
    dd.add("far", far)
    dd.add("close", close)
    dup = dd.check_and_add("query", base)
    assert dup.kept_key == "close" and dup.kind == "near"


@needs_scifact
def test_scifact_planted_duplicates_all_found_no_false_drops():
    rng = random.Random(0)
    items = _abstracts(SCIFACT)
    rng.shuffle(items)
    distinct, rest = items[:200], items[200:]
    vocab = [w for _, t in rest[:300] for w in t.split()]
    dd = Deduplicator()
    for key, text in distinct:
        assert dd.check_and_add(key, text) is None, f"distinct abstract {key} dropped"
    planted = []
    for i, (key, text) in enumerate(rng.sample(distinct, 60)):
        kind = ("exact", "respace", "edit2")[i % 3]
        new = text if kind == "exact" else _respace(text, rng) if kind == "respace" else _edit(text, 0.02, rng, vocab)
        planted.append((f"planted-{i}", key, kind, new))
    for pkey, original, kind, text in planted:
        dup = dd.check_and_add(pkey, text)
        assert dup is not None, f"{kind} copy of {original} kept"
        assert dup.kept_key == original
        assert dup.kind == ("near" if kind == "edit2" else "exact")
    # Abstracts never seen are all kept, even after the planted ones.
    assert all(dd.check_and_add(k, t) is None for k, t in rest[:100])


@needs_scifact
def test_scifact_false_positive_and_negative_rates():
    """Measurement (numbers in the report): 1000 real abstracts + 100 copies each at 2 % and 5 % edits."""
    rng = random.Random(1)
    items = _abstracts(SCIFACT, min_words=50)
    rng.shuffle(items)
    base = items[:1000]
    vocab = [w for _, t in items[1000:1300] for w in t.split()]
    planted = {f: [(k, _edit(t, f, rng, vocab)) for k, t in rng.sample(base, 100)] for f in (0.02, 0.05)}
    found = {}
    for threshold in (0.8, 0.7):
        dd = Deduplicator(near_threshold=threshold)
        false_drops = [k for k, t in base if dd.check_and_add(k, t) is not None]
        assert false_drops == []  # distinct SciFact abstracts are never merged
        for f, copies in planted.items():
            hits = [dd.check_and_add(f"{k}-edit", t) for k, t in copies]
            assert all(h is None or h.kept_key == k for h, (k, _) in zip(hits, copies))
            found[threshold, f] = sum(h is not None for h in hits)
    assert found[0.8, 0.02] >= 97
    # J ~ (1-3f)/(1+3f): 5 % edits give J ~ 0.74, below 0.8; 0.7 catches most of them.
    assert found[0.8, 0.05] <= 40 and found[0.7, 0.05] >= 70


def test_signatures_wait_for_a_second_item_with_the_same_results():
    """The first kept item's MinHash is made only when a second item needs checking (so adding
    one small file never imports datasketch); what is found is the same as when every item's
    signature is made at once."""
    import subprocess
    import sys

    code = ("import sys; from rag.dedup import Deduplicator; dd = Deduplicator(); "
            "assert dd.check_and_add('a', 'one two three four five six') is None; "
            "assert dd.check_and_add('b', 'ONE two  three four five six').kind == 'exact'; "
            "dd.remove('a'); assert dd.check_and_add('c', 'seven eight nine ten') is None; "
            "print('datasketch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

    rng = random.Random(7)
    items = _abstracts(DOCS / "beir" / "corpus.jsonl", min_words=60)
    vocab = [w for _, t in items for w in t.split()]
    stream = [(f"e{i}", _edit(t, rng.choice([0.01, 0.02, 0.05, 0.3]), rng, vocab)) for i, (_, t) in enumerate(items)]
    stream = [x for pair in zip(items, stream) for x in pair]  # each abstract, then an edited copy
    class Eager(Deduplicator):  # the behaviour before: every kept item's signature made at once
        def _register(self, key, norm, digest, signature):
            super()._register(key, norm, digest, self._signature(norm) if signature is None else signature)

    lazy, eager = Deduplicator(), Eager()
    got_lazy = [lazy.check_and_add(key, text) for key, text in stream]
    got_eager = [eager.check_and_add(key, text) for key, text in stream]
    assert got_lazy == got_eager
    assert sum(d is not None and d.kind == "near" for d in got_lazy) >= 5  # the check has near duplicates in it
    assert not lazy._pending  # noqa: SLF001
