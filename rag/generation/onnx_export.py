"""Export a loaded Llama-architecture causal LM (the default SmolLM2-135M-Instruct) to an ONNX
graph that :class:`rag.generation.onnx_lm.OnnxCausalLM` runs without PyTorch, made once per
machine and cached next to the float32 copy (:mod:`.derived`).

Why: importing torch and transformers is 4.5 s of a cold ``rag ask`` on the 2-core machine;
numpy, tokenizers, jinja2 and ONNX Runtime import in 0.16 s, and an ONNX Runtime session over
weights stored as external data opens in 0.2-0.4 s (the file is memory-mapped).

The graph is written from :class:`_LlamaGraph`, a plain re-statement of Hugging Face's
``LlamaForCausalLM`` forward pass (RMSNorm, rotary position embedding, grouped-query attention,
SiLU-gated MLP; Touvron et al. 2023) whose inputs make every use of the model one call:

* ``input_ids`` (1, L) int64 and ``position_ids`` (1, L) int64;
* ``attn_bias`` (1, 1, L, P + L) float32, added to the attention scores (0 or -inf): causal
  prefill, or several texts packed into one sequence with a block-diagonal mask;
* ``past_keys`` / ``past_values`` (layers, kv_heads, P, head_dim) float32, P may be 0;
* ``logit_rows`` (R,) int64: the positions whose next-token logits are computed (the LM head over
  49k tokens at every prompt position was 25 % of prefill time);

and it returns ``logits`` (R, vocab) float32 and ``present_keys`` / ``present_values``
(layers, kv_heads, P + L, head_dim). The token embedding is stored once, transposed, and serves
both the input lookup and the tied LM head, so the external data file is the size of the
float32 weights (538 MB for SmolLM2-135M).

Every export is checked before it is used (:func:`export_onnx`): the runtime's rendered prompt
and token ids must equal transformers', and its log-probabilities must be within
:data:`MAX_LOGPROB_DIFF` of the PyTorch model's at every position and vocabulary entry of the
probe prompt, and through :meth:`OnnxCausalLM.token_logprobs` (packing and KV-cache reuse). A
copy that fails is discarded and transformers keeps running the model.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ..model_cache import atomic_folder, file_key
from .derived import cache_folder, complete_folder

log = logging.getLogger("rag")

ONNX_VERSION = 1
"""Bumped when the graph's inputs, outputs or folder layout change, so old copies are not reused."""
MAX_LOGPROB_DIFF = 1e-3
"""Largest |log P| difference (nats) allowed between the ONNX graph and the PyTorch model on the
probe. Different kernels sum in different orders; SmolLM2-135M measures about 1.2e-4 over 386
positions x 49,152 tokens, far below the margins span answers are chosen by."""
MARKER = "rag-onnx.json"
"""Written last into a complete folder: source file, its key, the check's figures."""
GRAPH_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
INPUTS = ("input_ids", "position_ids", "attn_bias", "past_keys", "past_values", "logit_rows")
OUTPUTS = ("logits", "present_keys", "present_values")
_PROBE_TEXTS = ("Jean-loup Gailly and Mark Adler", "Mark Adler", "zlib was written", "Yes", "No")


def onnx_folder(gguf_path: str | Path) -> Path:
    """Where the ONNX copy of ``gguf_path`` lives (whether or not it exists yet). Raises OSError
    when the GGUF file cannot be read."""
    return cache_folder(gguf_path, f"onnx-v{ONNX_VERSION}")


def find_onnx(gguf_path: str | Path) -> Path | None:
    """The complete, checked ONNX folder of ``gguf_path``, or None (not made yet, or unreadable)."""
    return complete_folder(gguf_path, f"onnx-v{ONNX_VERSION}", (MARKER, GRAPH_FILE, DATA_FILE, "tokenizer.json", "runtime.json"))


def exportable(config) -> str | None:
    """None when a transformers ``config`` describes a model :class:`_LlamaGraph` reproduces, else
    the reason it does not (another architecture, rope scaling, biases, another activation)."""
    if getattr(config, "model_type", None) != "llama":
        return f"architecture {getattr(config, 'model_type', None)!r} is not llama"
    for rope in (getattr(config, "rope_parameters", None), getattr(config, "rope_scaling", None)):
        if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type") or "default") != "default":
            return f"rope scaling {rope.get('rope_type') or rope.get('type')!r}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "attention or MLP biases"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    return None


def _rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta") or getattr(config, "rope_theta", 10000.0))


