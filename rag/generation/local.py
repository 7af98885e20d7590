""":class:`LocalGenerator`: a local model (the default SmolLM2, a GGUF file, a Hugging Face folder)
run by ONNX Runtime when a checked copy of it is cached, else by transformers.

Why: a cold ``rag ask`` spent 4.5 s importing torch and transformers before its first token.
The first process on a machine that loads a GGUF Llama model with transformers also writes its
ONNX copy (:func:`rag.generation.onnx_export.export_onnx`, once, checked against the loaded
model); every later process runs the copy without importing torch. ``runtime``: "auto" (the copy
when there is or can be one), "onnx" (the copy, or ModelError), "transformers" (never the copy).
"""

from __future__ import annotations

import logging
import threading
from typing import Iterator, Sequence

from ..config import DEFAULT_GENERATOR
from ..errors import ModelError
from .base import GenerationOptions
from .transformers import TransformersGenerator

log = logging.getLogger("rag")

RUNTIMES = ("auto", "onnx", "transformers")


class LocalGenerator:
    """Generator and token scorer over a local model; picks its runtime on first use.

    Same contracts as :class:`rag.generation.transformers.TransformersGenerator` (``render``,
    ``count_tokens``, ``generate``, ``stream``, ``token_logprobs``, ``score_continuations``).
    Raises ModelError when the model cannot be loaded or ``runtime="onnx"`` has no copy to run;
    ValueError for an unknown ``runtime``.
    """

    def __init__(self, model: str = DEFAULT_GENERATOR, allow_pickle: bool = False, runtime: str = "auto"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        self._torch = TransformersGenerator(model, allow_pickle=allow_pickle)
        self.model_name = model
        self.runtime = runtime
        self.name = self._torch.name
        self._impl = None
        self._lock = threading.Lock()

    @property
    def runtime_name(self) -> str | None:
        """"onnxruntime" or "transformers" once loaded, else None."""
        if self._impl is None:
            return None
        return "transformers" if self._impl is self._torch else "onnxruntime"

    def load(self):
        """Load the model now (idempotent); returns the runtime object in use."""
        if self._impl is not None:
            return self._impl
        with self._lock:
            if self._impl is None:
                self._impl = self._pick()
        return self._impl

    def _pick(self):
        gguf = None
        if self.runtime != "transformers":
            folder, name = self._torch._resolve()
            if name is not None:
                import os

                gguf = os.path.join(folder, name)
                from .onnx_export import find_onnx

                found = find_onnx(gguf)
                if found is not None:
                    from .onnx_lm import OnnxCausalLM

                    impl = OnnxCausalLM(found, name=self.name)
                    impl.load()
                    return impl
        if self.runtime == "onnx" and gguf is None:
            raise ModelError(f"generator {self.model_name!r}: the ONNX runtime needs a GGUF model file")
        if gguf is not None:
            # the one long wait of a new machine: "rag.setup" notices reach the terminal without -v
            logging.getLogger("rag.setup").warning("preparing the generator %s once for this machine (de-quantising the GGUF, writing and "
                        "checking its float32 and ONNX copies): about a minute", self.name)
        self._torch._load()
        if gguf is not None:
            from .onnx_export import export_onnx

            made = export_onnx(self._torch, gguf)
            if made is None and self.runtime == "onnx":
                raise ModelError(f"generator {self.model_name!r}: no checked ONNX copy could be made")
        return self._torch

    # -- the contracts, delegated ----------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> str:
        return self.load().render(messages)

    def count_tokens(self, text: str) -> int:
        return self.load().count_tokens(text)

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> str:
        return self.load().generate(messages, options)

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[str]:
        return self.load().stream(messages, options)

    def token_logprobs(self, messages: list[dict[str, str]], texts: Sequence[str], prefix: str = "",
                       end_text: str | None = None, batch_size: int = 48, top_first: int | None = None,
                       first_bonus: Sequence[float] | None = None):
        return self.load().token_logprobs(messages, texts, prefix=prefix, end_text=end_text, batch_size=batch_size,
                                          top_first=top_first, first_bonus=first_bonus)

    def score_continuations(self, messages: list[dict[str, str]], candidates: Sequence[str], prefix: str = "") -> list[float]:
        return self.load().score_continuations(messages, candidates, prefix=prefix)
