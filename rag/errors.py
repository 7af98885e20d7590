"""Exception hierarchy. Every error ``rag`` raises on purpose derives from :class:`RagError`.

The CLI prints ``str(error)`` as one line and exits 1; it never shows a traceback for these.
"""

from __future__ import annotations


class RagError(Exception):
    """Root of all errors raised by ``rag`` on purpose."""


class ConfigError(RagError):
    """A configuration value or key is invalid (unknown key, wrong type, out of range)."""


class LoaderError(RagError):
    """A file could not be loaded. ``source`` is the path, ``reason`` a short phrase."""

    def __init__(self, source: str, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class IndexNotFoundError(RagError):
    """No index exists at the given folder."""


class IndexFormatError(RagError):
    """An index folder is damaged, of another format version, or inconsistent.

    ``path`` names the offending file; the message is one line: ``<path>: <reason>``.
    """

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class IndexLockedError(RagError):
    """Another writer holds the index lock longer than the caller was willing to wait."""


class ModelError(RagError):
    """A model (embedder, generator, reranker) could not be found or loaded."""


class GenerationError(RagError):
    """The generator failed at run time (e.g. an HTTP endpoint answered with an error)."""
