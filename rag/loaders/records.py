"""Record files: ``.csv``, ``.jsonl`` and ``.json``, one :class:`Document` per record.

Field names come from :class:`LoaderOptions` (``id_field``, ``title_field``, ``text_field``,
``metadata_fields``) or are detected: id ``_id`` then ``id`` (else the 1-based record number),
title ``title``, text ``text`` / ``content`` / ``body``. A BEIR corpus (a file named
``corpus.jsonl`` with ``_id``, ``title``, ``text``; Thakur et al. 2021) is typed ``"beir"`` and its
raw ids are kept in ``metadata["beir_id"]`` so that qrels can be matched.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import LoaderError
from ..types import Document, Section
from ._common import LoaderOptions, decode_bytes, json_safe, logger, sanitise_text

AUTO_ID_FIELDS = ("_id", "id")
AUTO_TITLE_FIELDS = ("title",)
AUTO_TEXT_FIELDS = ("text", "content", "body")


def _pick(record: Mapping[str, Any], configured: str | None, auto: tuple[str, ...]) -> tuple[str | None, Any]:
    if configured:
        return (configured, record[configured]) if configured in record else (None, None)
    for name in auto:
        if name in record and record[name] not in (None, ""):
            return name, record[name]
    return None, None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n\n".join(_as_text(v) for v in value if v is not None)
    return str(value)


def records_to_documents(path: Path, records: Iterable[tuple[int, Any]], options: LoaderOptions,
                         meta: dict[str, Any], kind: str) -> list[Document]:
    """Build one Document per record id (``(record_number, mapping)`` pairs, 1-based numbers).

    Records without text are skipped (logged). Records sharing an id are parts of one
    document (e.g. the sections of one manual): all are kept, joined in file order with a blank
    line, each part a :class:`Section`; title and metadata come from the first part and
    ``metadata["parts"]`` counts them. Raises :class:`rag.errors.LoaderError` when no record
    has text.
    """
    source = str(path)
    is_beir = path.name == "corpus.jsonl"
    docs: list[Document] = []
    seen: set[str] = set()
    parts: dict[str, list[str]] = {}
    n_records = n_no_text = 0
    for number, record in records:
        n_records += 1
        if not isinstance(record, Mapping):
            logger.warning("%s: record %d is not an object; skipped", source, number)
            continue
        _, text_value = _pick(record, options.text_field, AUTO_TEXT_FIELDS)
        text = sanitise_text(_as_text(text_value))
        if not text.strip():
            n_no_text += 1
            continue
        _, id_value = _pick(record, options.id_field, AUTO_ID_FIELDS)
        record_id = sanitise_text(str(id_value)) if id_value not in (None, "") else str(number)
        if record_id in seen:
            parts[record_id].append(text)
            continue
        seen.add(record_id)
        parts[record_id] = [text]
        _, title_value = _pick(record, options.title_field, AUTO_TITLE_FIELDS)
        title = " ".join(sanitise_text(_as_text(title_value)).split()) or None
        md = {**meta, "type": "beir" if is_beir else kind, "record_id": record_id}
        if is_beir:
            md["beir_id"] = record_id
        for name in options.metadata_fields:
            if name in record:
                md[name] = json_safe(record[name])
        docs.append(Document(id=f"{source}#{record_id}", text=text, source=source, title=title, metadata=md))
    if n_no_text:
        logger.info("%s: %d of %d records have no text; skipped", source, n_no_text, n_records)
    docs = [_joined(d, parts[d.metadata["record_id"]]) for d in docs]
    if not docs:
        if n_records == 0:
            raise LoaderError(source, "no records")
        fields = (options.text_field,) if options.text_field else AUTO_TEXT_FIELDS
        raise LoaderError(source, f"no record has text (looked for field {', '.join(fields)})")
    return docs


def _joined(doc: Document, texts: list[str]) -> Document:
    """One document from the parts of a record id (unchanged when there is one part)."""
    if len(texts) == 1:
        return doc
    sections, pos = [], 0
    for t in texts:
        sections.append(Section(start=pos, end=pos + len(t)))
        pos += len(t) + 2
    return Document(id=doc.id, text="\n\n".join(texts), source=doc.source, title=doc.title,
                    metadata={**doc.metadata, "parts": len(texts)}, sections=tuple(sections))


def load_jsonl(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load JSON Lines (https://jsonlines.org): one JSON object per line; bad lines are logged and skipped."""
    text = decode_bytes(data, str(path))

    def records():
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                logger.warning("%s: line %d is not valid JSON (%s); skipped", path, number, e.msg)

    return records_to_documents(path, records(), options, meta, "jsonl")


def load_json(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load a JSON file: a list of objects, an object holding such a list (e.g. ``{"data": [...]}``),
    or a single object with a text field. Raises LoaderError "invalid JSON: ..." / "no records"."""
    source = str(path)
    try:
        value = json.loads(decode_bytes(data, source))
    except json.JSONDecodeError as e:
        raise LoaderError(source, f"invalid JSON: {e.msg} at line {e.lineno}") from None
    records: list[Any]
    if isinstance(value, list):
        records = value
    elif isinstance(value, dict):
        if _pick(value, options.text_field, AUTO_TEXT_FIELDS)[0] is not None:
            records = [value]
        else:
            lists = [v for v in value.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
            if not lists:
                raise LoaderError(source, "no records (expected a list of objects)")
            records = lists[0]
    else:
        raise LoaderError(source, "no records (expected a list of objects)")
    return records_to_documents(path, enumerate(records, start=1), options, meta, "json")


def load_csv(path: Path, data: bytes, options: LoaderOptions, meta: dict[str, Any]) -> list[Document]:
    """Load a CSV file with a header row (RFC 4180); the delimiter is the one of ``, \\t ; |`` most
    frequent in the header line (comma on ties).

    Raises LoaderError "malformed CSV: ..." when the csv module rejects the file.
    """
    source = str(path)
    text = decode_bytes(data, source)
    header = text.split("\n", 1)[0]
    delimiter = max(",\t;|", key=lambda d: (header.count(d), d == ","))
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
        rows = [(i, {k: v for k, v in row.items() if k is not None}) for i, row in enumerate(reader, start=1)]
    except csv.Error as e:
        raise LoaderError(source, f"malformed CSV: {e}") from None
    return records_to_documents(path, rows, options, meta, "csv")


__all__ = ["load_csv", "load_json", "load_jsonl", "records_to_documents", "sanitise_text"]
