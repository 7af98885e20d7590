"""Exact and near-duplicate detection for documents and chunks.

Exact duplicates share the SHA-256 of their normalised text (:func:`normalise_text`: Unicode
NFKC, case-folded, whitespace collapsed). Near duplicates are found with MinHash (Broder 1997,
"On the resemblance and containment of documents") over word shingles, indexed with
locality-sensitive hashing (datasketch ``MinHashLSH``; Leskovec, Rajaraman & Ullman, *Mining of
Massive Datasets*, ch. 3), and confirmed with the MinHash estimate of the Jaccard similarity.
"""

from __future__ import annotations

from .hashing import sha256_hex
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

def normalise_text(text: str) -> str:
    """Unicode NFKC, ``str.casefold()``, whitespace runs collapsed to one space, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def text_hash(text: str) -> str:
    """SHA-256 hex digest (64 characters) of the UTF-8 bytes of :func:`normalise_text` ``(text)``."""
    return sha256_hex(normalise_text(text))


def lsh_params(threshold: float, num_perm: int, min_recall: float = 0.995) -> tuple[int, int]:
    """LSH banding ``(bands, rows)`` for MinHash signatures of ``num_perm`` values.

    A pair with Jaccard J becomes a candidate with probability 1 - (1 - J**rows)**bands
    (Leskovec et al., MMDS ch. 3.4). Candidates are confirmed with the signature estimate, so
    extra candidates only cost a comparison while a missed one is a missed duplicate: take the
    most selective banding (largest ``rows``) that still proposes a pair at J = ``threshold`` with
    probability >= ``min_recall``. (0.8, 128) -> (21, 6): recall 0.998 at J = 0.8, 0.28 at 0.5,
    0.015 at 0.3. datasketch's default weighting (0.5, 0.5) would give (9, 13): only 0.40 at 0.8.
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= min_recall:
            best = (bands, rows)
    return best


@dataclass(frozen=True)
class Duplicate:
    """A dropped item: ``key`` duplicates the kept ``kept_key``.

    ``kind`` is ``"exact"`` (same normalised text; ``similarity`` 1.0) or ``"near"``
    (``similarity`` = MinHash estimate of the Jaccard similarity of the shingle sets).
    """

    key: str
    kept_key: str
    kind: str
    similarity: float


