"""Former home of the ONNX Runtime query encoder; everything now lives in
:mod:`rag.onnx_embedding` (queries, short texts and document batches) and
:mod:`rag.model_cache` (cache folder). Kept so existing imports keep working."""

from __future__ import annotations

from .model_cache import cache_dir
from .onnx_embedding import (
    EXPORT_VERSION,
    MIN_EXPORT_COSINE,
    OnnxEncoder,
    OnnxQueryEncoder,
    export,
    onnxruntime_available,
    plain_mean_pooling_model,
    weights_key,
)

__all__ = ["EXPORT_VERSION", "MIN_EXPORT_COSINE", "OnnxEncoder", "OnnxQueryEncoder", "cache_dir", "export",
           "onnxruntime_available", "plain_mean_pooling_model", "weights_key"]
