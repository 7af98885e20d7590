"""The ``qdrant`` backend: a Qdrant collection behind the storage seam (:mod:`rag.index.backend`).

Selected by the index location (``--index``):

- ``qdrant+local:PATH`` - qdrant-client's embedded local mode in folder PATH (no server; a
  Python re-implementation meant for tests and small sets, one process at a time);
- ``qdrant://HOST[:PORT]/COLLECTION`` - a Qdrant server or cluster over HTTP (port 6333 by
  default); ``qdrants://`` the same over HTTPS. The API key, if any, is read from the
  environment variable named by ``[store] api_key_env`` (default ``QDRANT_API_KEY``).

Layout: collection ``C`` holds one point per chunk (point id = our int64 chunk id; named dense
vector ``dense``, cosine; named sparse vector ``bm25`` with ``Modifier.IDF``; payload = chunk
text, exact offsets, page, heading path, document key, metadata, access groups and the source
fields filters need). ``C-records`` holds the metadata point (committed generation, counts,
embedder, settings, BM25 avgdl), document records (keys, content hashes, aliases) and file
records, so a second machine can ingest into the same collection. ``C-lock`` exists only while a
writer holds the collection. Implementation: :mod:`.index` (handle, lock, leases),
:mod:`.reader`, :mod:`.writer`, :mod:`.filters`, :mod:`.terms`. ``qdrant_client`` is imported
only when a Qdrant location is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .index import QdrantIndex

SCHEMES = ("qdrant+local:", "qdrant://", "qdrants://")
DEFAULT_PORT = 6333
DEFAULT_LOCAL_COLLECTION = "rag"


@dataclass(frozen=True)
class QdrantLocation:
    """A parsed Qdrant index location. ``kind``: "local" (``path``) or "server" (``url``)."""

    kind: str
    collection: str
    path: str | None = None
    url: str | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text


def is_qdrant_location(location: Any) -> bool:
    """True when ``location`` is a string naming a Qdrant index (one of :data:`SCHEMES`)."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def _check_collection(name: str, text: str) -> str:
    import re

    if not name or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}", name) or name.endswith(("-records", "-lock")):
        raise ConfigError(f"--index {text!r}: bad collection name {name!r} (letters, digits, '_', '-', '.'; "
                          "not ending in -records or -lock)")
    return name


def parse_location(text: str) -> QdrantLocation:
    """Parse ``qdrant+local:PATH``, ``qdrant://host[:port]/collection`` or ``qdrants://...``.
    Raises ConfigError (one line naming the location) when it is malformed."""
    from urllib.parse import urlsplit

    if text.startswith("qdrant+local:"):
        path = text[len("qdrant+local:"):]
        if not path:
            raise ConfigError(f"--index {text!r}: qdrant+local needs a folder (qdrant+local:indexes/q)")
        return QdrantLocation("local", DEFAULT_LOCAL_COLLECTION, path=path, text=text)
    if text.startswith(("qdrant://", "qdrants://")):
        u = urlsplit(text)
        if not u.hostname:
            raise ConfigError(f"--index {text!r}: no host (qdrant://HOST[:PORT]/COLLECTION)")
        try:
            port = u.port or DEFAULT_PORT
        except ValueError:
            raise ConfigError(f"--index {text!r}: bad port") from None
        coll = u.path.strip("/")
        if not coll:
            raise ConfigError(f"--index {text!r}: no collection (qdrant://HOST[:PORT]/COLLECTION)")
        scheme = "https" if u.scheme == "qdrants" else "http"
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        return QdrantLocation("server", _check_collection(coll, text), url=f"{scheme}://{host}:{port}", text=text)
    raise ConfigError(f"--index {text!r}: not a Qdrant location ({', '.join(s + '...' for s in SCHEMES)})")


def open_qdrant(location: str, config: Any = None) -> "QdrantIndex":
    """A :class:`~.index.QdrantIndex` handle for ``location`` (nothing is contacted yet).
    ``config``: the :class:`rag.config.RagConfig` (its ``store`` and ``bm25`` sections)."""
    from .index import QdrantIndex

    return QdrantIndex(parse_location(location), config)


__all__ = ["QdrantLocation", "SCHEMES", "is_qdrant_location", "open_qdrant", "parse_location"]
