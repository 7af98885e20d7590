"""The Qdrant index handle: client, collections, the writer lock, leases, info and verify.

Consistency without transactions (Qdrant has none across points): every point and record
carries ``g_add``, the generation that wrote it, and ``g_del`` once a later generation removed
it. A reader of committed generation ``G`` sees exactly ``g_add <= G and not g_del <= G``. A
writer of ``G+1`` first marks the metadata point ``dirty`` (so readers filter by generation and
scope IDF to their generation), writes its points with ``g_add = G+1`` and marks what it
replaces with ``g_del = G+1``, then commits by rewriting the ONE metadata point
(``generation = G+1``: a single-point upsert is atomic), then deletes the points that are gone
and clears ``dirty``. A ``kill -9`` anywhere leaves either G or G+1 visible; the next writer or
``rag verify --repair`` removes the leftovers (:meth:`QdrantIndex.cleanup`). While ``dirty`` is
false nothing uncommitted exists, so readers skip the generation filter (it costs a payload
scan per query in embedded mode); a reader whose lease began before a writer started drops
points with ``g_add > G`` from its results instead.

The writer lock is the collection ``C-lock``: creating a collection is atomic on a server and
fails when it exists, so two writers cannot both hold it. Its one point names the owner (host,
pid) and an expiry that a heartbeat thread refreshes every ``lock_ttl_s / 3`` while the lock is
held; a lock whose owner process on this host is dead, or (another host) whose expiry passed,
is taken over (with a log line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping

from ...errors import IndexFormatError, IndexLockedError, IndexNotFoundError, RagError
from . import QdrantLocation

log = logging.getLogger("rag")

FORMAT = "rag-qdrant"
FORMAT_VERSION = 1
META_ID = 0
LOCK_ID = 0
DENSE = "dense"
SPARSE = "bm25"
CHUNK_FIELDS = ("g_add", "doc", "ord", "start", "end", "page", "heading", "text", "title", "hash", "dl", "cmeta",
                "source", "dirs", "name", "sfx", "meta", "acl", "public")
"""Payload keys every chunk point carries (``rag verify`` checks each point)."""
KEYWORD_INDEXES = ("doc", "source", "dirs", "name", "sfx", "title", "acl", "hash")
EMPTY_LOCK_GRACE_S = 5.0
"""A lock collection whose owner point is still missing after this long belongs to a writer
that died between creating and writing it (a live one writes it at once)."""
RECORD_KEYWORD_INDEXES = ("kind", "key", "source", "alias_of", "links", "dirs", "name", "sfx", "acl", "doc")

_CLIENTS: dict[tuple, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _reason(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0][:200]}" if s else type(e).__name__


class Client:
    """A qdrant_client with one-line errors. Embedded mode is serialised by a lock (the local
    re-implementation is not thread-safe); a server client is used from many threads."""

    def __init__(self, loc: QdrantLocation, raw: Any):
        self.loc = loc
        self.raw = raw
        self._lock = threading.RLock() if loc.kind == "local" else contextlib.nullcontext()

    def __call__(self, method: str, *args: Any, **kw: Any) -> Any:
        with self._lock:
            try:
                return getattr(self.raw, method)(*args, **kw)
            except RagError:
                raise
            except Exception as e:  # noqa: BLE001 - every client failure becomes one line
                raise _map_error(self.loc, e) from None


def _map_error(loc: QdrantLocation, e: Exception) -> RagError:
    text = str(e)
    name = type(e).__name__
    if "Connect" in name or "Timeout" in name or "ResponseHandling" in name or "refused" in text.lower():
        return IndexNotFoundError(f"{loc}: Qdrant server unreachable ({_reason(e)})")
    if "Not found" in text or "doesn't exist" in text or "not found" in text.lower():
        return IndexNotFoundError(f"{loc}: {_reason(e)}")
    return IndexFormatError(str(loc), f"Qdrant request failed ({_reason(e)})")


def get_client(loc: QdrantLocation, store: Any) -> Client:
    """One client per location and process (embedded mode: one process may open a folder)."""
    key = (loc.kind, loc.path and os.path.realpath(loc.path), loc.url, getattr(store, "api_key_env", None))
    with _CLIENTS_LOCK:
        c = _CLIENTS.get(key)
        if c is None:
            from qdrant_client import QdrantClient

            if loc.kind == "local":
                try:
                    raw = QdrantClient(path=loc.path)
                except RuntimeError as e:  # the folder's portalocker lock
                    if "already accessed" in str(e):
                        raise IndexLockedError(f"{loc}: the embedded Qdrant folder is open in another process "
                                               "(embedded mode allows one process at a time; use a Qdrant server "
                                               "for concurrent access)") from None
                    raise IndexFormatError(str(loc), _reason(e)) from None
            else:
                env = getattr(store, "api_key_env", "") or ""
                api_key = os.environ.get(env) if env else None
                raw = QdrantClient(url=loc.url, api_key=api_key or None, timeout=int(getattr(store, "timeout_s", 30)),
                                   prefer_grpc=False, check_compatibility=False)
            if not _CLIENTS:
                import atexit

                atexit.register(close_clients)
            c = _CLIENTS[key] = Client(loc, raw)
        return c


def close_clients() -> None:
    """Close every cached client (tests; releases embedded folders for other processes)."""
    with _CLIENTS_LOCK:
        for c in _CLIENTS.values():
            with contextlib.suppress(Exception):
                c.raw.close()
        _CLIENTS.clear()


def visible(generation: int) -> tuple[list, list]:
    """``(must, must_not)`` conditions selecting what committed ``generation`` holds."""
    from qdrant_client import models as m

    return ([m.FieldCondition(key="g_add", range=m.Range(lte=generation))],
            [m.FieldCondition(key="g_del", range=m.Range(lte=generation))])


class QdrantIndex:
    """A Qdrant collection (implements :class:`rag.index.backend.Index`). Cheap to construct;
    the server is contacted on first use. Thread-safe."""

    def __init__(self, loc: QdrantLocation, config: Any = None):
        from ...config import RagConfig

        self.loc = loc
        self.config = config if config is not None else RagConfig()
        self.store = getattr(self.config, "store", None)
        if self.store is None:
            from ...config import StoreConfig

            self.store = StoreConfig()
        self.name = loc.collection
        self.records = f"{loc.collection}-records"
        self.lock_name = f"{loc.collection}-lock"
        self._client: Client | None = None
        self.ann_threshold = 0  # the facade sets it; Qdrant builds its own HNSW

    def __repr__(self) -> str:
        return f"QdrantIndex({self.loc.text!r})"

    @property
    def location(self) -> str:
        return self.loc.text

    @property
    def side_dir(self):
        """The folder for files that live beside an index (embedding cache, conversation
        records): the embedded folder itself, or ``$RAG_CACHE_DIR|~/.cache/rag/qdrant/HOST_PORT_COLLECTION``."""
        from pathlib import Path

        if self.loc.kind == "local":
            return Path(self.loc.path)
        from urllib.parse import urlsplit

        u = urlsplit(self.loc.url)
        root = Path(os.environ.get("RAG_CACHE_DIR") or Path.home() / ".cache" / "rag")
        side = root / "qdrant" / f"{u.hostname}_{u.port}_{self.name}"
        side.mkdir(parents=True, exist_ok=True)
        return side

    @property
    def cache_path(self):
        """The embedding cache file: inside the folder in embedded mode, else the user cache
        (``$RAG_CACHE_DIR`` or ``~/.cache/rag``; the cache is keyed by model and text, so one
        file serves every collection)."""
        from pathlib import Path

        if self.loc.kind == "local":
            return Path(self.loc.path) / "embcache.sqlite"
        root = Path(os.environ.get("RAG_CACHE_DIR") or Path.home() / ".cache" / "rag")
        root.mkdir(parents=True, exist_ok=True)
        return root / "embcache.sqlite"

    def stored_settings(self) -> dict[str, Any]:
        """The index settings (embedding, chunking, bm25, dedup) the collection was built with."""
        meta = self.read_meta(required=True)
        return dict(meta.get("config") or {})

    def repair(self, wait_s: float = 0.0) -> dict[str, Any]:
        """``rag repair`` / ``rag verify --repair``: clean up interrupted writes, re-weight BM25
        when avgdl drifted, then verify."""
        return self.verify(repair=True, wait_s=wait_s)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = get_client(self.loc, self.store)
        return self._client

    # ---- metadata -----------------------------------------------------------------------------
    def exists(self) -> bool:
        """True when the collection holds a committed generation."""
        meta = self.read_meta(required=False)
        return meta is not None and int(meta.get("generation", 0)) >= 1

    def read_meta(self, required: bool = True) -> dict[str, Any] | None:
        """The metadata point's payload; None (or IndexNotFoundError when ``required``) when the
        collection has none. Raises IndexFormatError for another format or version."""
        if self.loc.kind == "local" and not os.path.isdir(str(self.loc.path)):  # do not create it by reading
            if required:
                raise IndexNotFoundError(f"{self.loc}: no Qdrant folder here (run `rag ingest PATH --index {self.loc}` first)")
            return None
        try:  # one round trip per lease; the existence check only when it fails
            pts = self.client("retrieve", self.records, ids=[META_ID], with_payload=True)
        except IndexNotFoundError:
            if self.client("collection_exists", self.records):
                raise
            if required:
                raise IndexNotFoundError(f"{self.loc}: no collection {self.name!r} "
                                         f"(run `rag ingest PATH --index {self.loc}` first)") from None
            return None
        if not pts:
            if required:
                raise IndexNotFoundError(f"{self.loc}: collection {self.name!r} has no rag metadata (not written by rag?)")
            return None
        meta = dict(pts[0].payload or {})
        if meta.get("format") != FORMAT:
            raise IndexFormatError(str(self.loc), f"collection {self.records!r} is not a {FORMAT} collection")
        if meta.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(str(self.loc), f"format version {meta.get('format_version')!r} is not supported "
                                                  f"(this rag reads version {FORMAT_VERSION})")
        return meta

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        from qdrant_client import models as m

        self.client("upsert", self.records, points=[m.PointStruct(id=META_ID, vector={}, payload=dict(meta))], wait=True)

    def check_dim(self, dim: int) -> None:
        """Raise IndexFormatError when the collection's dense vector size is not ``dim``."""
        info = self.client("get_collection", self.name)
        vecs = info.config.params.vectors
        size = vecs[DENSE].size if isinstance(vecs, Mapping) and DENSE in vecs else None
        if size is None:
            raise IndexFormatError(str(self.loc), f"collection {self.name!r} has no {DENSE!r} vector")
        if int(size) != int(dim):
            raise IndexFormatError(str(self.loc), f"collection {self.name!r} holds {size}-dimensional vectors but the "
                                                  f"embedder makes {dim}-dimensional ones")

    def create_collections(self, dim: int) -> None:
        """Create the chunk and record collections (``[store]`` shards, replicas, write
        consistency) with payload indexes; a server uses them, embedded mode ignores them."""
        from qdrant_client import models as m

        st = self.store
        common = dict(shard_number=st.shard_number, replication_factor=st.replication_factor,
                      write_consistency_factor=st.write_consistency_factor)
        if not self.client("collection_exists", self.name):
            self.client("create_collection", self.name,
                        vectors_config={DENSE: m.VectorParams(size=int(dim), distance=m.Distance.COSINE)},
                        sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)}, **common)
            if self.loc.kind == "server":
                for f in KEYWORD_INDEXES:
                    self.client("create_payload_index", self.name, f, field_schema=m.PayloadSchemaType.KEYWORD)
                for f in ("g_add", "g_del", "page"):
                    self.client("create_payload_index", self.name, f, field_schema=m.PayloadSchemaType.INTEGER)
                self.client("create_payload_index", self.name, "public", field_schema=m.PayloadSchemaType.BOOL)
        if not self.client("collection_exists", self.records):
            self.client("create_collection", self.records, vectors_config={}, **common)
            if self.loc.kind == "server":
                for f in RECORD_KEYWORD_INDEXES:
                    self.client("create_payload_index", self.records, f, field_schema=m.PayloadSchemaType.KEYWORD)
                for f in ("g_add", "g_del"):
                    self.client("create_payload_index", self.records, f, field_schema=m.PayloadSchemaType.INTEGER)
        self.check_dim(dim)

    # ---- the writer lock ----------------------------------------------------------------------
    def _lock_holder(self) -> dict[str, Any] | None:
        with contextlib.suppress(RagError):
            pts = self.client("retrieve", self.lock_name, ids=[LOCK_ID], with_payload=True)
            return dict(pts[0].payload or {}) if pts else {}
        return None

    @staticmethod
    def _holder_gone(h: Mapping[str, Any]) -> bool:
        if not h:
            return True  # created but never written: its creator died at once (or is just starting)
        if h.get("host") == socket.gethostname():  # this host: the process itself tells
            pid = int(h.get("pid", 0))
            if pid == os.getpid():
                return False
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False
        return float(h.get("expires", 0)) < time.time()  # another host: its heartbeat stopped

    def refresh_lock(self) -> None:
        from qdrant_client import models as m

        payload = {"host": socket.gethostname(), "pid": os.getpid(), "since": now_iso(),
                   "expires": time.time() + float(self.store.lock_ttl_s)}
        self.client("upsert", self.lock_name, points=[m.PointStruct(id=LOCK_ID, vector={}, payload=payload)], wait=True)

    @contextlib.contextmanager
    def lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Hold the collection's writer lock (module docstring). Raises IndexLockedError naming
        the holder when it is still held after ``wait_s`` seconds."""
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                self.client("create_collection", self.lock_name, vectors_config={})
                break
            except RagError:
                if not self.client("collection_exists", self.lock_name):
                    raise
                holder = self._lock_holder()
                if holder == {}:  # created, owner not written yet (or its creator died at once)
                    time.sleep(EMPTY_LOCK_GRACE_S)
                    holder = self._lock_holder()
                if holder is not None and self._holder_gone(holder):
                    log.warning("%s: taking over the writer lock of %s (expired or dead)", self.loc,
                                f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "a writer that never started")
                    with contextlib.suppress(RagError):
                        self.client("delete_collection", self.lock_name)
                    continue
                if time.monotonic() >= deadline:
                    who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another writer"
                    raise IndexLockedError(f"{self.loc}: another ingest ({who}) is writing this collection; "
                                           f"waited {wait_s:g} s (use --wait SECONDS to wait longer)") from None
                time.sleep(0.5)
        stop = threading.Event()

        def heartbeat() -> None:  # keeps the lock while the holder embeds for a long time
            while not stop.wait(float(self.store.lock_ttl_s) / 3):
                try:
                    self.refresh_lock()
                except RagError as e:
                    log.warning("%s: could not refresh the writer lock: %s", self.loc, e)

        try:
            self.refresh_lock()
            beat = threading.Thread(target=heartbeat, name="rag-qdrant-lock", daemon=True)
            beat.start()
            yield
        finally:
            stop.set()
            with contextlib.suppress(RagError):
                self.client("delete_collection", self.lock_name)

    # ---- seam ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self):
        """The committed state now, for the block (see the seam). Each lease reads the metadata
        point once, so a lease is one round trip plus its queries."""
        from .reader import QdrantReader

        meta = self.read_meta(required=True)
        if int(meta.get("generation", 0)) < 1:
            raise IndexNotFoundError(f"{self.loc}: collection {self.name!r} has no committed data yet "
                                     f"(run `rag ingest PATH --index {self.loc}`)")
        reader = QdrantReader(self, meta)
        yield reader

    @contextlib.contextmanager
    def writer(self, wait_s: float = 0.0, *, embedder: Mapping[str, Any] | None = None,
               settings: Mapping[str, Any] | None = None, **options: Any):
        """Hold the lock and build generation G+1 (see the module docstring). ``embedder``:
        ``{"name", "model_id", "dim", ...}`` (required for a new collection); ``settings``: the
        index settings (``bm25`` section used for term weights). ``avgdl``: a fixed average
        chunk length for a new collection (``rag migrate`` passes the source index's)."""
        from .writer import QdrantWriter

        with self.lock(wait_s):
            meta = self.read_meta(required=False)
            if meta is None and (embedder is None or "dim" not in embedder):
                raise ValueError("a new collection needs embedder={'name', 'model_id', 'dim', ...}")
            dim = int((embedder or meta["embedder"])["dim"])  # type: ignore[index]
            self.create_collections(dim)
            if meta is not None:
                self.cleanup(meta)
                meta = self.read_meta(required=True)
            w = QdrantWriter(self, meta, embedder=embedder, settings=settings, **options)
            try:
                yield w
            finally:
                if not w.committed:
                    w.abort()

    def close(self) -> None:
        """Nothing is cached per state; clients stay open for the process (see close_clients)."""

    # ---- leftovers of interrupted writes ----------------------------------------------------
    def cleanup(self, meta: Mapping[str, Any]) -> dict[str, int]:
        """Remove what an interrupted write left (points and records with ``g_add > G``), undo
        its removal marks (``g_del > G``) and delete what committed generations removed
        (``g_del <= G``). Idempotent. Call while holding the lock. Returns counts."""
        from qdrant_client import models as m

        g = int(meta["generation"])
        done = {"uncommitted_removed": 0, "marks_cleared": 0, "garbage_deleted": 0}
        if not meta.get("dirty"):
            return done
        for coll in (self.name, self.records):
            newer = m.Filter(must=[m.FieldCondition(key="g_add", range=m.Range(gt=g))])
            marked = m.Filter(must=[m.FieldCondition(key="g_del", range=m.Range(gt=g))])
            gone = m.Filter(must=[m.FieldCondition(key="g_del", range=m.Range(lte=g))])
            done["uncommitted_removed"] += self.count(coll, newer)
            done["marks_cleared"] += self.count(coll, marked)
            done["garbage_deleted"] += self.count(coll, gone)
            self.client("delete", coll, points_selector=m.FilterSelector(filter=newer), wait=True)
            self.client("delete_payload", coll, keys=["g_del"], points=marked, wait=True)
            self.client("delete", coll, points_selector=m.FilterSelector(filter=gone), wait=True)
        if any(done.values()):
            log.info("%s: cleaned up after an interrupted write: %s", self.loc, done)
        self.write_meta({**meta, "dirty": False, "writing": None})
        return done

    def count(self, coll: str, flt: Any = None) -> int:
        return int(self.client("count", coll, count_filter=flt, exact=True).count)

    # ---- info / verify -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``rag info`` for a collection: generation, counts, embedder, BM25 avgdl (frozen and
        current), collection status, shards and replicas."""
        with self.lease() as r:
            return r.info()

    def verify(self, repair: bool = False, wait_s: float = 0.0) -> dict[str, Any]:
        """Full check (see :func:`.verify.verify`); ``repair`` first removes leftovers of an
        interrupted write and re-weights BM25 when avgdl drifted (holding the lock)."""
        from .verify import verify

        return verify(self, repair=repair, wait_s=wait_s)
