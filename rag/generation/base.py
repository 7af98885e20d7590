"""Generation stage contracts: :class:`Generator`, :class:`TokenScorer`, :class:`GenerationOptions`,
and the stop-string handling every backend shares.

No heavy imports here: backends (``transformers``, ``openai``, ``extractive``) import what they
need inside their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

@dataclass
class GenerationOptions:
    """Decoding options. ``temperature`` 0 means greedy decoding (deterministic);
    ``seed`` seeds sampling (``torch.manual_seed``); ``stop``: strings that end the text (the
    stop string itself is not returned)."""

    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()


@runtime_checkable
class Generator(Protocol):
    """Stage protocol: chat messages ``[{"role": "system"|"user"|"assistant", "content": str}]``
    -> text. ``"".join(stream(m, o)) == generate(m, o)`` for temperature 0."""

    name: str

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions) -> str: ...

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...



@runtime_checkable
class TokenScorer(Protocol):
    """Scores candidate continuations of the assistant's reply by log-likelihood: the contract
    span answers need (any runtime that implements it gets span answers).
    See :meth:`rag.generation.transformers.TransformersGenerator.token_logprobs` for the row
    format ``(ends, token_logp, end_logp)``."""

    def token_logprobs(
        self, messages: list[dict[str, str]], texts: Sequence[str], prefix: str = "", end_text: str | None = None,
        batch_size: int = 48, top_first: int | None = None, first_bonus: Sequence[float] | None = None,
    ) -> list[tuple[list[int], list[float], list[float]] | None]: ...

    def score_continuations(self, messages: list[dict[str, str]], candidates: Sequence[str], prefix: str = "") -> list[float]: ...


def plan_packs(order: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Group the texts ``order`` names (in that order) into packs of at most ``max_tokens``
    tokens (``lengths[i]``: tokens of text i; a longer text is a pack alone): the sequences
    packed scoring runs, one model call each."""
    packs: list[list[int]] = [[]]
    size = 0
    for i in order:
        n = lengths[i]
        if packs[-1] and size + n > max_tokens:
            packs.append([])
            size = 0
        packs[-1].append(i)
        size += n
    return [p for p in packs if p]


def _apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop string; returns (text, stopped)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut], cut < len(text)


def _stream_with_stop(pieces: Iterator[str], stop: Sequence[str]) -> Iterator[str]:
    """Re-chunk a piece stream so that no stop string (or a prefix still able to become one) is
    emitted; the joined output equals ``_apply_stop("".join(pieces), stop)[0]``."""
    stop = [s for s in stop if s]
    if not stop:
        yield from pieces
        return
    held = ""
    for piece in pieces:
        held += piece
        text, stopped = _apply_stop(held, stop)
        if stopped:
            if text:
                yield text
            return
        # keep back the longest suffix that is a prefix of some stop string
        keep = 0
        for s in stop:
            for k in range(min(len(s) - 1, len(held)), 0, -1):
                if held.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        out, held = held[: len(held) - keep], held[len(held) - keep :]
        if out:
            yield out
    if held:
        yield held

