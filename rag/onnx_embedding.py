"""The embedder's transformer run by ONNX Runtime: queries, short texts and document batches.

PyTorch eager spends most of a short text's time on per-operator overhead; ONNX Runtime with its
graph fusions (GELU, LayerNorm) embeds a SciFact query with all-MiniLM-L6-v2 in about
5.5 ms against 19 ms for PyTorch on this 2-core machine (``benchmarks/query_embedding.py``), and
document batches faster too (``benchmarks/ingest_throughput.py``). The fp32 graph's vectors equal
PyTorch's (cosine >= :data:`MIN_EXPORT_COSINE`, checked on every export), so vectors from either
search each other's indexes.

The fp32 graph is *exported locally* from the sentence-transformers model the user already has
(``torch.onnx.export``, about 2 s, once per model) and cached under :func:`cache_dir`; the int8
graph is derived from it by ONNX Runtime's dynamic quantisation
(``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations quantised per batch at
run time) and checked against the fp32 vectors (cosine >= :data:`MIN_INT8_COSINE`). Nothing is
downloaded. Only plain models are handled: modules Transformer -> Pooling (mean of token
embeddings) [-> Normalize]; anything else keeps the PyTorch path.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np

from .model_cache import cache_dir, file_key

log = logging.getLogger("rag")

__all__ = [
    "EXPORT_VERSION", "MIN_EXPORT_COSINE", "MIN_INT8_COSINE", "PROBE_TEXTS", "WORD_VECTORS_INPUT", "OnnxEncoder", "OnnxQueryEncoder",
    "cache_dir", "export", "make_split_graph", "onnxruntime_available", "plain_mean_pooling_model", "quantize_int8",
    "weights_file", "weights_key",
]

EXPORT_VERSION = 2
"""Bumped when the exported graph or its inputs change, so old cache files are not reused
(2: exported with eager attention; see :func:`export`)."""
MIN_EXPORT_COSINE = 0.99999
"""An fp32 export is kept only if every probe text's ONNX vector has at least this cosine with
PyTorch's."""
MIN_INT8_COSINE = 0.98
"""An int8 graph is kept only if every probe text's vector has at least this cosine with the fp32
graph's (dynamic int8 quantisation of MiniLM gives 0.99-0.998 on these probes)."""
WORD_VECTORS_INPUT = "word_vectors"
"""Input of a split graph (:func:`make_split_graph`): (batch, tokens, dim) float32 rows of the
word-embedding table for ``input_ids``, looked up by :class:`OnnxEncoder` from a memory-mapped
``.npy`` copy of the table."""
PROBE_TEXTS = (
    "What is the capital of France?",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    " ".join(["Retrieval-augmented generation grounds answers in retrieved passages."] * 40),  # > 256 word pieces
)
"""Texts every derived encoder is checked on against its source (a long one past 256 word pieces)."""


def onnxruntime_available() -> bool:
    """True when the ``onnxruntime`` package can be imported (checked without importing it)."""
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
    """Cache key of a model folder: its id plus :func:`rag.model_cache.file_key` of each weight
    file (size, mtime and content sample; changes when the weights are replaced)."""
    import hashlib

    h = hashlib.sha256(f"{model_id}|v{EXPORT_VERSION}".encode())
    for f in sorted(Path(folder).rglob("*.safetensors")) + sorted(Path(folder).rglob("*.bin")):
        h.update(f"{f.name}|{file_key(f)}".encode())
    return h.hexdigest()[:20]


def _usable_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _intra_op_threads() -> int:
    return min(2, _usable_cores())


DOCUMENT_BATCH = 8
"""Texts per batch when batches run in parallel (``batch_workers`` > 1). Chosen by measurement
on SciFact chunks (``benchmarks/results/document_embedding.md``): small batches keep each
thread's activations in its cache."""


def document_workers() -> int:
    """Batches a document encoder runs at once (``batch_workers`` of :class:`OnnxEncoder`): one
    per usable core, at most 8."""
    return min(8, _usable_cores())


