"""Deduplication through `rag ingest`: planted duplicates of real documents are dropped, each
named with the document it duplicates, and no distinct document is dropped."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
ROOT = Path(__file__).resolve().parents[1]


def _edit_words(text: str, fraction: float, rng: random.Random) -> str:
    words = text.split()
    n = max(1, round(len(words) * fraction))
    for i in rng.sample(range(len(words)), n):
        words[i] = rng.choice(["alpha", "beta", "gamma", "delta"]) + words[i][::-1]
    return " ".join(words)


def test_planted_duplicates_are_dropped_and_named(tmp_path):
    rng = random.Random(3)
    records = [json.loads(line) for line in (DATA / "docs" / "beir" / "corpus.jsonl").read_text().splitlines()]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    originals = {}
    for r in records:  # 20 distinct real SciFact abstracts, one file each
        p = corpus / f"a{r['_id']}.txt"
        p.write_text(r["title"] + "\n\n" + r["text"] + "\n")
        originals[p.name] = p.read_text()
    planted = {}
    names = sorted(originals)
    for i, name in enumerate(names[:12]):
        text = originals[name]
        kind = i % 3
        if kind == 0:
            dup = text
        elif kind == 1:
            dup = "  " + text.upper().replace(" ", "   \n ").replace(".", " .") + "\n\n"
            dup = dup.replace(" .", ".")
        else:
            title, body = text.split("\n\n", 1)
            dup = title + "\n\n" + _edit_words(body, 0.02, rng)
        dname = f"zz-copy{i}-{name}"  # sorts after its original, so the original is the one kept
        (corpus / dname).write_text(dup)
        planted[dname] = name
    r = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus), "--index", str(tmp_path / "idx"),
                        "--embedder", "testing:hash-64", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    doc_dups = {Path(d["key"]).name: d for d in rep["duplicates"] if d["level"] == "document"}
    assert set(doc_dups) == set(planted), "every planted duplicate and nothing else is dropped"
    for dname, orig in planted.items():
        assert Path(doc_dups[dname]["kept_key"]).name == orig
        expected_kind = "exact" if dname.startswith(("zz-copy0-", "zz-copy1-", "zz-copy3-", "zz-copy4-",
                                                      "zz-copy6-", "zz-copy7-", "zz-copy9-", "zz-copy10-")) else "near"
        assert doc_dups[dname]["kind"] == expected_kind
    assert rep["total_documents"] == len(originals)
    # the text summary names each pair too
    r2 = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus), "--index", str(tmp_path / "idx2"),
                         "--embedder", "testing:hash-64"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    for dname, orig in planted.items():
        assert any(dname in line and orig in line for line in r2.stdout.splitlines())
    # --no-dedup keeps them all
    r3 = subprocess.run([sys.executable, "-m", "rag", "ingest", str(corpus), "--index", str(tmp_path / "idx3"),
                         "--embedder", "testing:hash-64", "--no-dedup", "--json"], capture_output=True, text=True, cwd=ROOT,
                        timeout=300)
    rep3 = json.loads(r3.stdout)
    assert rep3["duplicates"] == [] and rep3["total_documents"] == len(originals) + len(planted)
