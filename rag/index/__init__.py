"""Index backends behind the storage seam (:mod:`rag.index.backend`)."""

from __future__ import annotations

from typing import Any


def is_remote_location(location: Any) -> bool:
    """True when ``location`` names a Qdrant index (``qdrant+local:``, ``qdrant://``, ``qdrants://``)
    rather than a local index folder."""
    from .qdrant import is_qdrant_location

    return is_qdrant_location(str(location)) if isinstance(location, str) else False


def open_index(location: Any, config: Any = None):
    """The :class:`rag.index.backend.Index` for ``location``: a Qdrant collection for
    ``qdrant+local:PATH`` / ``qdrant://HOST[:PORT]/COLLECTION`` / ``qdrants://...``
    (:mod:`rag.index.qdrant`), else the local index folder (:class:`rag.index.local.LocalIndex`).
    Cheap: nothing is opened or contacted until used. Raises ConfigError on a malformed Qdrant
    location."""
    if is_remote_location(location):
        from .qdrant import open_qdrant

        return open_qdrant(location, config)
    from .local import LocalIndex

    ann = getattr(getattr(config, "retrieval", None), "ann_threshold", None)
    return LocalIndex(location, **({"ann_threshold": ann} if ann is not None else {}))
