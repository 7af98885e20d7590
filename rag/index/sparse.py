"""BM25 sparse index: a term-by-chunk matrix of precomputed weights (text analysis:
:mod:`rag.index.analysis`).

Scoring (Robertson & Zaragoza 2009, "The Probabilistic Relevance Framework: BM25 and Beyond"),
Lucene / Anserini variant (Lucene >= 8 ``BM25Similarity``; the same formula ``bm25s`` calls
"lucene")::

    score(q, d) = sum_{t in q} qtf(t) * idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * dl(d) / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))          # always > 0

``qtf`` is how often the term occurs in the query (Anserini's bag-of-words query and rank-bm25
both count a repeated query term again). Lucene stores document lengths lossily in one byte;
we keep exact lengths (as bm25s does), so scores can differ from Lucene's in the last digits.
``idf="robertson"`` selects the classic ``ln((N - df + 0.5) / (df + 0.5))`` (negative for terms
in more than half the chunks) together with the ``(k1 + 1)`` numerator factor, which is exactly
rank-bm25's ``BM25Okapi`` for terms with positive idf; it exists so tests can check our numbers
against that independent implementation. Never use it for retrieval.

Storage: a CSR matrix with one row per term and one column per chunk holding float32 weights
``idf * tf / (tf + k1 * norm(d))``; a query sums the rows of its terms, so it costs what its
posting lists cost, not the corpus size. Chunk ids are arbitrary int64 kept in ``ids``.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import BM25Config
from ..errors import IndexFormatError
from .analysis import BM25Tokenizer, count_terms, query_term_counts

log = logging.getLogger("rag")

FORMAT = "rag-bm25"
FORMAT_VERSION = 1

def query_terms(tok: BM25Tokenizer, term_ids: Any, query: str) -> tuple[np.ndarray, np.ndarray]:
    """Term ids ((q,) int64) and query term frequencies ((q,) float32) of ``query``'s terms the
    index holds (``term_ids``: term -> id, any Mapping); variant spellings as
    :func:`query_term_counts`."""
    counts = query_term_counts(tok, query, term_ids)
    pairs = [(term_ids[t], c) for t, c in counts.items() if t in term_ids]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    tids, qtf = zip(*pairs)
    return np.asarray(tids, np.int64), np.asarray(qtf, np.float32)


def accumulate_scores(pos: np.ndarray, wts: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum posting weights per row: ``pos`` ((P,) int row positions < ``n_rows``) and ``wts``
    ((P,) float) give the ascending rows with a posting and their summed scores (float64). A
    dense bincount when P * 64 >= n_rows, else np.unique over the postings: O(P log P), which
    measured slower from ~n_rows / 80 postings on (1M rows: 0.8 vs 0.5 ms at 8k postings, 1.5
    vs 2.5 ms at 32k, 5 vs 22 ms at 128k). Shared by :class:`BM25Index` and the segment search.

    Measured details that matter at 1M rows: bincount is given intp positions and float64
    weights (cast here: 3.0 ms instead of 5.4 ms when it converts them itself), and the rows
    are found with ``nonzero`` on the boolean ``acc != 0``, not on the float array (numpy's
    float path branches per element: 7 ms vs 0.6 ms)."""
    if pos.size * 64 >= n_rows:
        acc = np.bincount(pos.astype(np.intp, copy=False), weights=wts.astype(np.float64, copy=False),
                          minlength=n_rows)
        cand = np.flatnonzero(acc != 0)
        return cand, acc[cand]
    cand, inv = np.unique(pos, return_inverse=True)
    return cand, np.bincount(inv, weights=wts)