class OnnxEncoder:
    """Runs an exported Transformer + mean pooling graph.

    ``path``: the ``.onnx`` file; ``tokenizer_json``: the model's ``tokenizer.json``; texts are
    truncated at ``max_seq_length`` word pieces (special tokens included) as sentence-transformers
    does. With ``batch_workers`` 1 (queries: one text's latency) one run uses ``min(2, usable
    cores)`` intra-op threads; with ``batch_workers`` n > 1 (documents: throughput) the session
    runs on one thread and :meth:`encode_batch` runs n batches at once on n threads, which embedded
    SciFact chunks 1.2-1.3x faster on 2 cores than 2 intra-op threads on one batch (the
    many small operators between the matrix products no longer wait for each other;
    ``benchmarks/ingest_throughput.py --backends``). No thread spin-waits (a spinning second
    thread on a busy 2-core box doubled p95). Safe to call from several threads (ONNX Runtime
    sessions are). Raises ImportError without onnxruntime and ``onnxruntime`` errors for an
    unreadable graph.
    """

    def __init__(self, path: Path, tokenizer_json: Path, max_seq_length: int, normalize: bool,
                 word_table: Path | None = None, optimized: bool = False, batch_workers: int = 1):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.batch_workers = max(1, int(batch_workers))
        self._pool = None  # a ThreadPoolExecutor of batch_workers threads, made on the first long run
        self._pool_lock = threading.Lock()
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1 if self.batch_workers > 1 else _intra_op_threads()
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                       else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.word_table = Path(word_table) if word_table is not None else None
        self._words = np.load(self.word_table, mmap_mode="r") if self.word_table is not None else None
        self._words_ram: np.ndarray | None = None  # an in-memory copy once batches are embedded
        if self._words is not None and WORD_VECTORS_INPUT not in self._inputs:
            raise ValueError(f"{path}: no {WORD_VECTORS_INPUT!r} input for the word-embedding table")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.tokenizer_json = Path(tokenizer_json)
        self.max_seq_length = int(max_seq_length)
        self.normalize = normalize
        self.path = Path(path)

    def _run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray, many: bool = False) -> np.ndarray:
        """(batch, tokens, dim) float32 last hidden states of (batch, tokens) int64 inputs.
        ``many``: part of a long run of batches, which gathers word vectors from an in-memory
        copy of the table (a gather from the memory map took 3x as long: 0.1 s per batch of 64
        SciFact chunks on the loaded 2-core machine)."""
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        if self._words is not None:  # a split graph: the word-embedding lookup is done here
            table = self._words
            if many:
                if self._words_ram is None:
                    self._words_ram = np.array(self._words, dtype=np.float32)  # 47 MB for MiniLM; racing copies are equal
                table = self._words_ram
            feeds[WORD_VECTORS_INPUT] = np.take(table, ids, axis=0)
        return self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]

    def encode(self, text: str) -> np.ndarray:
        """(dim,) float32 vector of one text (L2-normalised when the model normalises)."""
        enc = self.tokenizer.encode(text)
        ids = np.asarray([enc.ids], dtype=np.int64)
        hidden = self._run(ids, np.ones_like(ids), np.asarray([enc.type_ids], dtype=np.int64))[0]  # (tokens, dim)
        v = hidden.mean(axis=0)
        if self.normalize:
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        return np.ascontiguousarray(v, dtype=np.float32)

    def encode_batch(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 vectors of ``texts``, row i for ``texts[i]`` (L2-normalised when the
        model normalises); empty input gives (0, dim) when the graph's width is known.

        Texts are sorted by word-piece count before batching, so each batch is padded only to
        its own longest text and no padding is embedded wastefully; rows are written back in
        input order. Padding positions are masked out of the attention and the mean. With
        ``batch_workers`` > 1, that many batches run at once (vectors equal a one-by-one run)."""
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        encs = self.tokenizer.encode_batch(list(texts))
        order = sorted(range(n), key=lambda i: len(encs[i].ids))
        step = max(1, int(batch_size))
        groups = [order[b : b + step] for b in range(0, n, step)]
        many = len(groups) > 1

        def embed(idx: list[int]) -> np.ndarray:
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            types = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                e = encs[i]
                L = len(e.ids)
                ids[r, :L] = e.ids
                types[r, :L] = e.type_ids
                mask[r, :L] = 1
            hidden = self._run(ids, mask, types, many=many)
            m = mask[:, :, None].astype(np.float32)
            v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
            if self.normalize:
                v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            return v

        if self.batch_workers > 1 and many:
            vectors = self._workers().map(embed, groups)
        else:
            vectors = map(embed, groups)
        out: np.ndarray | None = None
        for idx, v in zip(groups, vectors):
            if out is None:
                out = np.empty((n, v.shape[1]), dtype=np.float32)
            out[idx] = v
        assert out is not None
        return out

    def _workers(self):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            with self._pool_lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.batch_workers, thread_name_prefix="rag-embed")
        return self._pool

    @property
    def dim(self) -> int:
        """Vector size from the graph's output shape (0 when the graph leaves it symbolic)."""
        shape = self.session.get_outputs()[0].shape
        return int(shape[-1]) if isinstance(shape[-1], int) else 0


OnnxQueryEncoder = OnnxEncoder
"""Former name (``rag.onnx_query``), kept for existing imports."""

_EXPORT_LOCK = threading.Lock()


def _tmp_next_to(target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return tmp


def _unlink(path: str | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).min())


def export(st_model, folder: str | Path, target: Path, max_seq_length: int, normalize: bool) -> OnnxEncoder | None:
    """Export the transformer of a loaded ``SentenceTransformer`` to ``target`` (atomic rename),
    check it against PyTorch on probe texts, and return an encoder; None (and no file) when
    the export fails or disagrees."""
    import torch

    with _EXPORT_LOCK:
        auto = st_model[0].auto_model.eval()
        try:  # the reference: PyTorch as it embeds (before the switch to eager attention for tracing)
            ref = st_model.encode(list(PROBE_TEXTS), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        except Exception as e:  # noqa: BLE001
            log.warning("could not export the embedder to ONNX (%s); using PyTorch", type(e).__name__)
            return None
        before = getattr(auto.config, "_attn_implementation", None)
        _use_attention(auto, "eager")

        class _Wrapped(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        tmp: str | None = _tmp_next_to(target)
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
            encoder = OnnxEncoder(Path(tmp), Path(folder) / "tokenizer.json", max_seq_length, normalize)
            got = encoder.encode_batch(list(PROBE_TEXTS))
            cos = _min_cosine(ref, got)
            if cos < MIN_EXPORT_COSINE:
                log.warning("ONNX encoder disagrees with PyTorch (cosine %.6f); using PyTorch", cos)
                return None
            os.replace(tmp, target)
            tmp = None
            encoder.path = target
            log.info("exported the embedder to %s", target)
            return encoder
        except Exception as e:  # noqa: BLE001 - any export problem: stay on the PyTorch path
            log.warning("could not export the embedder to ONNX (%s: %s); using PyTorch",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        finally:
            _unlink(tmp)
            if before:
                _use_attention(auto, before)


def _use_attention(model, implementation: str) -> None:
    """Switch a transformers model's attention to ``implementation`` when it can be switched.

    Why eager for the export: the traced SDPA path of transformers 5 builds a boolean mask per
    layer and NaN-guards every softmax (``Where`` and ``IsNaN`` over (batch, heads, tokens,
    tokens)), 20 % of the int8 graph's time on SciFact chunks; the eager path adds one
    (batch, 1, 1, tokens) additive mask. Both give the same vectors (checked on export)."""
    try:
        model.set_attn_implementation(implementation)
    except Exception:  # noqa: BLE001 - older transformers or a model without the switch: export as is
        pass


class _DropRootRecords(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "root"


@contextmanager
def _root_logger_untouched():
    """``quantize_dynamic`` advises pre-processing through ``logging.warning`` on the root
    logger, which also installs a stderr handler for the whole process (``basicConfig``). The
    CLI owns the terminal: drop records logged on the root logger itself while quantising and
    remove any handler that appeared (runs once per model and machine, under the export lock)."""
    root = logging.getLogger()
    before = list(root.handlers)
    flt = _DropRootRecords()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)
        for h in list(root.handlers):
            if h not in before:
                root.removeHandler(h)


def quantize_int8(fp32: OnnxEncoder, target: Path, batch_workers: int = 1) -> OnnxEncoder | None:
    """Derive the int8 graph from the fp32 ``fp32`` encoder's file with
    ``onnxruntime.quantization.quantize_dynamic`` (signed int8 weights, per-channel for MatMul,
    activations quantised per batch at run time), write it to ``target`` atomically, and return
    an encoder; None (and no file) when quantisation fails or its probe vectors fall below
    :data:`MIN_INT8_COSINE` against fp32's. ``batch_workers``: that of the returned encoder."""
    with _EXPORT_LOCK:
        tmp: str | None = _tmp_next_to(target)
        try:
            import warnings

            from onnxruntime.quantization import QuantType, quantize_dynamic

            with warnings.catch_warnings(), _root_logger_untouched():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(fp32.path), tmp, weight_type=QuantType.QInt8, per_channel=True,
                                 op_types_to_quantize=["MatMul"])
            enc = OnnxEncoder(Path(tmp), fp32.tokenizer_json, fp32.max_seq_length, fp32.normalize,
                              batch_workers=batch_workers)
            cos = _min_cosine(fp32.encode_batch(list(PROBE_TEXTS)), enc.encode_batch(list(PROBE_TEXTS)))
            if cos < MIN_INT8_COSINE:
                log.warning("int8 embedder disagrees with fp32 (cosine %.4f); using fp32", cos)
                return None
            os.replace(tmp, target)
            tmp = None
            enc.path = target
            log.info("quantised the embedder to int8 at %s (probe cosine %.4f)", target, cos)
            return enc
        except Exception as e:  # noqa: BLE001 - any problem: stay on fp32
            log.warning("could not quantise the embedder to int8 (%s: %s); using fp32",
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        finally:
            _unlink(tmp)


def _split_word_embeddings(model) -> "np.ndarray | None":
    """Cut the word-embedding lookup out of an ONNX ``model`` in place: the ``Gather`` of an
    initializer table by ``input_ids`` goes, its consumers read the new graph input
    :data:`WORD_VECTORS_INPUT` instead. Returns the (vocab, dim) float32 table, or None (model
    unchanged) when there is no single such lookup."""
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    found = [n for n in g.node if n.op_type == "Gather" and len(n.input) == 2 and n.input[1] == "input_ids"
             and n.input[0] in inits]
    if len(found) != 1:
        return None
    node = found[0]
    table = numpy_helper.to_array(inits[node.input[0]])
    users = [n for n in g.node if node.input[0] in n.input]
    out = node.output[0]
    if table.ndim != 2 or table.dtype != np.float32 or len(users) != 1 or any(o.name == out for o in g.output):
        return None
    g.node.remove(node)
    g.initializer.remove(inits[node.input[0]])
    for i in [i for i in g.input if i.name == node.input[0]]:  # old exports list initializers as inputs
        g.input.remove(i)
    for n in g.node:
        for k, name in enumerate(n.input):
            if name == out:
                n.input[k] = WORD_VECTORS_INPUT
    g.input.append(helper.make_tensor_value_info(WORD_VECTORS_INPUT, TensorProto.FLOAT, ["batch", "tokens", table.shape[1]]))
    return np.ascontiguousarray(table)


def make_split_graph(full: OnnxEncoder, graph_target: Path, table_target: Path) -> OnnxEncoder | None:
    """Derive a split graph from the ``full`` encoder's file (fp32 or int8): the word-embedding
    table (all-MiniLM-L6-v2: 30,522 x 384 float32, 47 MB of the fp32 graph's 90 and of the int8
    graph's 58) moves to ``table_target`` (``.npy``, memory-mapped at run time, so a text reads
    only its own rows; int8 quantisation leaves this table float32, so both graphs share one
    file; the new encoder has ``full``'s ``batch_workers``), and the rest is saved already optimised by ONNX Runtime (``ORT_ENABLE_ALL``, offline
    mode) so a new process loads it without optimising again. Why: creating the fp32 session
    took 0.12 CPU s of a cold ``rag search``'s 0.6, and the int8 one most of a one-file
    ``rag ingest``'s embedding time, mostly copying weights a short text never reads.

    The optimised graph is specific to this ONNX Runtime version (the caller puts the version in
    ``graph_target``'s name). Files are written atomically, the table first (an existing table
    file is reused when it holds the same table, else replaced). Returns an encoder on the new
    files, or None (and no new files) when the graph has no single word-embedding lookup,
    anything fails, or a probe text's vector has cosine < :data:`MIN_EXPORT_COSINE` with the
    full graph's."""
    with _EXPORT_LOCK:
        plain: str | None = None
        work: str | None = None  # a private folder where ONNX Runtime writes the graph and its weights
        tmp_table: str | None = None
        try:
            graph_target.parent.mkdir(parents=True, exist_ok=True)
            import onnx
            import onnxruntime as ort

            model = onnx.load(str(full.path))
            table = _split_word_embeddings(model)
            if table is None:
                log.info("%s: no word-embedding lookup to split; using the whole graph", full.path)
                return None
            try:
                same = table_target.is_file() and np.array_equal(np.load(table_target, mmap_mode="r"), table)
            except (OSError, ValueError):
                same = False
            if not same:
                tmp_table = _tmp_next_to(table_target)
                with open(tmp_table, "wb") as fh:
                    np.save(fh, table)
            plain = _tmp_next_to(graph_target)
            onnx.save(model, plain)
            work = tempfile.mkdtemp(prefix=graph_target.name + ".", suffix=".tmp", dir=graph_target.parent)
            weights = weights_file(graph_target)
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.optimized_model_filepath = os.path.join(work, graph_target.name)
            so.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights.name)
            so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            so.log_severity_level = 3
            ort.InferenceSession(plain, so, providers=["CPUExecutionProvider"])  # writes both files into work
            enc = OnnxEncoder(Path(work) / graph_target.name, full.tokenizer_json, full.max_seq_length, full.normalize,
                              word_table=Path(tmp_table or table_target), optimized=True,
                              batch_workers=full.batch_workers)
            probes = list(PROBE_TEXTS)
            cos = min(_min_cosine(full.encode_batch(probes), enc.encode_batch(probes)),
                      _min_cosine(np.stack([full.encode(t) for t in probes]), np.stack([enc.encode(t) for t in probes])))
            if cos < MIN_EXPORT_COSINE:
                log.warning("split graph disagrees with %s (cosine %.6f); using the whole graph", full.path.name, cos)
                return None
            if tmp_table is not None:
                os.replace(tmp_table, table_target)
                tmp_table = None
            if (Path(work) / weights.name).is_file():
                os.replace(Path(work) / weights.name, weights)
            os.replace(Path(work) / graph_target.name, graph_target)
            enc.path, enc.word_table = graph_target, table_target
            log.info("made the split graph %s (probe cosine %.6f)", graph_target, cos)
            return enc
        except Exception as e:  # noqa: BLE001 - any problem: stay on the whole graph
            log.warning("could not split %s (%s: %s); using the whole graph", full.path.name,
                        type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            return None
        finally:
            _unlink(plain)
            _unlink(tmp_table)
            if work is not None:
                import shutil

                shutil.rmtree(work, ignore_errors=True)


def weights_file(graph: Path) -> Path:
    """Where a split graph saved by :func:`make_split_graph` keeps its weights: ``<graph
    stem>.data`` beside it (the graph names this file; ONNX Runtime opens it on load)."""
    return Path(graph).with_suffix(".data")