class Deduplicator:
    """Exact (hash of normalised text) + near-duplicate (MinHash LSH) detection, streaming.

    Near duplicates: the normalised text is cut into ``shingle_words``-word shingles; a MinHash
    signature with ``num_perm`` permutations (seed ``seed``, so runs are reproducible) estimates
    the Jaccard similarity of two shingle sets with standard error sqrt(J(1-J)/num_perm)
    (≈ 0.035 at J = 0.8 with 128 permutations). ``MinHashLSH`` proposes candidates; a candidate
    counts only if its estimated Jaccard is >= ``near_threshold``, and the most similar kept item
    (earliest on ties) is named. ``near=False`` keeps exact detection only. Texts with fewer than
    ``shingle_words`` words get exact detection only.

    Why 0.8 on 3-word shingles: one changed word breaks the (up to) 3 shingles that contain it,
    so changing a fraction f of the words (spread out) leaves J ≈ (1 - 3f) / (1 + 3f): f = 2 %
    gives J ≈ 0.89 (about -0.1), f = 3 % gives 0.83, f = 5 % gives 0.74. A threshold of 0.8 so
    catches copies with up to about 3 % of the words edited (re-wrapped, re-cased, re-spaced copies
    are exact duplicates after normalisation), while distinct texts written from the same
    template or on the same topic share few 3-word shingles and stay far below (SciFact
    abstracts: see the measurement in ``tests/test_dedup.py``). Catching ~5 % edits needs a
    threshold near 0.7.

    Signatures are made only once there is something to compare with: the first kept item's
    waits until a second item needs checking, so a run of one document of one chunk (adding
    a small file) never imports datasketch (with SciPy, 0.6-1.5 s on the 2-core machine).
    Results are the same as computing every signature at once (ties go by insertion order).

    Memory: one 32-bit hash per permutation per kept item (512 bytes at ``num_perm=128``) plus
    the LSH band tables. Not thread-safe.

    Raises :class:`ValueError` for a threshold outside (0, 1], ``shingle_words`` < 1, or a key
    registered twice.
    """

    def __init__(self, near_threshold: float = 0.8, shingle_words: int = 3, num_perm: int = 128,
                 near: bool = True, seed: int = 1):
        if not 0.0 < near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be in (0, 1], not {near_threshold}")
        if shingle_words < 1:
            raise ValueError(f"shingle_words must be >= 1, not {shingle_words}")
        self.near_threshold = float(near_threshold)
        self.shingle_words = int(shingle_words)
        self.num_perm = int(num_perm)
        self.near = bool(near)
        self.seed = int(seed)
        self._exact: dict[str, str] = {}  # text hash -> first kept key
        self._keys: dict[str, int] = {}  # key -> insertion number (for deterministic ties)
        self._counter = 0
        self._hash_of: dict[str, str] = {}
        self._signatures: dict[str, np.ndarray] = {}
        self._pending: dict[str, str] = {}  # key -> normalised text whose signature is not made yet
        self._lsh: Any = None
        self._template: Any = None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    # ------------------------------------------------------------------ public API

    def add(self, key: str, text: str) -> None:
        """Register an item that is kept regardless (e.g. already in the index), without checking."""
        norm = normalise_text(text)
        self._register(key, norm, self._digest(norm), None)

    def check_and_add(self, key: str, text: str) -> Duplicate | None:
        """Return None if ``text`` is new (it is then registered under ``key``), else the
        :class:`Duplicate` naming the kept item it duplicates (nothing is registered)."""
        if key in self._keys:
            raise ValueError(f"key {key!r} is already registered")
        norm = normalise_text(text)
        digest = self._digest(norm)
        kept = self._exact.get(digest)
        if kept is not None:
            return Duplicate(key=key, kept_key=kept, kind="exact", similarity=1.0)
        signature = None
        if self._near_eligible(norm) and (self._pending or self._lsh is not None):
            self._flush_pending()
            signature = self._signature(norm)
        if signature is not None and self._lsh is not None:
            best: tuple[float, int, str] | None = None
            for cand in self._lsh.query(self._minhash(signature)):
                sim = float(np.mean(self._signatures[cand] == signature))
                if sim >= self.near_threshold:
                    rank = (sim, -self._keys[cand], cand)
                    if best is None or rank > best:
                        best = rank
            if best is not None:
                return Duplicate(key=key, kept_key=best[2], kind="near", similarity=best[0])
        self._register(key, norm, digest, signature)
        return None

    def remove(self, key: str) -> None:
        """Forget a kept item (e.g. its document was deleted or re-ingested). Unknown keys are ignored."""
        if key not in self._keys:
            return
        del self._keys[key]
        digest = self._hash_of.pop(key)
        if self._exact.get(digest) == key:
            del self._exact[digest]
        self._pending.pop(key, None)
        if self._signatures.pop(key, None) is not None and self._lsh is not None:
            self._lsh.remove(key)

    def similarity(self, text_a: str, text_b: str) -> float:
        """MinHash estimate of the Jaccard similarity of two texts' shingle sets (exact 1.0 if equal)."""
        na, nb = normalise_text(text_a), normalise_text(text_b)
        if na == nb:
            return 1.0
        sa, sb = self._signature(na), self._signature(nb)
        if sa is None or sb is None:
            return 0.0
        return float(np.mean(sa == sb))

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _digest(norm: str) -> str:
        return sha256_hex(norm)

    def _near_eligible(self, norm: str) -> bool:
        """True when near-duplicate detection applies: ``near`` and at least ``shingle_words`` words."""
        return self.near and bool(norm) and norm.count(" ") + 1 >= self.shingle_words

    def _flush_pending(self) -> None:
        """Make the signatures that waited (:meth:`check_and_add`) and index them."""
        pending, self._pending = self._pending, {}
        for key, norm in pending.items():
            self._index_signature(key, self._signature(norm))

    def _signature(self, norm: str) -> np.ndarray | None:
        if not self._near_eligible(norm):
            return None
        words = norm.split(" ")
        k = self.shingle_words
        from datasketch import MinHash

        if self._template is None:
            self._template = MinHash(num_perm=self.num_perm, seed=self.seed)
        shingles = {" ".join(words[i:i + k]).encode("utf-8", errors="surrogatepass")
                    for i in range(len(words) - k + 1)}
        m = self._template.copy()
        m.update_batch(list(shingles))
        return np.asarray(m.hashvalues, dtype=np.uint32).copy()

    def _minhash(self, signature: np.ndarray):
        """The signature as a datasketch ``LeanMinHash`` (what MinHashLSH reads): unlike
        ``MinHash(hashvalues=...)`` it does not draw the permutations again (0.4 ms a call, a
        fifth of the dedup time of an ingest)."""
        from datasketch import LeanMinHash

        # datasketch >= 2 needs the hashing scheme of the signature's origin (our template's).
        scheme = getattr(self._template, "scheme", None)
        kwargs = {"scheme": scheme} if scheme is not None else {}
        return LeanMinHash(seed=self.seed, hashvalues=signature, **kwargs)

    def _register(self, key: str, norm: str, digest: str, signature: np.ndarray | None) -> None:
        if key in self._keys:
            raise ValueError(f"key {key!r} is already registered")
        self._keys[key] = self._counter
        self._counter += 1
        self._hash_of[key] = digest
        self._exact.setdefault(digest, key)
        if signature is not None:
            self._index_signature(key, signature)
        elif self._near_eligible(norm):
            self._pending[key] = norm

    def _index_signature(self, key: str, signature: np.ndarray | None) -> None:
        if signature is None:
            return
        if self._lsh is None:
            from datasketch import MinHashLSH

            self._lsh = MinHashLSH(num_perm=self.num_perm, params=lsh_params(self.near_threshold, self.num_perm))
        self._signatures[key] = signature
        self._lsh.insert(key, self._minhash(signature))