def top_by_score(cids: np.ndarray, scores: np.ndarray, top_k: int,
                 allowed_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``top_k`` best of candidate chunks ``cids`` ((m,) int64) with ``scores`` ((m,)):
    ``(scores float32 (<= top_k,), ids int64)``, sorted by score descending then id. Only ids
    in ``allowed_ids`` (ascending int64, or None for all) are kept. O(m) selection before an
    O(k log k) sort; for many candidates the k-th best of a strided sample (never above the
    k-th best of all) first cuts them to about ``k * stride``, so ``np.partition`` runs on a few
    thousand instead of m (1M-chunk queries have ~300k candidates: 2 ms -> 0.4 ms). Shared by
    :class:`BM25Index` and the segment search."""
    if allowed_ids is not None:
        allowed = np.asarray(allowed_ids, dtype=np.int64).reshape(-1)
        if allowed.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        j = np.minimum(np.searchsorted(allowed, cids), allowed.size - 1)
        keep = allowed[j] == cids
        cids, scores = cids[keep], scores[keep]
    scores = scores.astype(np.float32)
    if scores.size > 64 * top_k:
        stride = int(np.sqrt(scores.size / top_k))  # sample m / stride, keep ~k * stride
        sample = scores[::stride]
        floor = np.partition(sample, sample.size - top_k)[sample.size - top_k]
        keep = scores >= floor
        cids, scores = cids[keep], scores[keep]
    if scores.size > top_k:
        kth = np.partition(scores, scores.size - top_k)[scores.size - top_k]
        keep = scores >= kth  # keeps every tie at the cut; sorted below by id
        cids, scores = cids[keep], scores[keep]
    order = np.lexsort((cids, -scores))[:top_k]
    return scores[order], cids[order]


class BM25Index:
    """BM25 over chunks, Lucene variant (see the module docstring for the formula and sources).

    Defaults ``k1=0.9, b=0.4`` are Anserini's (from :class:`rag.config.BM25Config`). Holds a
    term-by-chunk CSR matrix (``indptr`` int64 (V+1,), ``indices`` int32 chunk positions,
    ``data`` float32 weights), the vocabulary, and ``ids`` (n,) int64 chunk ids. Queries cost
    O(sum of the query terms' posting lengths), not O(n); every query scores all its postings
    (dynamic pruning was slower in numpy; figures in ``docs/index-tuning.md``). Searching from
    many threads is fine; nothing mutates after build.
    """

    def __init__(self, *, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray,
                 ids: np.ndarray, doc_lengths: np.ndarray, vocab: list[str],
                 tokenizer: BM25Tokenizer, k1: float, b: float, idf: str, avgdl: float):
        self.indptr = indptr
        self.indices = indices
        self.data = data
        self._ids = ids
        self.doc_lengths = doc_lengths
        self.vocab = vocab
        self.term_ids = {t: i for i, t in enumerate(vocab)}
        self.tokenizer = tokenizer
        self.k1 = float(k1)
        self.b = float(b)
        self.idf = idf
        self.avgdl = float(avgdl)

    def __repr__(self) -> str:
        return f"BM25Index(n_docs={self.n_docs}, terms={len(self.vocab)}, postings={len(self.data)})"

    @property
    def n_docs(self) -> int:
        """Number of chunks indexed (including empty ones)."""
        return int(self._ids.shape[0])

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 chunk ids, in build order (column order of the matrix)."""
        return self._ids

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, texts: Sequence[str], ids: np.ndarray, config: BM25Config | None = None, *,
              idf: str = "lucene", batch_size: int = 20_000) -> "BM25Index":
        """Index ``texts`` (n strings, may be empty) under ``ids`` ((n,) int64, unique, any order).

        ``idf``: "lucene" (default, always > 0) or "robertson" (classic, can be <= 0; only for
        comparing with rank-bm25). Texts are processed in batches of ``batch_size`` so memory
        stays near the size of the final matrix (1M chunks of 60 words: ~0.5 GB). Raises
        ValueError when lengths differ, ids repeat, or ``idf`` is unknown.
        """
        config = config or BM25Config()
        if idf not in ("lucene", "robertson"):
            raise ValueError(f"idf must be 'lucene' or 'robertson', not {idf!r}")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(texts)
        if ids.shape[0] != n:
            raise ValueError(f"{n} texts but {ids.shape[0]} ids")
        if n and np.unique(ids).shape[0] != n:
            raise ValueError("chunk ids must be unique")
        tok = BM25Tokenizer(config.language, config.stopwords, config.stemming)
        vocab_list, terms, tf, per_doc, doc_lengths = count_terms(texts, tok, batch_size)
        n_terms = len(vocab_list)
        total_len = float(doc_lengths.sum())
        avgdl = total_len / n if n else 0.0
        k1, b = float(config.k1), float(config.b)
        df = np.bincount(terms, minlength=n_terms).astype(np.float64)
        if idf == "lucene":
            idf_t = np.log1p((n - df + 0.5) / (df + 0.5))
            factor = 1.0
        else:
            idf_t = np.log((n - df + 0.5) / (df + 0.5))
            factor = k1 + 1.0
        # per-chunk length normalisation k1 * (1 - b + b * dl / avgdl); avgdl == 0 only when
        # every text is empty, and then there are no postings to weight.
        norm = (k1 * (1.0 - b + b * doc_lengths / (avgdl if avgdl > 0 else 1.0))).astype(np.float32)
        doc_of_posting = np.repeat(np.arange(n, dtype=np.int32), per_doc)
        # weights, computed in place in float32 on the chunk-major postings
        w = tf  # reuse buffer
        denom = tf + norm[doc_of_posting]
        np.divide(tf, denom, out=w)
        del denom
        w *= (idf_t * factor).astype(np.float32)[terms]

        del doc_of_posting
        # chunk-major (CSR chunk x term) -> term-major (CSR term x chunk): scipy's linear-time
        # CSR -> CSC conversion keeps chunk positions ascending within each term's postings.
        from scipy.sparse import csr_matrix

        idx_dtype = np.int32 if terms.size < 2**31 - 1 else np.int64
        doc_indptr = np.zeros(n + 1, dtype=idx_dtype)
        np.cumsum(per_doc, out=doc_indptr[1:])
        csc = csr_matrix((w, terms.astype(idx_dtype, copy=False), doc_indptr),
                         shape=(n, n_terms)).tocsc()
        del terms, w, doc_indptr
        indptr = csc.indptr.astype(np.int64)
        indices = csc.indices.astype(np.int32, copy=False)
        data = csc.data.astype(np.float32, copy=False)
        del csc
        index = cls(indptr=indptr, indices=indices, data=data, ids=ids.copy(),
                    doc_lengths=doc_lengths.astype(np.int32), vocab=vocab_list, tokenizer=tok,
                    k1=k1, b=b, idf=idf, avgdl=avgdl)
        log.debug("built BM25 over %d chunks: %d terms, %d postings", n, n_terms, len(data))
        return index

    # ------------------------------------------------------------------ search
    def _query_terms(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and query term frequencies of ``query`` (see :func:`query_terms`)."""
        return query_terms(self.tokenizer, self.term_ids, query)

    def _postings(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated (chunk positions int32, weights float32) of the query's terms."""
        tids, qtf = self._query_terms(query)
        if tids.size == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        starts, ends = self.indptr[tids], self.indptr[tids + 1]
        pos = np.concatenate([self.indices[s:e] for s, e in zip(starts, ends)])
        wts = np.concatenate([self.data[s:e] * c for s, e, c in zip(starts, ends, qtf)])
        return pos, wts

    def get_scores(self, query: str) -> np.ndarray:
        """(n,) float32 BM25 scores of every chunk, aligned with :attr:`ids` (O(n); for tests)."""
        pos, wts = self._postings(query)
        return np.bincount(pos, weights=wts, minlength=self.n_docs).astype(np.float32)

    def search(self, query: str, top_k: int, allowed_ids: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``top_k`` chunks for ``query``.

        Returns ``(scores float32 (m,), ids int64 (m,))``, ``m <= top_k``, only chunks with
        score > 0, sorted by score descending then id ascending. ``allowed_ids`` (sorted unique
        int64) restricts the candidates before the cut, so ``top_k`` come back whenever that many
        allowed chunks match. Cost: O(P log P) for P postings of the query terms (O(P + n) when P
        is large compared with n). Raises ValueError when ``top_k < 1``.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, not {top_k}")
        pos, wts = self._postings(query)
        if pos.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        cand, scores = accumulate_scores(pos, wts, self.n_docs)
        positive = scores > 0  # only the 'robertson' test variant can produce scores <= 0
        if not positive.all():
            cand, scores = cand[positive], scores[positive]
        return top_by_score(self._ids[cand], scores, top_k, allowed_ids)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: Path) -> list[str]:
        """Write ``bm25.npz`` (plain numeric arrays), ``vocab.json`` and ``params.json``.

        Returns the file names written, relative to ``folder`` (created if missing).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "bm25.npz", indptr=self.indptr, indices=self.indices, data=self.data,
                 ids=self._ids, doc_lengths=self.doc_lengths)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        params = {"format": FORMAT, "format_version": FORMAT_VERSION, "variant": "lucene" if self.idf == "lucene" else "robertson",
                  "k1": self.k1, "b": self.b, "idf": self.idf, "avgdl": self.avgdl,
                  "n_docs": self.n_docs, "n_terms": len(self.vocab), "n_postings": int(self.data.shape[0]),
                  "tokenizer": self.tokenizer.to_dict()}
        (folder / "params.json").write_text(json.dumps(params, indent=1), encoding="utf-8")
        return ["bm25.npz", "vocab.json", "params.json"]

    @classmethod
    def load(cls, folder: Path) -> "BM25Index":
        """Read what :meth:`save` wrote. Never unpickles.

        Raises :class:`rag.errors.IndexFormatError` (``path``: the bad file) when a file is
        missing, unreadable, of another format/version, or inconsistent with the others.
        """
        folder = Path(folder)
        p_params, p_vocab, p_npz = folder / "params.json", folder / "vocab.json", folder / "bm25.npz"
        params = _read_json(p_params)
        if not isinstance(params, dict) or params.get("format") != FORMAT:
            raise IndexFormatError(str(p_params), f"not a {FORMAT} parameter file")
        if params.get("format_version") != FORMAT_VERSION:
            raise IndexFormatError(str(p_params), f"format_version {params.get('format_version')!r}, "
                                                  f"expected {FORMAT_VERSION}")
        try:
            tokenizer = BM25Tokenizer.from_dict(params["tokenizer"])
            k1, b, idf, avgdl = float(params["k1"]), float(params["b"]), str(params["idf"]), float(params["avgdl"])
            n_docs, n_terms = int(params["n_docs"]), int(params["n_terms"])
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(str(p_params), f"bad parameters ({type(e).__name__}: {e})") from None
        vocab = _read_json(p_vocab)
        if not isinstance(vocab, list) or len(vocab) != n_terms or not all(isinstance(t, str) for t in vocab):
            raise IndexFormatError(str(p_vocab), f"expected a list of {n_terms} terms")
        if not p_npz.is_file():
            raise IndexFormatError(str(p_npz), "missing")
        want = {"indptr": np.int64, "indices": np.int32, "data": np.float32, "ids": np.int64,
                "doc_lengths": np.int32}
        arrays: dict[str, np.ndarray] = {}
        try:
            with np.load(p_npz, allow_pickle=False) as z:
                for name, dtype in want.items():
                    if name not in z.files:
                        raise IndexFormatError(str(p_npz), f"array {name!r} missing")
                    a = z[name]
                    if a.dtype != dtype or a.ndim != 1:
                        raise IndexFormatError(str(p_npz), f"array {name!r} has dtype {a.dtype} "
                                                           f"and {a.ndim} dims, expected 1-d {np.dtype(dtype)}")
                    arrays[name] = a
        except IndexFormatError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise IndexFormatError(str(p_npz), f"unreadable ({type(e).__name__}: {e})".replace("\n", " ")) from None
        indptr, indices, data = arrays["indptr"], arrays["indices"], arrays["data"]
        problems = []
        if indptr.shape[0] != n_terms + 1 or (indptr.size and indptr[0] != 0):
            problems.append(f"indptr has {indptr.shape[0]} entries for {n_terms} terms")
        elif indptr[-1] != indices.shape[0] or indices.shape[0] != data.shape[0]:
            problems.append("posting arrays disagree in length")
        elif indptr.size > 1 and np.any(np.diff(indptr) < 0):
            problems.append("indptr is not monotone")
        if arrays["ids"].shape[0] != n_docs or arrays["doc_lengths"].shape[0] != n_docs:
            problems.append(f"ids/doc_lengths do not hold {n_docs} chunks")
        if indices.size and (indices.min() < 0 or indices.max() >= n_docs):
            problems.append("chunk position out of range")
        if problems:
            raise IndexFormatError(str(p_npz), problems[0])
        return cls(indptr=indptr, indices=indices, data=data, ids=arrays["ids"],
                   doc_lengths=arrays["doc_lengths"], vocab=vocab, tokenizer=tokenizer,
                   k1=k1, b=b, idf=idf, avgdl=avgdl)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(str(path), "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(str(path), f"unreadable ({type(e).__name__})") from None
