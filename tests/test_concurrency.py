"""Two concurrent ingests and eight concurrent searchers on one index: no error, no corruption,
and the final index verifies and holds both ingests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rag import RAG

ROOT = Path(__file__).resolve().parents[1]

SEARCHER = """
import sys, time, json
from rag import RAG
from rag.config import RagConfig
import os
idx, stop_file = sys.argv[1], sys.argv[2]
cfg = RagConfig.from_dict({"embedding": {"model": "testing:hash-64"}})
rag = RAG.open(idx, cfg)
n, gens = 0, set()
end = time.time() + 240
while time.time() < end and not os.path.exists(stop_file):
    for mode in ("hybrid", "bm25", "dense"):
        hits = rag.search("checksum compression stream", top_k=5, mode=mode)
        assert hits, "no hits"
        for h in hits:
            assert h.chunk.text, "empty chunk"
        n += 1
    gens.add(rag.search_result("checksum", top_k=1).generation)
print(json.dumps({"searches": n, "generations": sorted(gens)}))
"""


def test_two_ingests_and_eight_searchers(tmp_path, mini_corpus, hash_config):
    idx = tmp_path / "idx"
    RAG.create(idx, hash_config).ingest([mini_corpus / "rfc1950-excerpt.txt"])
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    for i, p in enumerate(sorted(mini_corpus.iterdir())):
        for k in range(3):  # enough work that the ingests overlap the searchers
            dst = (a if i % 2 else b) / f"{k}-{p.name}"
            dst.write_text(p.read_text() + f"\n\nCopy {k} of {p.name} marker{k}{i}.\n")
    stop = tmp_path / "stop"
    searchers = [subprocess.Popen([sys.executable, "-c", SEARCHER, str(idx), str(stop)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(0.5)
    ingests = [subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(src), "--index", str(idx), "--embedder",
                                 "testing:hash-64", "--wait", "600", "--no-dedup", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT) for src in (a, b)]
    outs = [p.communicate(timeout=300) for p in ingests]
    for p, (out, err) in zip(ingests, outs):
        assert p.returncode == 0, err
    stop.write_text("done")
    reports = [json.loads(o) for o, _ in outs]
    assert sorted(r["files_ingested"] for r in reports) == sorted([len(list(a.iterdir())), len(list(b.iterdir()))])
    gens_seen = set()
    for p in searchers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        res = json.loads(out)
        assert res["searches"] > 0
        gens_seen.update(res["generations"])
    assert len(gens_seen) >= 2  # the searchers saw commits happen while they searched
    final = RAG(idx).verify()
    assert final["generation"] == 3
    rag = RAG.open(idx, hash_config)
    with rag.lease() as reader:
        sources = {Path(s).name for s in reader.files()}
    assert len(sources) == 1 + len(list(a.iterdir())) + len(list(b.iterdir()))
