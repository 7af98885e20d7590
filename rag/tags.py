"""Tags: ``key=value`` metadata put on every document of one ingest run, to keep data apart.

``rag ingest PATH --tag kind=synthetic`` stores ``metadata["kind"] = "synthetic"`` on each
document loaded in that run and lists the run's tags in ``metadata["tags"]`` (``["kind=synthetic"]``),
so that filters reach them like any metadata (``--filter kind=synthetic``), ``rag info`` can
count documents per tag, and ``[retrieval] exclude_tags = ["kind=synthetic"]`` keeps them out of
``search``/``ask`` by default: :func:`with_exclusions` turns that setting into the request
filter's ``exclude`` part, except for keys the request's own filter names, so an explicit
``--filter kind=synthetic`` still finds them.

Values that are all digits are stored as integers, as ``--filter`` parses them, so both
compare equal. Tags are applied to the documents a run loads; files that are unchanged since
an earlier run are not reloaded and keep the tags they had.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

from .errors import ConfigError

TAGS_FIELD = "tags"
"""Metadata field listing a document's tags as ``"key=value"`` strings."""

RESERVED = frozenset({"source", "title", "page", "doc_id", "acl", "type", "mtime", "record_id", TAGS_FIELD,
                      "content_hash", "text_hash", "size_bytes"})
"""Keys a tag may not use: columns, loader metadata and bookkeeping fields."""


def _value(v: str) -> str | int:
    return int(v) if v.isdigit() else v


def parse_tag(raw: str, what: str = "--tag") -> tuple[str, str | int]:
    """``"kind=synthetic"`` -> ``("kind", "synthetic")``. Raises ConfigError naming ``what``
    for an item without ``=``, an empty key or value, or a reserved key."""
    if not isinstance(raw, str) or "=" not in raw:
        raise ConfigError(f"{what}: {raw!r} is not KEY=VALUE")
    k, v = (x.strip() for x in raw.split("=", 1))
    if not k or not v:
        raise ConfigError(f"{what}: {raw!r} has an empty key or value")
    if k in RESERVED:
        raise ConfigError(f"{what}: {k!r} is reserved ({', '.join(sorted(RESERVED))})")
    return k, _value(v)


def parse_tags(items: Iterable[str], what: str = "--tag") -> dict[str, str | int]:
    """``["kind=synthetic", "batch=7"]`` -> ``{"kind": "synthetic", "batch": 7}`` (see
    :func:`parse_tag`); a key given twice with different values is a ConfigError too."""
    out: dict[str, str | int] = {}
    for raw in items:
        k, v = parse_tag(raw, what)
        if k in out and out[k] != v:
            raise ConfigError(f"{what}: {k!r} is given twice ({out[k]!r}, {v!r})")
        out[k] = v
    return out


def tag_strings(tags: Mapping[str, Any]) -> list[str]:
    """``{"kind": "synthetic"}`` -> ``["kind=synthetic"]`` (sorted)."""
    return sorted(f"{k}={v}" for k, v in tags.items())


def apply_tags(docs: Sequence, tags: Mapping[str, Any]) -> list:
    """Copies of the :class:`rag.types.Document` s with ``tags`` in their metadata (the keys
    themselves, and merged into the ``tags`` list)."""
    if not tags:
        return list(docs)
    out = []
    for d in docs:
        meta = dict(d.metadata)
        meta.update(tags)
        meta[TAGS_FIELD] = sorted(set(meta.get(TAGS_FIELD) or ()) | set(tag_strings(tags)))
        out.append(replace(d, metadata=meta))
    return out


def with_exclusions(flt, exclude_tags: Sequence[str]):
    """The request :class:`rag.index.backend.Filter` ``flt`` plus ``exclude_tags``
    (``["kind=synthetic"]``) as its ``exclude`` part, leaving out every key ``flt`` itself
    tests (an explicit filter on a tag reaches the tagged documents)."""
    if not exclude_tags:
        return flt
    wanted = {k for k, _ in flt.fields}
    excl: dict[str, list[Any]] = {}
    for raw in exclude_tags:
        k, v = parse_tag(raw, "retrieval.exclude_tags")
        if k not in wanted:
            excl.setdefault(k, []).append(v)
    if not excl:
        return flt
    merged = dict((k, list(v)) for k, v in flt.exclude)
    for k, vs in excl.items():
        merged[k] = sorted(set(merged.get(k, [])) | set(vs), key=str)
    return replace(flt, exclude=tuple((k, tuple(v)) for k, v in sorted(merged.items())))


def tag_counts(documents: Iterable[Any]) -> dict[str, int]:
    """Documents per tag (``{"kind=synthetic": 12}``), from records with a ``metadata``
    mapping (:class:`rag.index.backend.DocumentRecord`); aliases of kept documents are counted
    too (each is a document of its own run)."""
    c: Counter[str] = Counter()
    for d in documents:
        meta = d.metadata if hasattr(d, "metadata") else d.get("metadata") or {}
        for t in meta.get(TAGS_FIELD) or ():
            c[str(t)] += 1
    return dict(sorted(c.items()))
