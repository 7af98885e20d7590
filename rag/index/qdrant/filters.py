"""Compile a :class:`rag.index.backend.Filter` into a Qdrant payload filter.

Every chunk point and every document record carries the fields a filter needs (see
:func:`view_payload`): ``source`` (the file key), ``dirs`` (every folder above it), ``name``
(its last path part), ``sfx`` (every dotted ending of the name: ``a.tar.gz`` -> ``.tar.gz``,
``.gz``), ``title``, ``doc`` (document key), ``meta`` (metadata; on a chunk the chunk's merged
over its document's, so "the chunk's metadata, then the document's" is one lookup), ``acl``
and ``public``. A chunk also has ``page``.

Source globs (fnmatch rules, where ``*`` also crosses ``/``, as the local index matches) compile
exactly when they are one of:

- a path without glob characters: that file, or everything below it as a folder;
- ``FOLDER/*SUFFIX`` where SUFFIX is empty or a dotted ending (``/docs/*``, ``/docs/*.md``);
- ``*SUFFIX`` (``*.md``) or ``*/NAME`` (``*/notes.md``, the form a bare ``notes.md`` becomes).

Anything else (``?``, ``[...]``, several ``*``, a partial name before ``*``) raises
:class:`ConfigError` with one line naming the pattern: a filter is never widened or dropped
(which would be a silent full scan). Metadata values compile to exact matches; a glob value
other than ``*`` (any non-null value) is refused the same way.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ...errors import ConfigError
from ..backend import GLOB_CHARS, Filter

SUPPORTED_GLOBS = "a path or folder, FOLDER/* or FOLDER/*.ext, *.ext, */NAME"


def suffixes(name: str) -> list[str]:
    """Every dotted ending of a file name: ``"a.tar.gz"`` -> ``[".tar.gz", ".gz"]``; ``".md"`` ->
    ``[".md"]``; no dot -> ``[]``."""
    return [name[i:] for i, ch in enumerate(name) if ch == "."]


def source_fields(source: str) -> dict[str, Any]:
    """Payload fields of one file key (absolute path or URL) for source globs."""
    s = source.rstrip("/") or source
    parts = s.split("/")
    dirs = ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]
    name = parts[-1]
    return {"source": source, "dirs": dirs, "name": name, "sfx": suffixes(name)}


def view_payload(*, source: str, doc_key: str, title: str | None, metadata: Mapping[str, Any],
                 acl: Sequence[str]) -> dict[str, Any]:
    """The filterable fields of a chunk point or document record (module docstring)."""
    groups = sorted({str(g) for g in acl})
    return {**source_fields(source), "doc": doc_key, "title": title, "meta": _json_safe(dict(metadata)),
            "acl": groups, "public": not groups}


def _json_safe(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_json_safe(x) for x in v]
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    return str(v)


def _m():
    from qdrant_client import models

    return models


def _glob_error(pattern: str, why: str) -> ConfigError:
    return ConfigError(f"source filter {pattern!r}: cannot be compiled to a Qdrant filter ({why}; "
                       f"supported: {SUPPORTED_GLOBS})")


def compile_source(pattern: str):
    """One source pattern (absolute, :func:`rag.index.backend.source_glob` form) -> a Qdrant
    condition. Raises ConfigError when the pattern is not one the module docstring lists."""
    m = _m()
    if not any(ch in pattern for ch in GLOB_CHARS):
        p = pattern.rstrip("/") or pattern
        return m.Filter(should=[m.FieldCondition(key="source", match=m.MatchValue(value=p)),
                                m.FieldCondition(key="dirs", match=m.MatchValue(value=p))])
    if "?" in pattern or "[" in pattern:
        raise _glob_error(pattern, "'?' and '[...]' have no payload equivalent")
    if pattern.count("*") > 1:
        raise _glob_error(pattern, "more than one '*'")
    prefix, _, suffix = pattern.partition("*")
    must = []
    if prefix:
        if not prefix.endswith("/"):
            raise _glob_error(pattern, "a '*' must follow a '/' or start the pattern")
        folder = prefix.rstrip("/") or "/"
        must.append(m.FieldCondition(key="dirs", match=m.MatchValue(value=folder)))
    if suffix:
        if suffix.startswith("/") and "/" not in suffix[1:] and suffix[1:]:
            if prefix:
                raise _glob_error(pattern, "FOLDER/*/NAME matches names at any depth")
            must.append(m.FieldCondition(key="name", match=m.MatchValue(value=suffix[1:])))
        elif suffix.startswith(".") and "/" not in suffix:
            must.append(m.FieldCondition(key="sfx", match=m.MatchValue(value=suffix)))
        else:
            raise _glob_error(pattern, f"the part after '*' ({suffix!r}) is neither a dotted ending nor /NAME")
    if not must:  # "*": every source
        return None
    return m.Filter(must=must)


def _key_path(key: str) -> str:
    if key == "title":
        return "title"
    if key == "doc_id":
        return "doc"
    if key == "page":
        return "page"
    if '"' in key or not key:
        raise ConfigError(f"filter key {key!r}: cannot be used with the Qdrant backend")
    return f'meta."{key}"'


def compile_value(key: str, value: Any):
    """``key == value`` (:func:`rag.index.backend.value_matches` semantics) -> a condition."""
    m = _m()
    path = _key_path(key)
    if value is None:
        return m.IsEmptyCondition(is_empty=m.PayloadField(key=path))
    if isinstance(value, bool):
        return m.Filter(should=[m.FieldCondition(key=path, match=m.MatchValue(value=value)),
                                m.FieldCondition(key=path, range=m.Range(gte=int(value), lte=int(value)))])
    if isinstance(value, (int, float)):
        conds = [m.FieldCondition(key=path, range=m.Range(gte=value, lte=value))]
        if value in (0, 1):
            conds.append(m.FieldCondition(key=path, match=m.MatchValue(value=bool(value))))
        return m.Filter(should=conds)
    s = str(value)
    if any(ch in s for ch in GLOB_CHARS):
        if s.strip("*") == "":
            return m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key=path))])
        raise ConfigError(f"filter {key}={s!r}: glob values cannot be compiled to a Qdrant filter (use an exact value or '*')")
    return m.FieldCondition(key=path, match=m.MatchValue(value=s))


def compile_view(flt: Filter) -> list:
    """Conditions on the document-level fields (sources, metadata, title, doc_id, access
    groups), all of which must hold; ``page`` is left to :func:`compile_chunk_only`."""
    m = _m()
    must: list = []
    if flt.sources:
        conds = [compile_source(p) for p in flt.sources]
        if all(c is not None for c in conds):
            must.append(m.Filter(should=conds))
    for key, values in flt.fields:
        if key == "page":
            continue
        must.append(m.Filter(should=[compile_value(key, v) for v in values]))
    if flt.principals is not None:
        public = m.FieldCondition(key="public", match=m.MatchValue(value=True))
        if flt.principals:
            must.append(m.Filter(should=[public, m.FieldCondition(key="acl", match=m.MatchAny(any=list(flt.principals)))]))
        else:
            must.append(public)
    return must


def compile_chunk_only(flt: Filter) -> list:
    """Conditions on chunk-level fields (``page``), and the filter's exclusions
    (``Filter.exclude``, when the seam has it: a chunk fails when its metadata, the chunk's over
    its document's, equals any listed value of a key)."""
    m = _m()
    out = []
    values = flt.values_for("page")
    if values is not None:
        out.append(m.Filter(should=[compile_value("page", v) for v in values]))
    for key, vals in getattr(flt, "exclude", ()) or ():
        out.append(m.Filter(must_not=[compile_value(key, v) for v in vals]))
    return out


def check_compilable(flt: Filter) -> None:
    """Raise ConfigError now (before any round trip) when ``flt`` cannot be compiled."""
    compile_view(flt)
    compile_chunk_only(flt)

