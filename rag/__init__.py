"""rag: local retrieval-augmented generation — hybrid dense + BM25 retrieval and grounded,
cited answers on one CPU.

Public names: ``RAG``, ``RagConfig``, ``Document``, ``Chunk``, ``Hit``, ``Answer``, ``Citation``,
``SearchResult``, ``Filter``, ``IngestReport``, ``Conversation``, ``RagError`` (and the error
subclasses). Heavy libraries (torch,
transformers, sentence-transformers, faiss) load only when a model or index is first used.
"""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING

from .errors import (ConfigError, GenerationError, IndexFormatError, IndexLockedError, IndexNotFoundError,
                     LoaderError, ModelError, RagError)

_logging.getLogger("rag").addHandler(_logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "RAG", "RagConfig", "Document", "Chunk", "Hit", "Answer", "Citation", "Conversation", "IngestReport",
    "SearchResult", "Filter",
    "RagError", "ConfigError", "LoaderError", "IndexNotFoundError", "IndexFormatError", "IndexLockedError",
    "ModelError", "GenerationError",
]

_LAZY = {
    "RAG": ("pipeline", "RAG"),
    "IngestReport": ("ingest", "IngestReport"),
    "SearchResult": ("types", "SearchResult"),
    "Filter": ("index.backend", "Filter"),
    "RagConfig": ("config", "RagConfig"),
    "Document": ("types", "Document"),
    "Chunk": ("types", "Chunk"),
    "Hit": ("types", "Hit"),
    "Answer": ("types", "Answer"),
    "Citation": ("types", "Citation"),
    "Conversation": ("conversation", "Conversation"),
}

if TYPE_CHECKING:  # pragma: no cover
    from .config import RagConfig
    from .conversation import Conversation
    from .index.backend import Filter
    from .ingest import IngestReport
    from .pipeline import RAG
    from .types import Answer, Chunk, Citation, Document, Hit, SearchResult


def __getattr__(name: str):  # PEP 562: import submodules on first use
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{mod}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rag' has no attribute {name!r}")
