""":class:`OnnxCausalLM`: the default generator run by ONNX Runtime, without PyTorch or transformers.

It runs the checked graph :mod:`.onnx_export` wrote (shapes: that module's docstring) and keeps
the contracts of :class:`rag.generation.transformers.TransformersGenerator`: ``render`` (the
model's chat template, rendered with jinja2 the way transformers does), ``count_tokens``,
``token_logprobs`` / ``score_continuations`` (one prefill whose KV cache is reused by the next
prompt's common prefix, then all texts packed into one sequence with a block-diagonal mask), and
``generate`` / ``stream`` (greedy decoding with a KV cache, or sampling). Imports: numpy,
onnxruntime, tokenizers, jinja2 (0.16 s together, against 4.5 s for torch + transformers).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import GenerationError, ModelError
from .base import GenerationOptions, _stream_with_stop, plan_packs
from .transformers import PACK_MAX_TOKENS, PREFIX_REUSE_MIN_TOKENS

log = logging.getLogger("rag")

PROMPT_CACHE_ENTRIES = 3
"""Prompt KV caches kept, most recently used first. A prompt that reuses at least half of a kept
cache takes its slot, so each prompt family (span scoring and its question-free twin, yes/no verdicts, ...)
keeps its shared few-shot prefix instead of evicting the others' (a 320-380-token prefill per
switch otherwise); about 17 MB each for SmolLM2-135M."""
_NEG = np.float32(-np.inf)


def _threads() -> int:
    """Intra-op threads: ``$RAG_ONNX_THREADS`` when set, else every usable core (at most 4)."""
    env = os.environ.get("RAG_ONNX_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


def _logsumexp(x: np.ndarray, block: int = 64) -> np.ndarray:
    """Row-wise log-sum-exp of logits ``x`` (R, V) float32 -> (R,) float32, so that
    ``x[r, t] - lse[r]`` is log P(t). Blocks of ``block`` rows bound the temporary to
    ``block x V`` floats instead of a second (R, V) matrix."""
    out = np.empty(x.shape[0], np.float32)
    for b in range(0, x.shape[0], block):
        rows = x[b : b + block]
        m = rows.max(axis=-1)
        out[b : b + block] = m + np.log(np.exp(rows - m[:, None]).sum(axis=-1))
    return out


class OnnxCausalLM:
    """A causal LM exported by :func:`rag.generation.onnx_export.export_onnx`, loaded lazily.

    ``folder``: the export folder (``model.onnx`` + ``model.onnx.data``, ``tokenizer.json``,
    ``runtime.json``). Weights are memory-mapped (not prepacked: prepacking copies them, 970 vs
    690 MB resident for SmolLM2-135M at the same speed). Thread-safe: scoring holds a lock
    around the shared prompt cache; decoding runs outside it. Raises ModelError when the folder
    cannot be loaded, GenerationError when a run fails.
    """

    def __init__(self, folder: str | Path, name: str = ""):
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self._session = None
        self._tok = None
        self._template = None
        self._facts: dict = {}
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._prompt_caches: list[tuple[list[int], np.ndarray, np.ndarray]] = []

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        """Open the session, tokenizer and chat template (idempotent)."""
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            try:
                import jinja2
                import jinja2.sandbox
                import onnxruntime as ort
                from jinja2.ext import loopcontrols
                from tokenizers import Tokenizer

                facts = json.loads((self.folder / "runtime.json").read_text(encoding="utf-8"))
                tok = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
                tok.no_padding()
                tok.no_truncation()
                env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                                   extensions=[loopcontrols])
                env.filters["tojson"] = lambda v, **kw: json.dumps(v, ensure_ascii=False, **kw)

                def _raise(msg):
                    raise jinja2.exceptions.TemplateError(msg)

                env.globals["raise_exception"] = _raise
                template = env.from_string(facts["chat_template"]) if facts.get("chat_template") else None
                so = ort.SessionOptions()
                so.intra_op_num_threads = _threads()
                so.inter_op_num_threads = 1
                so.add_session_config_entry("session.disable_prepacking", "1")
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                so.log_severity_level = 3
                session = ort.InferenceSession(str(self.folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - any load failure is a ModelError
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ModelError(f"cannot load the ONNX generator {self.folder}: {msg}") from None
            self._facts, self._tok, self._template, self._session = facts, tok, template, session
            log.info("loaded generator %s (ONNX Runtime, %d thread(s))", self.name, so.intra_op_num_threads)

    # -- encoding ------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt string: the chat template with the assistant turn opened (or, without a
        template, ``role: content`` lines followed by ``assistant:``)."""
        self.load()
        if self._template is None:
            return "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        return self._template.render(messages=messages, add_generation_prompt=True, **self._facts.get("special_tokens", {}))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added)."""
        self.load()
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` in the model's tokenizer (no special tokens)."""
        return len(self.encode(text))

    # -- the graph -----------------------------------------------------------------------
    def _empty_cache(self) -> np.ndarray:
        f = self._facts
        return np.zeros((f["layers"], f["kv_heads"], 0, f["head_dim"]), np.float32)

    def _run(self, ids: Sequence[int], positions: np.ndarray, bias: np.ndarray, past_k: np.ndarray,
             past_v: np.ndarray, rows: Sequence[int]):
        """One graph run: ``(logits (R, vocab) float32, present_keys, present_values)``."""
        try:
            return self._session.run(None, {
                "input_ids": np.asarray([ids], dtype=np.int64), "position_ids": positions[None].astype(np.int64),
                "attn_bias": bias[None, None], "past_keys": past_k, "past_values": past_v,
                "logit_rows": np.asarray(rows, dtype=np.int64)})
        except Exception as e:  # noqa: BLE001 - ONNX Runtime raises its own exception types
            raise GenerationError(f"generation failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    @staticmethod
    def _causal_bias(n_past: int, n: int) -> np.ndarray:
        bias = np.zeros((n, n_past + n), np.float32)
        bias[:, n_past:] = np.triu(np.full((n, n), _NEG, np.float32), 1)
        return bias

    def _prefill(self, p_list: list[int]):
        """Run the prompt ``p_list`` reusing the kept prompt KV cache that shares the longest
        common prefix with it; returns ``(keys, values, last-position log-probabilities
        (vocab,))``. Call under ``self._run_lock``."""
        n_p = len(p_list)
        reuse, best = 0, None
        for k, (c_ids, _, _) in enumerate(self._prompt_caches):
            n, lim = 0, min(len(c_ids), n_p - 1)  # at least one new token produces the last logits
            while n < lim and c_ids[n] == p_list[n]:
                n += 1
            if n > reuse:
                reuse, best = n, k
        kept = list(self._prompt_caches)
        if best is not None and reuse >= PREFIX_REUSE_MIN_TOKENS:
            c_ids, c_k, c_v = kept[best]
            past_k, past_v = c_k[:, :, :reuse], c_v[:, :, :reuse]
            if 2 * reuse >= len(c_ids):
                kept.pop(best)  # the same prompt family: this prompt takes the slot of the one it extends
        else:
            reuse, past_k = 0, self._empty_cache()
            past_v = past_k
        kept = kept[: PROMPT_CACHE_ENTRIES - 1]  # a new prompt family evicts the least recently used
        new = p_list[reuse:]
        logits, keys, values = self._run(new, np.arange(reuse, n_p), self._causal_bias(reuse, len(new)), past_k, past_v,
                                         [len(new) - 1])
        self._prompt_caches = [(list(p_list), keys, values)] + kept
        return keys, values, logits[0] - _logsumexp(logits)[0]

    def reset_cache(self) -> None:
        """Forget the kept prompt KV caches (the next prompt is computed whole)."""
        with self._run_lock:
            self._prompt_caches = []

    def prompt_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """Next-token log-probabilities at every position of ``ids``: (len(ids), vocab) float32
        (a single causal run without cache; for checks)."""
        self.load()
        n = len(ids)
        empty = self._empty_cache()
        logits, _, _ = self._run(list(ids), np.arange(n), self._causal_bias(0, n), empty, empty, range(n))
        return logits - _logsumexp(logits)[:, None]

    # -- scoring -------------------------------------------------------------------------
    def token_logprobs(
        self, messages: list[dict[str, str]], texts: Sequence[str], prefix: str = "", end_text: str | None = None,
        batch_size: int = 48, top_first: int | None = None, first_bonus: Sequence[float] | None = None,
    ) -> list[tuple[list[int], list[float], list[float]] | None]:
        """Per-token log-probabilities of each text as the start of the assistant's reply; the
        contract and row format of :meth:`rag.generation.transformers.TransformersGenerator.token_logprobs`
        (``batch_size`` is accepted and unused: texts are always packed)."""
        if not texts:
            return []
        self.load()
        tok = self._tok
        p_list = self.encode(self.render(messages) + prefix)
        n_p = len(p_list)
        end_id = tok.encode(end_text, add_special_tokens=False).ids[0] if end_text else None
        eos = int(self._facts["eos_token_ids"][0])
        enc = []
        for t in texts:
            e = tok.encode(t, add_special_tokens=False)
            enc.append((list(e.ids) or [eos], [int(o[1]) for o in e.offsets] or [0]))
        with self._run_lock:
            keys, values, last_logp = self._prefill(p_list)
            order = list(range(len(enc)))
            if top_first is not None and top_first < len(enc):
                bonus = list(first_bonus) if first_bonus is not None else [0.0] * len(enc)
                order = sorted(order, key=lambda i: -(float(last_logp[enc[i][0][0]]) + bonus[i]))[:top_first]
            results: dict[int, tuple[list[int], list[float], list[float]]] = {}
            for pack in plan_packs(order, [len(ids) for ids, _ in enc], PACK_MAX_TOKENS):
                self._score_pack(keys, values, n_p, enc, pack, last_logp, end_id, results)
        return [results.get(i) for i in range(len(enc))]

    def _score_pack(self, keys, values, n_p: int, enc, pack: list[int], last_logp, end_id, results) -> None:
        """Score the texts ``pack`` packed end to end after the prompt: each attends to the prompt
        and to its own earlier tokens only, at the positions it would have alone."""
        lens = [len(enc[i][0]) for i in pack]
        total = sum(lens)
        ids = [t for i in pack for t in enc[i][0]]
        positions = np.concatenate([np.arange(n_p, n_p + n) for n in lens])
        bias = np.full((total, n_p + total), _NEG, np.float32)
        bias[:, :n_p] = 0.0
        starts, at = [], 0
        for n in lens:
            bias[at : at + n, n_p + at : n_p + at + n] = np.triu(np.full((n, n), _NEG, np.float32), 1)
            starts.append(at)
            at += n
        logits, _, _ = self._run(ids, positions, bias, keys, values, range(total))
        lse = _logsumexp(logits)
        for i, start in zip(pack, starts):
            t_ids, ends = enc[i]
            n = len(t_ids)
            tl = [float(last_logp[t_ids[0]])]
            if n > 1:
                r = np.arange(start, start + n - 1)
                tl += (logits[r, t_ids[1:]] - lse[r]).tolist()
            el = (logits[start : start + n, end_id] - lse[start : start + n]).tolist() if end_id is not None else []
            results[i] = (ends, tl, el)

    def score_continuations(self, messages: list[dict[str, str]], candidates: Sequence[str], prefix: str = "") -> list[float]:
        """Log-likelihood (natural log, summed over tokens) of each candidate as the start of the
        assistant's reply; ``len(candidates)`` floats."""
        return [sum(r[1]) for r in self.token_logprobs(messages, candidates, prefix=prefix)]  # type: ignore[index]

    # -- generation ----------------------------------------------------------------------
    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> str:
        """The completion text (special tokens removed, cut at the first stop string)."""
        return "".join(self.stream(messages, options))

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[str]:
        """Text pieces as tokens are decoded: greedy for temperature 0, else sampled from the
        temperature-scaled distribution with ``numpy.random.default_rng(seed)`` (seeded samples
        differ from the transformers runtime's). Stops at an end-of-turn token,
        ``max_new_tokens`` or a stop string; closing the iterator stops decoding."""
        options = options or GenerationOptions()
        yield from _stream_with_stop(self._decode(messages, options), options.stop)

    def _decode(self, messages, options: GenerationOptions) -> Iterator[str]:
        self.load()
        ids = self.encode(self.render(messages))
        eos = set(self._facts["eos_token_ids"])
        rng = np.random.default_rng(int(options.seed)) if options.temperature and options.temperature > 0 else None
        empty = self._empty_cache()
        logits, keys, values = self._run(ids, np.arange(len(ids)), self._causal_bias(0, len(ids)), empty, empty, [len(ids) - 1])
        out: list[int] = []
        sent = ""
        pos = len(ids)
        for _ in range(int(options.max_new_tokens)):
            row = logits[0].astype(np.float64)
            if rng is None:
                nxt = int(row.argmax())
            else:
                p = np.exp((row - row.max()) / float(options.temperature))
                nxt = int(rng.choice(len(p), p=p / p.sum()))
            if nxt in eos:
                break
            out.append(nxt)
            text = self._tok.decode(out, skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(sent):  # hold back a partial UTF-8 character
                yield text[len(sent):]
                sent = text
            logits, keys, values = self._run([nxt], np.array([pos]), np.zeros((1, pos + 1), np.float32), keys, values, [0])
            pos += 1
        text = self._tok.decode(out, skip_special_tokens=True)
        if len(text) > len(sent):
            yield text[len(sent):]
