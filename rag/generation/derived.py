"""A generator's GGUF file as a derived float32 safetensors folder, made once and cached.

transformers de-quantises a GGUF file to float32 on every load and converts its tokenizer: 20 s
for SmolLM2-135M Q4_1 on this 2-core machine, most of a cold ``rag ask``. The float32 tensors it
produces are written once to ``cache_dir()/generator/<name>-<file key>-v<version>/`` as a plain
Hugging Face folder (``model.safetensors``, ``config.json``, ``tokenizer.json``, chat template),
which later processes load with ``from_pretrained`` in about a second (loaded machine: 2-3 s).

float32, not bfloat16: the GGUF weights de-quantised by transformers are float32 values that
bfloat16 cannot hold (Q4_1 scale x nibble + offset needs ~15 mantissa bits); a bfloat16 copy
moved token log-probabilities by up to 0.09 nats (0.29 with bfloat16 arithmetic) and changed the
arg-max next token at 2-5 % of positions, which changes span answers. The float32 copy is the
same numbers, so answers are identical; every new copy is checked against the GGUF-loaded model
(:data:`MAX_LOGPROB_DIFF`) before it is used, and dropped if it differs.

The folder name carries :func:`rag.model_cache.file_key` of the GGUF file, so a replaced GGUF
makes a new copy; the folder is written atomically (:func:`rag.model_cache.atomic_folder`) and
counts only once ``rag-derived.json`` is in it. Never written into an index folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..model_cache import atomic_folder, cache_dir, file_key

log = logging.getLogger("rag")

DERIVED_VERSION = 1
"""Bumped when the derived folder's layout changes, so old copies are not reused."""
MAX_LOGPROB_DIFF = 1e-4
"""Largest |log P| difference (nats, any position, any vocabulary entry) allowed between the
derived copy and the GGUF-loaded model on the probe prompt; the float32 copy measures 0.0."""
MARKER = "rag-derived.json"
"""File written last into a complete derived folder: source file, its key, the check's result."""
_PROBE = [{"role": "system", "content": "Answer from the numbered sources and cite them as [n]."},
          {"role": "user", "content": "Sources:\n[1] zlib\nzlib was written by Jean-loup Gailly (compression) and "
                                      "Mark Adler (decompression).\n\nQuestion: Who wrote zlib?"}]


def cache_folder(gguf_path: str | Path, tag: str) -> Path:
    """``cache_dir()/generator/<stem>-<file key>-<tag>``: where a copy made from ``gguf_path``
    lives (whether or not it exists yet); the file key changes with the GGUF's content. Raises
    OSError when the GGUF file cannot be read."""
    p = Path(gguf_path)
    return cache_dir() / "generator" / f"{p.stem}-{file_key(p)}-{tag}"


def complete_folder(gguf_path: str | Path, tag: str, files: tuple[str, ...]) -> Path | None:
    """:func:`cache_folder` when every one of ``files`` is in it (the marker, written last,
    among them), else None (not made yet, interrupted, or the GGUF is unreadable)."""
    try:
        folder = cache_folder(gguf_path, tag)
    except OSError:
        return None
    return folder if all((folder / f).is_file() for f in files) else None


def derived_folder(gguf_path: str | Path) -> Path:
    """Where the derived copy of ``gguf_path`` lives (whether or not it exists yet).
    Raises OSError when the GGUF file cannot be read."""
    return cache_folder(gguf_path, f"v{DERIVED_VERSION}")


def find_derived(gguf_path: str | Path) -> Path | None:
    """The complete derived folder of ``gguf_path``, or None (not made yet, or unreadable)."""
    return complete_folder(gguf_path, f"v{DERIVED_VERSION}", (MARKER, "model.safetensors"))


