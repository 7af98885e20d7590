"""Index versions for the local backend: keep the last N generations, list them, roll back,
and read an older one.

Every commit leaves an immutable ``gen-NNNNNN/`` folder and replaces ``manifest.json``
(:mod:`rag.index.store`). This module adds, beside them::

    versions/gen-NNNNNN.json   the manifest that generation was committed with, plus what the
                               commit changed: files added / changed / removed (by content hash)

Retention: a commit keeps the ``keep`` newest generation folders (config ``[index]
keep_generations``, default 5) besides those leased in this process; older folders and their
records are removed.

Rollback (:func:`rollback`) never rewinds the generation counter: it commits a NEW generation
whose files are hard links of the chosen one's (files are immutable, so no copy and no extra
disk) and whose manifest says ``restored_from``. Readers switch exactly as after a commit (the
manifest changes), crash safety is the commit's (links in a temp folder, rename, manifest
written last), chunk ids are never reused (``next_chunk_id`` is the maximum of both), and
rolling forward is one more rollback to the newer generation. Why not point the manifest back at
the old folder: every writer treats folders newer than the manifest as debris of a crashed
commit (:meth:`IndexStore.cleanup_stale`) and numbers the next generation current + 1, so the
newer generations would be deleted or overwritten.

:class:`GenerationIndex` serves one kept generation read-only through the same ``lease()``
contract as :class:`rag.index.local.LocalIndex` (``rag ask/search --at GEN``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..errors import ConfigError, IndexFormatError, IndexNotFoundError
from .manifest import MANIFEST, check_files, fsync_dir, read_manifest, write_json_atomic

log = logging.getLogger("rag")

VERSIONS = "versions"
DEFAULT_KEEP = 5
"""Generations kept on disk by default (config ``[index] keep_generations``)."""


def _gen_name(g: int) -> str:
    return f"gen-{int(g):06d}"


def _record_path(index_dir: Path, g: int) -> Path:
    return Path(index_dir) / VERSIONS / f"{_gen_name(g)}.json"


def generation_folders(index_dir: str | Path) -> list[int]:
    """Numbers of the committed-looking ``gen-NNNNNN`` folders, ascending (temp folders left out)."""
    out = []
    d = Path(index_dir)
    if not d.is_dir():
        return out
    for p in d.iterdir():
        if p.is_dir() and p.name.startswith("gen-") and ".tmp-" not in p.name:
            with contextlib.suppress(ValueError):
                out.append(int(p.name[4:]))
    return sorted(out)


def file_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    """Files added, changed (other content hash) and removed between two ``{source: FileRecord}``
    maps (:meth:`IndexReader.files`), each list sorted."""
    def h(rec: Any) -> Any:
        return getattr(rec, "content_hash", rec.get("content_hash") if isinstance(rec, Mapping) else rec)

    return {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
            "changed": sorted(k for k in set(old) & set(new) if h(old[k]) != h(new[k]))}


def record_commit(index_dir: str | Path, manifest: Mapping[str, Any], changes: Mapping[str, Sequence[str]] | None,
                  restored_from: int | None = None) -> None:
    """Write ``versions/gen-N.json`` for a generation being committed (atomic; call it before or
    right after the manifest is written). ``changes``: :func:`file_changes` against the previous
    current generation (None: unknown)."""
    rec = {"generation": int(manifest["generation"]), "manifest": dict(manifest),
           "changes": None if changes is None else {k: list(v) for k, v in changes.items()},
           "restored_from": restored_from}
    p = _record_path(Path(index_dir), int(manifest["generation"]))
    p.parent.mkdir(exist_ok=True)
    write_json_atomic(p, rec)


def ensure_record(index_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    """Write the record of the generation ``manifest`` names if it has none (an index built
    before versions existed, or a crash between manifest and record); its changes are unknown."""
    if not _record_path(Path(index_dir), int(manifest["generation"])).exists():
        record_commit(index_dir, manifest, None, manifest.get("restored_from"))


def retained(index_dir: str | Path, keep: int) -> list[str]:
    """Folder names a commit keeps besides its own: the ``keep - 1`` newest existing ones
    (the new generation is the ``keep``-th)."""
    if keep < 1:
        raise ConfigError(f"index.keep_generations must be >= 1, not {keep}")
    gens = generation_folders(index_dir)
    return [_gen_name(g) for g in gens[-(keep - 1):]] if keep > 1 else []


def prune_records(index_dir: str | Path) -> None:
    """Remove records of generations whose folder is gone."""
    d = Path(index_dir) / VERSIONS
    if not d.is_dir():
        return
    have = set(generation_folders(index_dir))
    for p in d.glob("gen-*.json"):
        with contextlib.suppress(ValueError, OSError):
            if int(p.stem[4:]) not in have:
                p.unlink()


def _load_record(index_dir: Path, g: int) -> dict[str, Any] | None:
    p = _record_path(index_dir, g)
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IndexFormatError(str(p), f"not a readable version record ({e.__class__.__name__})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("manifest"), dict):
        raise IndexFormatError(str(p), "not a version record")
    return rec


def _dir_bytes(paths: Sequence[Path], seen: set[tuple[int, int]]) -> int:
    """Bytes of the files under ``paths``, each inode counted once (rollbacks hard-link)."""
    total = 0
    for root in paths:
        for p in root.rglob("*"):
            with contextlib.suppress(OSError):
                st = p.stat()
                if p.is_file() and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    return total


def _gen_paths(index_dir: Path, g: int) -> list[Path]:
    """A generation's folder plus the shared segment folders it lists (:mod:`rag.index.segments`)."""
    from .segments import SEGMENT_LIST, SEGMENTS

    folder = Path(index_dir) / _gen_name(g)
    try:
        names = json.loads((folder / SEGMENT_LIST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        names = []
    return [folder, *(Path(index_dir) / SEGMENTS / str(n) for n in names)]


def list_versions(index_dir: str | Path) -> list[dict[str, Any]]:
    """The kept generations, oldest first: ``generation``, ``time`` (UTC commit time),
    ``documents``, ``chunks``, ``files``, ``changes`` (added/changed/removed file lists or None),
    ``restored_from``, ``current``, ``bytes`` (disk use not shared with an older kept
    generation) and ``restorable`` (its record and folder are present). Raises
    IndexNotFoundError when there is no index."""
    d = Path(index_dir)
    if not (d / MANIFEST).exists():
        raise IndexNotFoundError(f"{d}: no index here (run `rag ingest PATH --index {d}` first)")
    current = read_manifest(d)
    seen: set[tuple[int, int]] = set()
    out = []
    for g in generation_folders(d):
        if g > int(current["generation"]):
            continue  # an uncommitted leftover
        rec = _load_record(d, g)
        m = rec["manifest"] if rec else (current if g == int(current["generation"]) else None)
        out.append({
            "generation": g, "time": m.get("updated") if m else None,
            "documents": m["counts"]["documents"] if m else None, "chunks": m["counts"]["chunks"] if m else None,
            "files": m["counts"]["files"] if m else None,
            "changes": rec.get("changes") if rec else None,
            "restored_from": (rec or {}).get("restored_from") or (m or {}).get("restored_from"),
            "current": g == int(current["generation"]),
            "bytes": _dir_bytes(_gen_paths(d, g), seen),
            "restorable": m is not None,
        })
    return out


def disk_usage(index_dir: str | Path) -> dict[str, Any]:
    """``{"generations": n kept, "bytes": on disk for all of them (hard links once),
    "current_bytes": the current one's}`` for ``rag info``."""
    vs = list_versions(index_dir)
    cur = next((v for v in vs if v["current"]), None)
    cur_bytes = _dir_bytes(_gen_paths(Path(index_dir), cur["generation"]), set()) if cur else 0
    return {"generations": len(vs), "bytes": sum(v["bytes"] for v in vs), "current_bytes": cur_bytes}


def manifest_of(index_dir: str | Path, generation: int) -> dict[str, Any]:
    """The manifest generation ``generation`` was committed with. Raises ConfigError naming the
    kept generations when it is not kept."""
    d = Path(index_dir)
    current = read_manifest(d)
    if int(generation) == int(current["generation"]):
        return current
    rec = _load_record(d, int(generation))
    if rec is None or not (d / _gen_name(generation)).is_dir():
        kept = [v["generation"] for v in list_versions(d) if v["restorable"]]
        raise ConfigError(f"{d}: generation {generation} is not kept (kept: {', '.join(map(str, kept)) or 'none'})")
    return rec["manifest"]


def rollback(index_dir: str | Path, generation: int, *, keep: int = DEFAULT_KEEP, wait_s: float = 0.0) -> dict[str, Any]:
    """Make the state of kept generation ``generation`` current again, as a new generation
    (see the module docstring). Holds the writer lock; checks the old generation's files (size
    and sha256) first. Returns the new manifest. Raises ConfigError when ``generation`` is not
    kept or already current, IndexFormatError when its files are damaged, IndexLockedError
    when another writer holds the index past ``wait_s``."""
    from .local import leased_generations
    from .store import IndexStore, _now

    d = Path(index_dir)
    store = IndexStore(d)
    with store.lock(wait_s):
        current = read_manifest(d)
        cur_gen = int(current["generation"])
        if int(generation) == cur_gen:
            raise ConfigError(f"{d}: generation {generation} is already current")
        old = manifest_of(d, generation)
        check_files(d, old)
        ensure_record(d, current)
        new_gen = cur_gen + 1
        new_name = _gen_name(new_gen)
        keep_names = [new_name, current["gen_dir"], *retained(d, keep), *[_gen_name(g) for g in leased_generations(d)]]
        tmp = d / f"{new_name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        files: dict[str, Any] = {}
        for rel, info in sorted(old["files"].items()):
            if not rel.startswith(f"{old['gen_dir']}/"):  # a shared segment (rag.index.segments): referenced, not linked
                files[rel] = info
                continue
            inner = rel.split("/", 1)[1]
            dst = tmp / inner
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(d / rel, dst)
            except OSError:  # a file system without hard links: copy
                shutil.copy2(d / rel, dst)
            files[f"{new_name}/{inner}"] = info
        for sub in sorted({p.parent for p in tmp.rglob("*")} | {tmp}, key=lambda p: -len(p.parts)):
            fsync_dir(sub)
        final = d / new_name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(d)
        manifest = dict(old, generation=new_gen, gen_dir=new_name, files=files, updated=_now(), restored_from=int(generation),
                        next_chunk_id=max(int(old.get("next_chunk_id", 0)), int(current.get("next_chunk_id", 0))))
        old_files = {k: v for k, v in _files_of(d, current).items()}
        record_commit(d, manifest, file_changes(old_files, _files_of(d, old)), restored_from=int(generation))
        write_json_atomic(d / MANIFEST, manifest)
        store.remove_old_generations(keep_names)
        prune_records(d)
    log.info("%s: generation %d restored as generation %d", d, generation, new_gen)
    return manifest


def _files_of(index_dir: Path, manifest: Mapping[str, Any]) -> dict[str, str]:
    """``{source: content_hash}`` of one generation, read from its docstore (read-only)."""
    from .docstore import DocStore

    ds = DocStore.open_readonly(index_dir / manifest["gen_dir"] / "docstore.sqlite")
    try:
        return {k: v.content_hash for k, v in ds.files().items()}
    finally:
        ds.close()


def open_generation(index_dir: str | Path, generation: int):
    """A read-only :class:`rag.index.store.Snapshot` of a kept generation (files checked like
    on open). The caller closes it. Raises ConfigError when it is not kept."""
    from .docstore import DocStore
    from .store import Snapshot

    d = Path(index_dir)
    m = manifest_of(d, generation)
    check_files(d, m)
    ds = DocStore.open_readonly(d / m["gen_dir"] / "docstore.sqlite")
    snap = Snapshot(d, dict(m), ds)
    try:
        snap.dense
        snap.sparse
    except Exception:
        ds.close()
        raise
    return snap


def verify_generation(index_dir: str | Path, generation: int) -> dict[str, Any]:
    """Full check of one kept generation: every file's sha256, counts, and that FAISS and BM25
    hold exactly the docstore's chunk ids. Raises IndexFormatError naming the first bad file."""
    import numpy as np

    d = Path(index_dir)
    m = manifest_of(d, generation)
    check_files(d, m, full=True)
    snap = open_generation(d, generation)
    try:
        ids = snap.docstore.chunk_ids()
        if ids.shape[0] != m["counts"]["chunks"]:
            raise IndexFormatError(str(snap.gen_dir / "docstore.sqlite"), f"has {ids.shape[0]} chunks, manifest says {m['counts']['chunks']}")
        if not np.array_equal(np.sort(snap.sparse.ids), ids):
            raise IndexFormatError(str(snap.gen_dir / "sparse"), "BM25 chunk ids differ from the docstore's")
        dense_ids = snap.dense.ids
        if dense_ids is not None and not np.array_equal(np.sort(dense_ids), ids):
            raise IndexFormatError(str(snap.gen_dir / "dense.faiss"), "FAISS ids differ from the docstore's")
        if snap.segmented:  # each segment's vectors.npy against its rows (no 1.5 GB gather at 1M chunks)
            for seg in snap.segment_set.segments:
                seg.vectors()
        if (snap.segment_set.n_live if snap.segmented else snap.vectors().shape[0]) != ids.shape[0]:
            raise IndexFormatError(str(snap.gen_dir / "vectors.npy"), "vector count differs from the docstore's")
        return {"index": str(d), "generation": int(generation), **m["counts"]}
    finally:
        snap.close()


class CommitHook:
    """What a local commit does for versions, in two calls around ``Transaction.commit``:
    ``keep`` (folder names to keep: the ``keep_generations - 1`` newest) and ``done(manifest)``
    (writes the new generation's record with the files it changed, drops records of removed
    folders). ``base``: the reader of the generation the commit starts from (None: a new index);
    ``docstore``: the transaction's docstore (read before it is closed)."""

    def __init__(self, index_dir: str | Path, keep_generations: int, base, docstore):
        self.dir = Path(index_dir)
        self.keep = retained(self.dir, keep_generations)
        old = base.files() if base is not None else {}
        self.changes = file_changes(old, docstore.files())
        if base is not None:
            ensure_record(self.dir, base.manifest)

    def done(self, manifest: Mapping[str, Any]) -> None:
        record_commit(self.dir, manifest, self.changes)
        prune_records(self.dir)


class GenerationIndex:
    """One kept generation behind the ``Index`` read contract (``exists``, ``lease``, ``close``,
    ``dir``): what ``rag ask/search --at GEN`` and :func:`rag.index.versions.pin` answer from.
    The generation is opened on first lease and stays open until :meth:`close`; it is leased
    like a current one, so this process's writers keep its folder."""

    def __init__(self, index_dir: str | Path, generation: int):
        self.dir = Path(index_dir)
        self.generation = int(generation)
        manifest_of(self.dir, self.generation)  # fails now when it is not kept
        self._reader = None

    def exists(self) -> bool:
        return True

    def stored_settings(self) -> dict[str, Any]:
        return dict(manifest_of(self.dir, self.generation).get("config") or {})

    @contextlib.contextmanager
    def lease(self) -> Iterator[Any]:
        from .local import LocalReader, _count_lease

        if self._reader is None:
            self._reader = LocalReader(open_generation(self.dir, self.generation))
        _count_lease(self.dir, self.generation, +1)
        try:
            yield self._reader
        finally:
            _count_lease(self.dir, self.generation, -1)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.snapshot.close()
            self._reader = None


def pin(rag, generation: int):
    """Make ``rag`` (a :class:`rag.RAG`) search and answer from kept generation ``generation``
    (``Answer.generation`` then names it); writes still go to the current state. Returns rag."""
    rag.engine.index = GenerationIndex(rag.index_dir, generation)
    return rag


