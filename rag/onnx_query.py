"""Fast single-query embedding: the embedder's transformer run by ONNX Runtime.

A query is one short text; PyTorch eager spends most of its time on per-operator overhead
there. ONNX Runtime with its graph fusions (attention, GELU, LayerNorm) embeds a SciFact query
with all-MiniLM-L6-v2 in 7.5 ms p50 on this 2-core machine (2 intra-op threads, no spinning;
8.1 ms with the other core busy) against 20-26 ms for PyTorch on one thread
(``benchmarks/query_embedding.py``, ``benchmarks/results/query_embedding.md``: 6.8 vs 27.7 ms p50). The vectors equal PyTorch's (cosine >= 0.99999, checked on
every export), so queries embedded here search document vectors embedded by PyTorch.

The ONNX graph is *exported locally* from the sentence-transformers model the user already has
(``torch.onnx.export``, about 2 s, once per model) and cached under :func:`cache_dir`; nothing is
downloaded. Only plain models are handled: modules Transformer -> Pooling (mean of token
embeddings) [-> Normalize]; anything else keeps the PyTorch path. Documents are still embedded
by PyTorch in batches.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger("rag")

EXPORT_VERSION = 1
"""Bumped when the exported graph or its inputs change, so old cache files are not reused."""
MIN_EXPORT_COSINE = 0.99999
"""An export is kept only if every probe text's ONNX vector has at least this cosine with
PyTorch's."""
_PROBES = (
    "What is the capital of France?",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    " ".join(["Retrieval-augmented generation grounds answers in retrieved passages."] * 40),  # > 256 word pieces
)


def cache_dir() -> Path:
    """Folder for derived model files: ``$RAG_CACHE_DIR``, else ``$XDG_CACHE_HOME/rag``, else
    ``~/.cache/rag``."""
    if os.environ.get("RAG_CACHE_DIR"):
        return Path(os.environ["RAG_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rag"


def onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def plain_mean_pooling_model(folder: str | Path) -> tuple[int, bool] | None:
    """``(max_seq_length, normalize)`` when the sentence-transformers folder is Transformer ->
    mean Pooling [-> Normalize] with a ``tokenizer.json``; None otherwise (or not a folder)."""
    p = Path(folder)
    try:
        modules = json.loads((p / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if types[:2] != ["Transformer", "Pooling"] or types[2:] not in ([], ["Normalize"]):
            return None
        pool = json.loads((p / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        modes = {k for k, v in pool.items() if k.startswith("pooling_mode") and v is True}
        if modes != {"pooling_mode_mean_tokens"} or not (p / "tokenizer.json").is_file():
            return None
        st = json.loads((p / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if st.get("do_lower_case"):
            return None  # sentence-transformers lower-cases before the tokenizer; not mirrored here
        return int(st.get("max_seq_length", 512)), types[2:] == ["Normalize"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def weights_key(folder: str | Path, model_id: str) -> str:
    """Cache key of a model folder: its id plus size, mtime and the first MiB of each weight
    file (cheap, and changes when the weights are replaced)."""
    h = hashlib.sha256(f"{model_id}|v{EXPORT_VERSION}".encode())
    for f in sorted(Path(folder).rglob("*.safetensors")) + sorted(Path(folder).rglob("*.bin")):
        st = f.stat()
        h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()[:20]


class OnnxQueryEncoder:
    """Embeds one text at a time: ``encode(text) -> (dim,) float32`` (L2-normalised when the
    model normalises). ``path``: the exported ``.onnx``; ``tokenizer_json``: the model's
    ``tokenizer.json``. Runs on ``min(2, usable cores)`` intra-op threads without spin-waiting
    (a spinning second thread on a busy 2-core box doubled p95). Raises ImportError without
    onnxruntime and ``onnxruntime`` errors for an unreadable graph."""

    def __init__(self, path: Path, tokenizer_json: Path, max_seq_length: int, normalize: bool):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.normalize = normalize
        self.path = Path(path)

    def encode(self, text: str) -> np.ndarray:
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.asarray([enc.type_ids], dtype=np.int64)}
        hidden = self.session.run(None, feeds)[0][0]  # (tokens, dim) float32
        v = hidden.mean(axis=0)
        if self.normalize:
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        return np.ascontiguousarray(v, dtype=np.float32)


_EXPORT_LOCK = threading.Lock()


def export(st_model, folder: str | Path, target: Path, max_seq_length: int, normalize: bool) -> OnnxQueryEncoder | None:
    """Export the transformer of a loaded ``SentenceTransformer`` to ``target`` (atomic rename),
    check it against PyTorch on probe texts, and return an encoder; None (and no file) when
    the export fails or disagrees."""
    import torch

    with _EXPORT_LOCK:
        auto = st_model[0].auto_model.eval()

        class _Wrapped(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
        try:
            enc = st_model.tokenizer(["export probe text"], return_tensors="pt")
            if "token_type_ids" not in enc:
                return None
            import warnings

            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")
                axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                        "token_type_ids": {0: "batch", 1: "tokens"}, "last_hidden_state": {0: "batch", 1: "tokens"}}
                torch.onnx.export(_Wrapped(auto), (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]), tmp,
                                  input_names=["input_ids", "attention_mask", "token_type_ids"],
                                  output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
            encoder = OnnxQueryEncoder(Path(tmp), Path(folder) / "tokenizer.json", max_seq_length, normalize)
            ref = st_model.encode(list(_PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
            got = np.stack([encoder.encode(t) for t in _PROBES])
            got = got / np.linalg.norm(got, axis=1, keepdims=True)
            cos = (ref * got).sum(axis=1)
            if float(cos.min()) < MIN_EXPORT_COSINE:
                log.warning("ONNX query encoder disagrees with PyTorch (cosine %.6f); using PyTorch", float(cos.min()))
                return None
            os.replace(tmp, target)
            tmp = None
            encoder.path = target
            log.info("exported the query encoder to %s", target)
            return encoder
        except Exception as e:  # noqa: BLE001 - any export problem: stay on the PyTorch path
            log.warning("could not export the query encoder to ONNX (%s: %s); using PyTorch",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