def load_tokenizer(folder: str | Path):
    """The derived folder's tokenizer as a ``PreTrainedTokenizerFast`` read from its
    ``tokenizer.json`` and ``tokenizer_config.json`` (chat template, special tokens): 0.25 CPU s
    against 1.0 for ``AutoTokenizer``'s class resolution on this machine; :func:`derive` checks
    that it renders and tokenises the probe prompt exactly as the GGUF's tokenizer."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def _probe_ids(tok):
    import torch

    text = tok.apply_chat_template(_PROBE, add_generation_prompt=True, tokenize=False)
    return text, torch.tensor([tok(text, add_special_tokens=False)["input_ids"]], dtype=torch.long)


def derive(gguf_model, gguf_tokenizer, gguf_path: str | Path) -> Path | None:
    """Write the derived float32 copy of an already GGUF-loaded ``gguf_model`` (and its
    tokenizer) for ``gguf_path``; return its folder, or None when it cannot be written or fails
    the check (rendered prompt and token ids equal, log-probabilities within
    :data:`MAX_LOGPROB_DIFF`). Costs about 3 s plus one load of the copy."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    try:
        target = derived_folder(gguf_path)
        with atomic_folder(target) as tmp:
            cfg = gguf_model.config.to_dict()
            cfg.pop("quantization_config", None)
            cfg["dtype"] = "float32"
            (tmp / "config.json").write_text(json.dumps(cfg, indent=1, sort_keys=True), encoding="utf-8")
            gguf_tokenizer.save_pretrained(str(tmp))
            if getattr(gguf_model, "generation_config", None) is not None:
                gguf_model.generation_config.save_pretrained(str(tmp))
            tied = bool(getattr(gguf_model.config, "tie_word_embeddings", False))
            state = {k: v.detach().to(torch.float32).contiguous() for k, v in gguf_model.state_dict().items()
                     if not (tied and k == "lm_head.weight")}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            del state
            copy = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32, use_safetensors=True).eval()
            copy_tok = load_tokenizer(tmp)
            text, ids = _probe_ids(gguf_tokenizer)
            text2, ids2 = _probe_ids(copy_tok)
            if text != text2 or not torch.equal(ids, ids2):
                log.warning("derived generator copy tokenises differently from the GGUF; using the GGUF")
                raise _Rejected
            with torch.inference_mode():
                ref = torch.log_softmax(gguf_model(input_ids=ids).logits.float(), dim=-1)
                got = torch.log_softmax(copy(input_ids=ids).logits.float(), dim=-1)
            diff = float((ref - got).abs().max())
            if not diff <= MAX_LOGPROB_DIFF:
                log.warning("derived generator copy differs from the GGUF by %.3g nats; using the GGUF", diff)
                raise _Rejected
            marker = {"source": str(Path(gguf_path).resolve()), "source_key": file_key(gguf_path), "dtype": "float32",
                      "version": DERIVED_VERSION, "max_logprob_diff": diff, "probe_tokens": int(ids.shape[1])}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        log.info("wrote the float32 copy of %s to %s (max log-prob difference %.3g)", Path(gguf_path).name, target, diff)
        return target
    except _Rejected:
        return None
    except Exception as e:  # noqa: BLE001 - a cache problem must never stop answering: use the GGUF
        log.warning("could not write the derived generator copy (%s: %s); loading the GGUF each time",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return None


class _Rejected(Exception):
    """The derived copy failed its check (already logged); the folder is discarded."""


PACKING_FILE = "packing.json"
"""Result of the packed-vs-padded scoring check (:meth:`TransformersGenerator._score_packed`) for
the derived model, per torch + transformers version: the check is a property of the model
and the libraries, so it runs once per machine instead of on every cold process (it costs a
padded batch with a copy of the prompt's KV cache per text: ~0.7 s and ~250 MB here)."""


def _library_versions() -> str:
    import torch
    import transformers

    return f"torch {torch.__version__}, transformers {transformers.__version__}"


def read_packing(folder: str | Path) -> bool | None:
    """The stored packing check result of a derived folder for the running libraries, or None."""
    try:
        data = json.loads((Path(folder) / PACKING_FILE).read_text(encoding="utf-8"))
        if data.get("libraries") == _library_versions() and isinstance(data.get("packed_matches_padded"), bool):
            return data["packed_matches_padded"]
    except (OSError, ValueError, AttributeError):
        pass
    return None


def write_packing(folder: str | Path, ok: bool, diff: float) -> None:
    """Store the packing check result in a derived folder (atomic replace; failures only logged)."""
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=PACKING_FILE + ".", suffix=".tmp", dir=str(folder))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"packed_matches_padded": bool(ok), "max_diff_nats": float(diff), "libraries": _library_versions()}, fh)
        os.replace(tmp, Path(folder) / PACKING_FILE)
    except OSError as e:
        log.info("could not store the packing check in %s (%s)", folder, e)
