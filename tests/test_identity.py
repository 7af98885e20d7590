"""Document identity (issue 12, defects 2-4): keys are resolved absolute paths whatever the
working folder; duplicates are kept as aliases that filters and deletes see and whose own text
comes back; JSONL records sharing an id are parts of one document."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

from rag import RAG

ROOT = Path(__file__).resolve().parents[1]

A_X = "Quokkas live on Rottnest Island and eat the leaves of shrubs near the salt lakes."
A_Y = "Lighthouses on granite headlands guide container ships past the northern reef at night."
DUP = "Sourdough starters ferment flour and water with wild yeast and lactic acid bacteria over days."


def _sources(hits) -> set[str]:
    return {h.chunk.source for h in hits}


def test_same_relative_path_from_two_folders_is_two_documents(tmp_path, monkeypatch, hash_config):
    for name, text in (("x", A_X), ("y", A_Y)):
        (tmp_path / name / "docs").mkdir(parents=True)
        (tmp_path / name / "docs" / "a.txt").write_text(text)
    idx = tmp_path / "idx"
    monkeypatch.chdir(tmp_path / "x")
    RAG.create(idx, hash_config).ingest(["docs"])
    monkeypatch.chdir(tmp_path / "y")
    rag = RAG.open(idx, hash_config)
    rag.ingest(["docs"])
    xa, ya = str((tmp_path / "x" / "docs" / "a.txt").resolve()), str((tmp_path / "y" / "docs" / "a.txt").resolve())
    assert rag.info()["documents"] == 2
    with rag.lease() as reader:
        assert set(reader.files()) == {xa, ya}
    # a source filter on x's absolute path finds x's text, under x's name
    hits = rag.search("quokkas Rottnest", filters={"source": xa})
    assert [h.chunk.source for h in hits] == [xa] and "Quokkas" in hits[0].chunk.text
    # editing x's file (from y's folder): the new text ranks first, the old is gone
    Path(xa).write_text("Numbats dig for termites in the eucalypt woodland of the southwest.")
    rag.ingest([xa])
    top = rag.search("numbats termites", top_k=1)[0]
    assert top.chunk.source == xa and "Numbats" in top.chunk.text
    assert not any("Quokkas" in h.chunk.text for h in rag.search("quokkas Rottnest", top_k=10))
    # deleting x's absolute path removes x's chunks only
    rep = rag.delete([xa])
    assert rep.chunks_removed == 1 and rep.files_removed == [xa]
    assert _sources(rag.search("lighthouses granite reef", top_k=10)) == {ya}
    assert rag.verify()["documents"] == 1


def test_symlinked_folder_and_nfd_name_give_the_same_key(tmp_path, hash_config):
    real = tmp_path / "real"
    real.mkdir()
    name = unicodedata.normalize("NFD", "café.txt")
    (real / name).write_text(A_X)
    (tmp_path / "link").symlink_to(real)
    idx = tmp_path / "idx"
    rag = RAG.create(idx, hash_config)
    rag.ingest([tmp_path / "link"])
    rep = rag.ingest([real])  # the same file through its real folder: unchanged, not a second document
    assert rep.files_unchanged == 1 and rep.files_ingested == 0
    src = rag.search("quokkas", top_k=1)[0].chunk.source
    assert src == unicodedata.normalize("NFC", str(real.resolve() / name)) and src.startswith(str(real.resolve()))


def _dup_corpus(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "a-kept.txt").write_text(DUP)
    (d / "b-copy.txt").write_text(DUP + "\n")  # same normalised text: an exact duplicate
    (d / "c-other.txt").write_text(A_Y)
    return d


def test_duplicate_is_an_alias_filters_see(tmp_path, hash_config):
    d = _dup_corpus(tmp_path)
    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([d])
    kept, copy = str((d / "a-kept.txt").resolve()), str((d / "b-copy.txt").resolve())
    assert [(x["key"], x["kept_key"], x["kind"]) for x in rep.duplicates] == [(copy, kept, "exact")]
    assert rag.info()["documents"] == 2 and rag.info()["duplicate_documents"] == 1
    # a filter on the alias's path finds the text (the kept copy's chunk)
    hits = rag.search("sourdough yeast", filters={"source": copy})
    assert len(hits) == 1 and "Sourdough" in hits[0].chunk.text
    assert rag.search("sourdough yeast", filters={"source": "*b-copy.txt"})
    # and a filter on the alias's own metadata
    from rag.hashing import sha256_file

    assert rag.search("sourdough", filters={"content_hash": sha256_file(copy)})
    assert rag.search("sourdough", filters={"content_hash": "0" * 64}) == []


def test_metadata_filter_finds_a_duplicate_record(tmp_path, hash_config):
    f = tmp_path / "kb.jsonl"
    f.write_text(json.dumps({"id": "1", "team": "bakery", "text": DUP}) + "\n"
                 + json.dumps({"id": "2", "team": "brewery", "text": DUP}) + "\n")
    from rag.loaders import LoaderOptions

    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([f], loader_options=LoaderOptions(metadata_fields=("team",)))
    assert len(rep.duplicates) == 1 and rep.documents == 1
    for team in ("bakery", "brewery"):
        hits = rag.search("sourdough yeast", filters={"team": team})
        assert len(hits) == 1 and "Sourdough" in hits[0].chunk.text
    assert rag.search("sourdough yeast", filters={"team": "dairy"}) == []


def test_alias_text_comes_back_when_the_kept_copy_changes(tmp_path, hash_config):
    d = _dup_corpus(tmp_path)
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([d])
    copy = str((d / "b-copy.txt").resolve())
    (d / "a-kept.txt").write_text("Kombucha is fermented sweet tea made with a symbiotic culture.")
    rep = rag.ingest([d])
    assert rep.revived == [copy] and rep.files_ingested == 1 and rep.files_unchanged == 2
    hits = rag.search("sourdough yeast flour", top_k=3)
    assert hits[0].chunk.source == copy and "Sourdough" in hits[0].chunk.text
    assert rag.search("kombucha tea", top_k=1)[0].chunk.source.endswith("a-kept.txt")
    assert rag.info()["duplicate_documents"] == 0
    rag.verify()


def test_alias_text_comes_back_when_the_kept_copy_is_deleted_or_synced_away(tmp_path, hash_config):
    d = _dup_corpus(tmp_path)
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([d])
    copy = str((d / "b-copy.txt").resolve())
    rep = rag.delete([str(d / "a-kept.txt")])
    assert rep.revived == [copy] and rep.files_removed == [str((d / "a-kept.txt").resolve())]
    assert rag.search("sourdough yeast", top_k=1)[0].chunk.source == copy
    (d / "a-kept.txt").unlink()
    # the same through --sync: a second copy is an alias of b now; remove b from disk
    (d / "z-copy.txt").write_text(DUP)
    rep = rag.ingest([d])
    assert [x["kept_key"] for x in rep.duplicates] == [copy]
    (d / "b-copy.txt").unlink()
    rep = rag.ingest([d], sync=True)
    assert rep.files_removed == [copy] and rep.revived == [str((d / "z-copy.txt").resolve())]
    assert rag.search("sourdough yeast", top_k=1)[0].chunk.source.endswith("z-copy.txt")
    # deleting the alias itself removes it (deletes see aliases) and leaves the kept text alone
    (d / "y-copy.txt").write_text(DUP)
    rag.ingest([d])
    rep = rag.delete([str(d / "y-copy.txt")])
    assert rep.files_removed == [str((d / "y-copy.txt").resolve())] and rep.chunks_removed == 0
    assert rag.search("sourdough", filters={"source": str(d / "y-copy.txt")}) == []
    assert rag.search("sourdough yeast", top_k=1)[0].chunk.source.endswith("z-copy.txt")


def test_duplicates_across_access_groups_are_not_merged(tmp_path, hash_config):
    d = tmp_path / "d"
    d.mkdir()
    (d / "public.txt").write_text(DUP)
    rag = RAG.create(tmp_path / "idx", hash_config)
    rag.ingest([d / "public.txt"])
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "secret.txt").write_text(DUP)
    rep = rag.ingest([tmp_path / "s"], acl=["staff"])
    assert rep.duplicates == [] and rep.documents == 1
    assert _sources(rag.search("sourdough", principals=["staff"], top_k=5)) == \
        {str((d / "public.txt").resolve()), str((tmp_path / "s" / "secret.txt").resolve())}
    assert _sources(rag.search("sourdough", principals=[], top_k=5)) == {str((d / "public.txt").resolve())}


def test_records_sharing_an_id_are_all_kept(tmp_path, hash_config):
    f = tmp_path / "manual.jsonl"
    parts = [{"doc_id": "m1", "title": "Pump manual", "text": "Part one: unpack the pump and check the impeller."},
             {"doc_id": "m1", "text": "Part two: prime the pump with water before the first start."},
             {"doc_id": "m2", "title": "Valve", "text": "The valve closes when the float rises."},
             {"doc_id": "m1", "text": "Part three: descale the housing every winter with citric acid."}]
    f.write_text("\n".join(json.dumps(p) for p in parts) + "\n")
    from rag.loaders import LoaderOptions

    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([f], loader_options=LoaderOptions(id_field="doc_id"))
    assert rep.documents == 2
    key = f"{f.resolve()}#m1"
    for q, word in (("unpack impeller", "unpack"), ("prime water first start", "prime"), ("descale citric winter", "descale")):
        hits = rag.search(q, top_k=1, filters={"doc_id": key})
        assert hits and word in hits[0].chunk.text and hits[0].chunk.title == "Pump manual"


def test_cli_ingest_from_two_folders_then_delete(tmp_path, hash_config):
    """The reported sequence, through the CLI: `cd x && rag ingest docs`, `cd y && rag ingest docs`."""
    for name, text in (("x", A_X), ("y", A_Y)):
        (tmp_path / name / "docs").mkdir(parents=True)
        (tmp_path / name / "docs" / "a.txt").write_text(text)
    idx = str(tmp_path / "idx")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for name in ("x", "y"):
        r = subprocess.run([sys.executable, "-m", "rag", "ingest", "docs", "--index", idx, "--embedder", "testing:hash-64"],
                           cwd=tmp_path / name, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "rag", "delete", str(tmp_path / "x" / "docs" / "a.txt"), "--index", idx, "--json"],
                       cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chunks_removed"] == 1


def test_a_dropped_duplicate_chunk_comes_back_when_its_kept_copy_goes(tmp_path, hash_config):
    shared = " ".join(f"Clause {i}: the tenant keeps the shared stairwell clean and free of bicycles." for i in range(8))
    own_a = " ".join(f"Section {i} of lease A covers the garden shed and the apple trees." for i in range(8))
    own_b = " ".join(f"Section {i} of lease B covers the cellar and the boiler room." for i in range(8))
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.md").write_text(f"# Lease A\n\n{own_a}\n\n## House rules\n\n{shared}\n")
    (d / "b.md").write_text(f"# Lease B\n\n{own_b}\n\n## House rules\n\n{shared}\n")
    rag = RAG.create(tmp_path / "idx", hash_config)
    rep = rag.ingest([d])
    chunk_links = [x for x in rep.duplicates if x["level"] == "chunk"]
    assert len(chunk_links) >= 1 and all(x["kept_key"] == str((d / "a.md").resolve()) for x in chunk_links)
    # the filter on b's path still finds the shared clause (b's link to a's chunk)
    hits = rag.search("stairwell bicycles", filters={"source": str(d / "b.md")}, top_k=3)
    assert hits and "stairwell" in hits[0].chunk.text
    rep = rag.delete([str(d / "a.md")])
    assert rep.revived == [str((d / "b.md").resolve())]
    top = rag.search("stairwell bicycles", top_k=1)[0]
    assert top.chunk.source == str((d / "b.md").resolve()) and "stairwell" in top.chunk.text
    rag.verify()
