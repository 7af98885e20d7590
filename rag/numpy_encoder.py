"""A BERT sentence embedder's forward pass in numpy, one query at a time: the cold-start query path.

A one-shot ``rag search`` waited about 130 ms for its query vector on ONNX Runtime: importing it,
then creating the session (reading and pre-packing 43 MB of weights), before a 5 ms run. Here the
model's own ``model.safetensors`` is memory-mapped (no copy, no session: pages are read as the
matrix products touch them) and the Hugging Face ``BertModel`` arithmetic runs in float32 numpy
(embeddings -> LayerNorm -> N x [self-attention, residual, LayerNorm, GELU feed-forward,
residual, LayerNorm]), then mean pooling and L2 normalisation as sentence-transformers does.
One short query costs a few milliseconds more to compute than on ONNX Runtime and about 100 ms
less to start (``benchmarks/query_embedding.py``).

Only what this code restates is accepted (:func:`load` returns None otherwise, and the caller
keeps ONNX Runtime or PyTorch): ``model_type`` "bert" with absolute position embeddings, exact
("gelu") activation, float32 safetensors weights, a sentence-transformers folder of Transformer
-> mean Pooling [-> Normalize]. The vectors are compared with the reference encoder's once per
model and machine (:func:`checked`) before they are used.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .onnx_embedding import MIN_EXPORT_COSINE, PROBE_TEXTS

log = logging.getLogger("rag")

__all__ = ["MIN_COSINE", "NUMPY_ENCODER_VERSION", "NumpyBertEncoder", "checked", "erf", "load", "read_safetensors"]

NUMPY_ENCODER_VERSION = 1
"""Bumped when the arithmetic changes, so an earlier agreement check is not trusted."""
MIN_COSINE = MIN_EXPORT_COSINE
"""The encoder is used only if every probe text's vector has at least this cosine with the
reference encoder's (the bound the ONNX export is held to)."""
MAX_ABS_DIFF = 1e-4
"""... and no component differs by more than this (float32 summation order alone gives ~1e-7)."""
_PROBES = PROBE_TEXTS + ("adler-32 checksum", "Über naïve café façades: 東京 and مرحبا, 3.14 × 10^-2!")
"""The ONNX export's probes (a long one past 256 word pieces included), a short query and
accented, CJK and Arabic text."""

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only view of one memory map (no copy).

    The format (https://github.com/huggingface/safetensors, "Format"): an unsigned 64-bit
    little-endian header size N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets":
    [begin, end]}}`` (offsets relative to the byte after the header), then the raw bytes.
    Raises ValueError (naming ``path``) for a malformed header or an unsupported dtype, OSError
    when the file cannot be read."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError(f"{path}: not a safetensors file (header size {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"{path}: unreadable safetensors header") from None
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    start = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = np.dtype(_DTYPES[spec["dtype"]])
            shape = tuple(int(s) for s in spec["shape"])
            begin, end = (start + int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: tensor {name!r}: unsupported or malformed entry") from None
        count = math.prod(shape)
        if end - begin != count * dtype.itemsize or end > buf.shape[0]:
            raise ValueError(f"{path}: tensor {name!r}: data offsets do not fit its shape")
        out[name] = np.frombuffer(buf, dtype=dtype, count=count, offset=begin).reshape(shape)
    return out


# Numerical Recipes in C, 2nd ed., section 6.2, function erfcc: erfc(z) with fractional error
# below 1.2e-7 everywhere (Chebyshev fit); erf = 1 - erfc. numpy has no erf, and scipy's import
# alone costs more than this whole module saves.
_ERFC_COEFFS = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277)


def erf(x: np.ndarray) -> np.ndarray:
    """Elementwise error function of a float32 array, absolute error below 1.2e-7 (float32
    result, computed in float64)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.full_like(t, _ERFC_COEFFS[-1])
    for c in _ERFC_COEFFS[-2::-1]:
        poly = poly * t + c
    erfc = t * np.exp(-z * z + poly)
    return np.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(np.float32)


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm of each column of ``x`` (hidden, n)."""
    mean = x.mean(axis=0, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=0, keepdims=True)
    return centred / np.sqrt(var + np.float32(eps)) * weight[:, None] + bias[:, None]


def _linear(layer: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """``W @ x + b`` for a PyTorch Linear's ``(W (out, in), b (out,))`` and ``x`` (in, n)."""
    return layer[0] @ x + layer[1][:, None]


class NumpyBertEncoder:
    """One text -> its sentence vector, with a BERT model's memory-mapped float32 weights.

    ``weights``: tensor name (without a ``bert.`` prefix) -> array, as :func:`read_safetensors`
    gives; ``config``: the model's ``config.json``; ``tokenizer_json``: its ``tokenizer.json``;
    texts are truncated at ``max_seq_length`` word pieces (special tokens included), as
    sentence-transformers does. Read-only after construction, so safe to share between threads.
    Raises KeyError when a weight is missing, ValueError when one has the wrong shape.
    """

    def __init__(self, weights: dict[str, np.ndarray], config: dict, tokenizer_json: Path, max_seq_length: int,
                 normalize: bool):
        from tokenizers import Tokenizer

        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.max_seq_length = min(int(max_seq_length), int(config.get("max_position_embeddings", 512)))
        self.normalize = bool(normalize)
        self.dim = self.hidden
        w = weights
        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.types = w["embeddings.token_type_embeddings.weight"]
        self.emb_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.blocks = []
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            get = lambda name: w[p + name]  # noqa: E731 - one layer's tensors
            block = {
                "q": (get("attention.self.query.weight"), get("attention.self.query.bias")),
                "k": (get("attention.self.key.weight"), get("attention.self.key.bias")),
                "v": (get("attention.self.value.weight"), get("attention.self.value.bias")),
                "o": (get("attention.output.dense.weight"), get("attention.output.dense.bias")),
                "ln1": (get("attention.output.LayerNorm.weight"), get("attention.output.LayerNorm.bias")),
                "up": (get("intermediate.dense.weight"), get("intermediate.dense.bias")),
                "down": (get("output.dense.weight"), get("output.dense.bias")),
                "ln2": (get("output.LayerNorm.weight"), get("output.LayerNorm.bias")),
            }
            for name, (weight, bias) in block.items():
                if weight.dtype != np.float32 or bias.dtype != np.float32:
                    raise ValueError(f"layer {i} {name}: weights are {weight.dtype}, not float32")
                if bias.shape != (weight.shape[0] if weight.ndim == 2 else self.hidden,):
                    raise ValueError(f"layer {i} {name}: bias shape {bias.shape} does not fit {weight.shape}")
            self.blocks.append(block)
        if self.words.shape[1] != self.hidden or self.hidden % self.heads:
            raise ValueError(f"word embeddings {self.words.shape} do not fit hidden size {self.hidden}")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(input ids (n,) int64, token type ids (n,) int64)`` of ``text``, special tokens
        included, truncated at :attr:`max_seq_length`."""
        enc = self.tokenizer.encode(text)
        return np.asarray(enc.ids, dtype=np.int64), np.asarray(enc.type_ids, dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        """(dim,) float32 vector of ``text`` (L2-normalised when the model normalises)."""
        return self.encode_tokens(*self.tokenize(text))

    def encode_tokens(self, ids: np.ndarray, type_ids: np.ndarray) -> np.ndarray:
        """(dim,) float32 vector of one tokenised text (:meth:`tokenize`)."""
        n = ids.shape[0]
        x = self.words[ids] + self.positions[:n] + self.types[type_ids]
        x = _layer_norm(x.T, *self.emb_norm, self.eps)  # (hidden, n): W @ x is BLAS's fast case
        h, d = self.heads, self.hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(d))
        for b in self.blocks:
            q = _linear(b["q"], x).reshape(h, d, n).transpose(0, 2, 1)  # (heads, n, d)
            k = _linear(b["k"], x).reshape(h, d, n)  # (heads, d, n)
            v = _linear(b["v"], x).reshape(h, d, n)
            s = (q @ k) * scale  # (heads, n, n); one text: no padding to mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            a = (v @ s.transpose(0, 2, 1)).reshape(h * d, n)  # (heads, d, n) -> (hidden, n)
            x = _layer_norm(_linear(b["o"], a) + x, *b["ln1"], self.eps)
            u = _linear(b["up"], x)
            u = u * (np.float32(0.5) * (np.float32(1.0) + erf(u * np.float32(1.0 / math.sqrt(2.0)))))  # exact GELU
            x = _layer_norm(_linear(b["down"], u) + x, *b["ln2"], self.eps)
        x = x.T
        vec = x.mean(axis=0, dtype=np.float32)
        if self.normalize:
            vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        return np.ascontiguousarray(vec, dtype=np.float32)


def load(folder: str | Path, max_seq_length: int, normalize: bool) -> NumpyBertEncoder | None:
    """The encoder of a sentence-transformers folder whose transformer this module restates
    (see the module docstring), or None (with the reason logged at debug level)."""
    p = Path(folder)
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
        if (config.get("model_type") != "bert" or config.get("hidden_act") != "gelu"
                or config.get("position_embedding_type", "absolute") != "absolute"):
            log.debug("numpy encoder: %s is not a plain BERT with exact GELU", p)
            return None
        weights = read_safetensors(p / "model.safetensors")
        weights = {k.removeprefix("bert."): v for k, v in weights.items()}
        return NumpyBertEncoder(weights, config, p / "tokenizer.json", max_seq_length, normalize)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as e:  # ImportError: no tokenizers
        log.debug("numpy encoder: %s: %s", p, e)
        return None


def checked(encoder: NumpyBertEncoder, key: str, reference: Callable[[Sequence[str]], np.ndarray],
            cache: Path) -> bool:
    """True when ``encoder`` agrees with ``reference`` (texts -> (n, dim) float32 vectors of the
    encoder already trusted: ONNX Runtime fp32 or PyTorch) on the probe texts: cosine >=
    :data:`MIN_COSINE` and components within :data:`MAX_ABS_DIFF`. The verdict is remembered
    in ``cache/numpy-encoder/<key>.json`` (``key`` names the model's weights), so the reference
    runs once per model and machine."""
    marker = Path(cache) / "numpy-encoder" / f"{key}-v{NUMPY_ENCODER_VERSION}.json"
    try:
        return bool(json.loads(marker.read_text(encoding="utf-8"))["agrees"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    ours = np.stack([encoder.encode(t) for t in _PROBES])
    ref = np.asarray(reference(list(_PROBES)), dtype=np.float32)
    cos = np.sum(ours * ref, axis=1) / np.maximum(np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    diff = float(np.abs(ours - ref).max())
    agrees = bool(cos.min() >= MIN_COSINE and diff <= MAX_ABS_DIFF)
    if not agrees:
        log.warning("numpy query encoder disagrees with the reference (cosine %.6f, max difference %.2e); "
                    "queries stay on the reference encoder", float(cos.min()), diff)
    from .model_cache import remember

    # a read-only cache only costs the check next time
    remember(marker, json.dumps({"agrees": agrees, "min_cosine": float(cos.min()), "max_abs_diff": diff}))
    return agrees
