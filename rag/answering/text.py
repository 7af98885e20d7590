"""Word-level helpers shared by the answering modules: tokens, stems, normalisation.

The stop list is :data:`rag.prompting.STOP_WORDS` (one list for answering and prompting).
"""

from __future__ import annotations

import re

from ..prompting import STOP_WORDS, content_words

WORD_RE = re.compile(r"\w+(?:[-–'’.,/:]\w+)*%?", re.U)
"""A word of a sentence, keeping inner hyphens, apostrophes, decimal points and ``%``."""

_STEMMER = None


def stem(w: str) -> str:
    """English Snowball stem (PyStemmer; a plain suffix strip when it is not installed)."""
    global _STEMMER
    if _STEMMER is None:
        try:
            import Stemmer  # PyStemmer, a small C extension

            _STEMMER = Stemmer.Stemmer("english")
        except ImportError:  # pragma: no cover
            _STEMMER = False
    if _STEMMER is False:  # pragma: no cover
        return re.sub(r"(ing|ed|es|s)$", "", w) if len(w) > 4 else w
    return _STEMMER.stemWord(w)


def stems(text: str) -> set[str]:
    """Stems of the content words of ``text`` (lower-cased, stop words removed)."""
    return {stem(w) for w in content_words(text)}


def norm(text: str) -> str:
    """Lower-cased word tokens joined by one space (for verbatim comparisons)."""
    return " ".join(re.findall(r"\w+", text.lower()))


def starts_with(text: str, prefix: str) -> bool:
    """True when ``text``'s first words are ``prefix``'s, compared by :func:`norm` (case,
    punctuation and spacing ignored); an empty ``prefix`` never matches."""
    p = norm(prefix)
    return bool(p) and (norm(text) + " ").startswith(p + " ")


__all__ = ["STOP_WORDS", "WORD_RE", "content_words", "norm", "starts_with", "stem", "stems"]
