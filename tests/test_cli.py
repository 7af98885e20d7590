"""The command line: fast help, one-line errors, JSON output, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def rag(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "rag", *args], capture_output=True, text=True, cwd=cwd or ROOT,
                          timeout=timeout)


def test_import_leaves_heavy_libraries_out():
    code = ("import sys, rag, rag.cli; heavy = [m for m in ('torch', 'transformers', 'sentence_transformers', 'faiss') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_commands():
    r = rag("--help")
    assert r.returncode == 0
    for cmd in ("ingest", "search", "ask", "chat", "info", "delete", "verify", "repair", "eval", "feedback", "history"):
        assert cmd in r.stdout


def test_errors_are_one_line(tmp_path):
    r = rag("search", "anything", "--index", str(tmp_path / "missing"))
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "no index here" in r.stderr and "Traceback" not in r.stderr
    r = rag("search", "x", "--top-k", "0", "--index", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = rag("ingest", str(tmp_path), "--redact", "ssn", "--index", str(tmp_path / "i"))
    assert r.returncode == 2 and "--redact" in r.stderr
    # usage errors are one line too, naming the option and where help is
    r = rag("search", "x", "--filter", "nokeyvalue", "--index", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "--filter" in r.stderr and "KEY=VALUE" in r.stderr and "rag search --help" in r.stderr
    # a path that does not exist: one line naming it, exit 1, and no index folder left behind
    r = rag("ingest", str(tmp_path / "nope.txt"), "--index", str(tmp_path / "j"), "--embedder", "testing:hash-64")
    assert r.returncode == 1 and r.stderr.strip() == f"rag: error: {tmp_path / 'nope.txt'}: no such file or directory"
    assert not (tmp_path / "j").exists()
    # an --index that is a file, or whose parent cannot be created: one line naming it, no traceback
    (tmp_path / "afile").write_text("x")
    for cmd in (("ingest", str(tmp_path / "afile")), ("ask", "x"), ("search", "x")):
        r = rag(*cmd, "--index", str(tmp_path / "afile"))
        assert r.returncode == 2 and r.stderr.strip() == (
            f"rag: error: --index {tmp_path / 'afile'}: is a file, not an index folder (see 'rag {cmd[0]} --help')")
    r = rag("ingest", str(tmp_path / "afile"), "--index", str(tmp_path / "afile" / "sub"), "--embedder", "testing:hash-64")
    assert r.returncode == 1 and r.stderr.startswith(f"rag: error: {tmp_path / 'afile'}") and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    # feedback / history on a folder without a chat's sessions: one line, nothing created
    for args in (("feedback", "abc", "1", "up"), ("history",)):
        r = rag(*args, "--index", str(tmp_path / "k"))
        assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "no conversation sessions here" in r.stderr
        assert not (tmp_path / "k").exists()


def test_ingest_json_and_exit_codes(tmp_path, mini_corpus):
    (mini_corpus / "empty.txt").write_text("")
    (mini_corpus / "blob.bin").write_bytes(bytes(range(256)) * 10)
    idx = tmp_path / "idx"
    r = rag("ingest", str(mini_corpus), "--index", str(idx), "--embedder", "testing:hash-64", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["files_ingested"] == 5 and rep["total_chunks"] > 5
    assert 0 < rep["commit_seconds"] < rep["seconds"]  # the commit alone, part of the whole run
    reasons = {Path(s["source"]).name: s["reason"] for s in rep["skipped"]}
    assert set(reasons) == {"empty.txt", "blob.bin"} and all(reasons.values())
    # unchanged re-run: exit 0, nothing embedded
    r2 = rag("ingest", str(mini_corpus), "--index", str(idx), "--embedder", "testing:hash-64", "--json")
    assert r2.returncode == 0 and json.loads(r2.stdout)["chunks_embedded"] == 0
    assert json.loads(r2.stdout)["commit_seconds"] == 0.0  # nothing changed: no commit
    # only failures: exit 1 with a summary, not a traceback
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.txt").write_text("")
    r3 = rag("ingest", str(bad), "--index", str(tmp_path / "idx2"), "--embedder", "testing:hash-64")
    assert r3.returncode == 1 and "every file failed" in r3.stdout and "a.txt: empty" in r3.stdout
    # a first run that ingested nothing leaves no folder behind (no debris), and info says so
    assert not (tmp_path / "idx2").exists()
    r4 = rag("info", "--index", str(tmp_path / "idx2"), "--json")
    assert r4.returncode == 1 and r4.stderr.startswith("rag: error:") and "no index here" in r4.stderr


def test_search_json_has_sources_and_positions(tmp_path, mini_corpus):
    idx = tmp_path / "idx"
    assert rag("ingest", str(mini_corpus), "--index", str(idx), "--embedder", "testing:hash-64").returncode == 0
    r = rag("search", "Enabling HTTP/2", "--index", str(idx), "--mode", "bm25", "--json", "--top-k", "3")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    assert hits[0]["source"].endswith("http2.md")
    assert hits[0]["heading_path"][0] == "HTTP/2"
    assert isinstance(hits[0]["chunk_id"], int) and hits[0]["sparse_rank"] == 1
    r = rag("search", "x", "--index", str(idx), "--filter", "nokey")
    assert r.returncode == 2 and "--filter" in r.stderr


def test_search_ends_without_teardown_but_writes_everything(tmp_path, mini_corpus):
    """A finished `rag search` ends with os._exit (no interpreter teardown): its whole output
    still arrives, through a pipe and into a file, and atexit handlers do not run."""
    idx = tmp_path / "idx"
    assert rag("ingest", str(mini_corpus), "--index", str(idx), "--embedder", "testing:hash-64").returncode == 0
    r = rag("search", "HTTP/2 server push", "--index", str(idx), "--top-k", "5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 10 and [ln.split(".", 1)[0].strip() for ln in lines[::2]] == ["1", "2", "3", "4", "5"]
    out = tmp_path / "out.txt"
    code = ("import atexit, sys; atexit.register(lambda: open(sys.argv[1] + '.atexit', 'w').close())\n"
            "from rag.cli import main\nsys.argv = ['rag', 'search', 'HTTP/2', '--index', sys.argv[2], '--json']\nmain()")
    with open(out, "w") as fh:
        p = subprocess.run([sys.executable, "-c", code, str(out), str(idx)], stdout=fh, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(out.read_text())["hits"]) == 5
    assert not Path(str(out) + ".atexit").exists()  # ended before interpreter shutdown
    # an error still goes the normal way: one line, exit status 1
    r = rag("search", "x", "--index", str(tmp_path / "none"))
    assert r.returncode == 1 and r.stderr.startswith("rag: error:")


def test_one_time_preparation_notices_reach_the_terminal_without_verbose(tmp_path, capsys):
    """The generator's first load on a machine logs to ``rag.setup``; the CLI shows those
    notices as ``rag: ...`` lines on stderr even without -v (other library logs stay quiet)."""
    import logging

    from rag.cli import main

    with pytest.raises(SystemExit):
        main(["info", "--index", str(tmp_path / "none")])
    capsys.readouterr()
    logging.getLogger("rag.setup").warning("preparing the generator X once for this machine")
    logging.getLogger("rag").info("a detail")
    err = capsys.readouterr().err
    assert err == "rag: preparing the generator X once for this machine\n"
