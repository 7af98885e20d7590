"""Derived-model cache: keys follow the source file, folders appear atomically."""

from __future__ import annotations

import os

import pytest

from rag.model_cache import atomic_folder, cache_dir, file_key


def test_file_key_follows_content_not_path_or_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "venv1" / "model.gguf"
    f.parent.mkdir()
    f.write_bytes(b"a" * 5000)
    k1 = file_key(f)
    assert k1 == file_key(f) and len(k1) == 20
    g = tmp_path / "venv2" / "model.gguf"  # the same file installed in a second venv, later
    g.parent.mkdir()
    g.write_bytes(b"a" * 5000)
    os.utime(g, ns=(0, 10**18))
    assert file_key(g) == k1  # one derived copy serves both
    st = f.stat()
    f.write_bytes(b"b" * 5000)  # same size, new content
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime: the ctime still moves
    k2 = file_key(f)
    assert k2 != k1
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched only: same content
    assert file_key(f) == k2
    f.write_bytes(b"b" * 5001)
    assert len({k1, k2, file_key(f)}) == 3


def test_file_key_works_with_a_read_only_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("RAG_CACHE_DIR", str(blocker))  # the memo cannot be written
    f = tmp_path / "m.bin"
    f.write_bytes(b"abc")
    import hashlib

    assert file_key(f) == hashlib.sha256(b"abc").hexdigest()[:20]


def test_atomic_folder_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "cache" / "thing"
    with atomic_folder(target) as tmp:
        assert not target.exists()  # readers never see a half-written folder
        (tmp / "a.txt").write_text("one")
    assert (target / "a.txt").read_text() == "one"
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "c.txt").write_text("three")
            raise RuntimeError("boom")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["thing"]  # no temporary folders left


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("RAG_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rag"