def _graph_module(model):
    """:class:`_LlamaGraph` over the weights of a loaded ``LlamaForCausalLM`` (no copies except the
    transposed embedding)."""
    import torch
    import torch.nn.functional as F

    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    eps, theta = float(cfg.rms_norm_eps), _rope_theta(cfg)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    tied = "lm_head.weight" not in sd or bool(getattr(cfg, "tie_word_embeddings", False))

    def param(t):
        return torch.nn.Parameter(t.contiguous(), requires_grad=False)

    class _LlamaGraph(torch.nn.Module):
        """LlamaForCausalLM's forward for batch size 1 with an explicit additive mask and a
        stacked KV cache (see the module docstring for shapes)."""

        def __init__(self):
            super().__init__()
            self.register_buffer("inv_freq", 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)))
            self.embed_t = param(sd["model.embed_tokens.weight"].T)  # (hidden, vocab): lookup and tied head
            self.head_t = None if tied else param(sd["lm_head.weight"].T)
            self.norm = param(sd["model.norm.weight"])
            self.layers = torch.nn.ModuleList()
            for i in range(cfg.num_hidden_layers):
                m, p = torch.nn.Module(), f"model.layers.{i}."
                for name, key in (("ln1", "input_layernorm"), ("ln2", "post_attention_layernorm"), ("q", "self_attn.q_proj"),
                                  ("k", "self_attn.k_proj"), ("v", "self_attn.v_proj"), ("o", "self_attn.o_proj"),
                                  ("g", "mlp.gate_proj"), ("u", "mlp.up_proj"), ("d", "mlp.down_proj")):
                    setattr(m, name, param(sd[p + key + ".weight"]))
                self.layers.append(m)

        @staticmethod
        def rms(x, w):
            return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

        def forward(self, input_ids, position_ids, attn_bias, past_keys, past_values, logit_rows):
            x = self.embed_t.index_select(1, input_ids[0]).T  # (L, hidden)
            n = x.shape[0]
            freqs = position_ids[0].float()[:, None] * self.inv_freq[None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            cos, sin = emb.cos()[None], emb.sin()[None]
            half = head_dim // 2

            def rope(t):
                return t * cos + torch.cat([-t[..., half:], t[..., :half]], dim=-1) * sin

            rep, keys, values = n_heads // n_kv, [], []
            for i, m in enumerate(self.layers):
                h = self.rms(x, m.ln1)
                q = rope(F.linear(h, m.q).view(n, n_heads, head_dim).transpose(0, 1))
                k = rope(F.linear(h, m.k).view(n, n_kv, head_dim).transpose(0, 1))
                v = F.linear(h, m.v).view(n, n_kv, head_dim).transpose(0, 1)
                k = torch.cat([past_keys[i], k], dim=1)  # (kv_heads, P + L, head_dim)
                v = torch.cat([past_values[i], v], dim=1)
                keys.append(k)
                values.append(v)
                att = (q.reshape(n_kv, rep * n, head_dim) @ k.transpose(1, 2)) * (1.0 / math.sqrt(head_dim))
                att = torch.softmax(att.view(n_kv, rep, n, -1) + attn_bias[0], dim=-1).view(n_kv, rep * n, -1)
                o = (att @ v).view(n_heads, n, head_dim).transpose(0, 1).reshape(n, n_heads * head_dim)
                x = x + F.linear(o, m.o)
                h = self.rms(x, m.ln2)
                x = x + F.linear(F.silu(F.linear(h, m.g)) * F.linear(h, m.u), m.d)
            x = self.rms(x, self.norm).index_select(0, logit_rows)
            logits = x @ (self.embed_t if self.head_t is None else self.head_t)
            return logits, torch.stack(keys), torch.stack(values)

    return _LlamaGraph().eval(), (cfg.num_hidden_layers, n_kv, head_dim)


def _write_graph(model, tmp: Path) -> dict:
    """Trace the graph module into ``tmp/model.onnx`` + ``model.onnx.data``; returns the runtime
    facts (cache shape, token ids) the runtime needs."""
    import onnx
    import torch

    module, (layers, n_kv, head_dim) = _graph_module(model)
    L, P = 5, 3
    ids = torch.randint(0, 100, (1, L))
    pos = torch.arange(P, P + L)[None]
    bias = torch.zeros(1, 1, L, P + L)
    past = torch.zeros(layers, n_kv, P, head_dim)
    rows = torch.tensor([L - 1])
    raw = tmp / "raw.onnx"
    axes = {"input_ids": {1: "L"}, "position_ids": {1: "L"}, "attn_bias": {2: "L", 3: "T"}, "past_keys": {2: "P"},
            "past_values": {2: "P"}, "logit_rows": {0: "R"}, "logits": {0: "R"}, "present_keys": {2: "T"},
            "present_values": {2: "T"}}
    import warnings

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids, pos, bias, past, past.clone(), rows), str(raw), input_names=list(INPUTS),
                          output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=17, dynamo=False)
    graph = onnx.load(str(raw))
    onnx.save_model(graph, str(tmp / GRAPH_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)
    del graph
    raw.unlink()
    return {"layers": layers, "kv_heads": n_kv, "head_dim": head_dim, "vocab_size": int(model.config.vocab_size)}


def export_onnx(reference, gguf_path: str | Path) -> Path | None:
    """Write and check the ONNX copy of the model ``reference`` (a loaded
    :class:`rag.generation.transformers.TransformersGenerator`) for ``gguf_path``; return its
    folder, or None when the model is not exportable, the folder cannot be written, or the copy
    fails its check (see the module docstring). Costs about 15-30 s once per machine."""
    model, tok = reference.model, reference.tokenizer
    why = exportable(model.config)
    if why is not None:
        log.info("generator %s runs on transformers (no ONNX copy: %s)", reference.name, why)
        return None
    from .onnx_lm import OnnxCausalLM

    try:
        target = onnx_folder(gguf_path)
        with atomic_folder(target) as tmp:
            facts = _write_graph(model, tmp)
            tok.backend_tokenizer.save(str(tmp / "tokenizer.json"))
            eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
            eos_ids = sorted({int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None} | {int(tok.eos_token_id)})
            facts.update(chat_template=tok.chat_template, eos_token_ids=eos_ids,
                         special_tokens={k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)})
            (tmp / "runtime.json").write_text(json.dumps(facts, indent=1), encoding="utf-8")
            diff = _check(reference, OnnxCausalLM(tmp, name=reference.name))
            if diff is None:
                raise _Rejected
            marker = {"source": str(Path(gguf_path).resolve()), "source_key": file_key(gguf_path), "version": ONNX_VERSION,
                      "max_logprob_diff": diff}
            (tmp / MARKER).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        log.info("wrote the ONNX copy of %s to %s (max log-prob difference %.3g)", Path(gguf_path).name, target, diff)
        return target
    except _Rejected:
        return None
    except Exception as e:  # noqa: BLE001 - a cache problem must never stop answering: keep transformers
        log.warning("could not write the ONNX copy of the generator (%s: %s); transformers runs it",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return None


class _Rejected(Exception):
    """The copy failed its check (already logged); the folder is discarded."""


def _check(reference, runtime) -> float | None:
    """Largest log-probability difference between ``runtime`` and ``reference`` on the probe, or
    None (logged) when the rendered prompt, the token ids or any log-probability disagree."""
    import numpy as np
    import torch

    from .derived import _PROBE

    text = reference.render(_PROBE)
    if runtime.render(_PROBE) != text:
        log.warning("the ONNX generator copy renders the chat template differently; transformers runs it")
        return None
    ids = reference.tokenizer(text, add_special_tokens=False)["input_ids"]
    if runtime.encode(text) != list(ids):
        log.warning("the ONNX generator copy tokenises differently; transformers runs it")
        return None
    with torch.inference_mode():
        ref = torch.log_softmax(reference.model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1).numpy()
    got = runtime.prompt_logprobs(ids)
    diff = float(np.abs(ref - got).max())
    reference._prompt_cache = None
    runtime.reset_cache()
    for _ in range(2):  # the second round reuses the prompt's KV cache in both runtimes
        a = reference.token_logprobs(_PROBE, _PROBE_TEXTS, end_text=" [")
        b = runtime.token_logprobs(_PROBE, _PROBE_TEXTS, end_text=" [")
        for ra, rb in zip(a, b):
            if ra[0] != rb[0] or len(ra[1]) != len(rb[1]):
                log.warning("the ONNX generator copy splits a probe text differently; transformers runs it")
                return None
            diff = max(diff, float(np.abs(np.array(ra[1] + ra[2]) - np.array(rb[1] + rb[2])).max()))
    if not diff <= MAX_LOGPROB_DIFF:
        log.warning("the ONNX generator copy differs from transformers by %.3g nats; transformers runs it", diff)
        return None
    return diff
