"""Tags keep data apart: `rag ingest --tag kind=synthetic` marks a run's documents, `rag info`
counts them, `[retrieval] exclude_tags` keeps them out of ask and search (property test over
200 random questions), and an explicit `--filter kind=synthetic` still reaches them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops_scenario import cli

DATA = Path(__file__).resolve().parent / "data"
BASE = {"embedding": {"model": "testing:hash-64"}, "generation": {"backend": "extractive"}}
EXCLUDE = {**BASE, "retrieval": {"exclude_tags": ["kind=synthetic"]}}

# Synthetic documents written to look like the real ones (same topics and words), so that
# without the exclusion they do get retrieved and cited.
SYNTHETIC = {
    "synth-zlib.txt": "Synthetic note: zlib compresses data with deflate and the Adler-32 checksum. "
                      "The zlib format was written by Jean-loup Gailly and Mark Adler for compression.",
    "synth-http2.md": "# HTTP/2\n\nSynthetic note: HTTP/2 multiplexing allows many streams on one connection. "
                      "Header compression with HPACK and server push are HTTP/2 features.",
    "synth-python.rst": "Zen of Python\n=============\n\nSynthetic note: explicit is better than implicit. "
                        "Flat is better than nested. Errors should never pass silently in Python.",
    "synth-exceptions.md": "# Exceptions\n\nSynthetic note: Python exceptions are raised with raise and caught "
                           "with try and except. Built-in exceptions include ValueError and KeyError.",
    "synth-penguins.txt": "Synthetic note: emperor penguins sleep in short naps and huddle in the cold winter.",
}


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tags")
    real = tmp / "real"
    shutil.copytree(DATA / "mini", real)
    synth = tmp / "synth"
    synth.mkdir()
    for name, text in SYNTHETIC.items():
        (synth / name).write_text(text + "\n")
    idx = tmp / "idx"
    conf = tmp / "base.toml"
    conf.write_text('[embedding]\nmodel = "testing:hash-64"\n[generation]\nbackend = "extractive"\n')
    excl = tmp / "exclude.toml"
    excl.write_text(conf.read_text() + '[retrieval]\nexclude_tags = ["kind=synthetic"]\n')
    r = cli("--config", str(conf), "ingest", str(real), "--index", str(idx))
    assert r.returncode == 0, r.stderr
    r = cli("--config", str(conf), "ingest", str(synth), "--index", str(idx), "--tag", "kind=synthetic", "--tag", "batch=7")
    assert r.returncode == 0, r.stderr
    synth_sources = {str((synth / n).resolve()) for n in SYNTHETIC}
    return {"idx": idx, "base": conf, "exclude": excl, "synth": synth_sources, "real": real}


def _rag(tagged, cfg):
    from rag import RAG
    from rag.config import RagConfig

    return RAG.open(tagged["idx"], RagConfig.from_dict(cfg))


def test_info_counts_documents_per_tag(tagged):
    r = cli("info", "--index", str(tagged["idx"]), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["documents_by_tag"] == {"batch=7": 5, "kind=synthetic": 5}
    assert info["documents"] == 10
    r = cli("info", "--index", str(tagged["idx"]))
    assert "documents by tag: batch=7 5, kind=synthetic 5" in r.stdout
    r = cli("ingest", str(tagged["real"]), "--index", str(tagged["idx"]), "--tag", "kind")
    assert r.returncode == 2 and "--tag" in r.stderr and "KEY=VALUE" in r.stderr
    r = cli("ingest", str(tagged["real"]), "--index", str(tagged["idx"]), "--tag", "source=x")
    assert r.returncode == 2 and "reserved" in r.stderr


def test_search_reaches_tagged_documents_only_when_asked(tagged):
    args = ["search", "zlib deflate compression checksum", "--index", str(tagged["idx"]), "--json", "--top-k", "20"]
    plain = json.loads(cli("--config", str(tagged["base"]), *args).stdout)["hits"]
    excluded = json.loads(cli("--config", str(tagged["exclude"]), *args).stdout)["hits"]
    explicit = json.loads(cli("--config", str(tagged["exclude"]), *args, "--filter", "kind=synthetic").stdout)["hits"]
    by_int = json.loads(cli("--config", str(tagged["base"]), *args, "--filter", "batch=7").stdout)["hits"]
    other_key = json.loads(cli("--config", str(tagged["exclude"]), *args, "--filter", "batch=7").stdout)["hits"]
    src = lambda hits: {str(Path(h["source"]).resolve()) for h in hits}  # noqa: E731
    assert src(plain) & tagged["synth"] and src(plain) - tagged["synth"]  # both kinds match
    assert excluded and not src(excluded) & tagged["synth"]
    assert len(excluded) == 20  # the exclusion leaves top_k real chunks, not fewer
    assert explicit and src(explicit) <= tagged["synth"]
    assert by_int and src(by_int) <= tagged["synth"]  # an integer tag value matches --filter's integer
    assert other_key == []  # a filter on another key does not lift the kind=synthetic exclusion
    assert all(h["metadata"]["kind"] == "synthetic" and "kind=synthetic" in h["metadata"]["tags"] for h in explicit)


def test_ask_cli_never_cites_synthetic_with_exclusion(tagged):
    q = "Who wrote the zlib format with deflate and Adler-32?"
    cited = lambda out: {str(Path(c["source"]).resolve()) for c in out["citations"]}  # noqa: E731
    plain = json.loads(cli("--config", str(tagged["base"]), "ask", q, "--index", str(tagged["idx"]), "--json", "--no-record").stdout)
    assert cited(plain) & tagged["synth"]  # without the exclusion the synthetic note wins
    excl = json.loads(cli("--config", str(tagged["exclude"]), "ask", q, "--index", str(tagged["idx"]), "--json", "--no-record").stdout)
    assert not cited(excl) & tagged["synth"] and not {str(Path(h["source"]).resolve()) for h in excl["hits"]} & tagged["synth"]


WORDS = sorted({w.strip(".,:#=()").lower() for t in SYNTHETIC.values() for w in t.split() if len(w.strip(".,:#=()")) > 2})


@pytest.fixture(scope="module")
def rags(tagged):
    return _rag(tagged, BASE), _rag(tagged, EXCLUDE)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS), min_size=1, max_size=8),
       lead=st.sampled_from(["", "What ", "Who ", "How does ", "Why do ", "Is "]))
def test_ask_never_cites_synthetic_property(rags, tagged, words, lead):
    _, excl = rags
    q = lead + " ".join(words) + "?"
    a = excl.ask(q)
    assert not {c.source for c in a.citations} & tagged["synth"], q
    assert not {h.chunk.source for h in a.hits} & tagged["synth"], q


def test_property_was_not_vacuous(rags, tagged):
    """The same questions without the exclusion cite synthetic documents (the property above
    could fail): checked on a fixed sample."""
    plain, _ = rags
    qs = [" ".join(WORDS[i:i + 4]) + "?" for i in range(0, len(WORDS), 4)]
    hits = sum(bool({c.source for c in plain.ask(q).citations} & tagged["synth"]) for q in qs)
    assert hits >= len(qs) // 4, (hits, len(qs))


def test_filter_exclude_round_trip():
    from rag.index.backend import Filter
    from rag.tags import with_exclusions

    f = with_exclusions(Filter.from_mapping({"lang": "en"}), ["kind=synthetic", "kind=test"])
    assert f.exclude == (("kind", ("synthetic", "test")),) and not f.unrestricted
    assert Filter.from_dict(f.to_dict()) == f
    assert with_exclusions(Filter.from_mapping({"kind": "synthetic"}), ["kind=synthetic"]).exclude == ()
    from rag.errors import ConfigError

    with pytest.raises(ConfigError, match="retrieval.exclude_tags"):
        with_exclusions(Filter(), ["nokeyvalue"])
