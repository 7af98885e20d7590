"""Model-free generators: :class:`ExtractiveGenerator` (the answerer returns the best supporting
sentences) and :class:`EchoGenerator` (deterministic fake for tests)."""

from __future__ import annotations

import re
from typing import Iterator

from .base import GenerationOptions, _apply_stop, _stream_with_stop


class ExtractiveGenerator:
    """No model. :class:`rag.answering.GroundedAnswerer` answers with the best supporting
    sentence(s) of the retrieved chunks; called directly, this returns the first sentence of the
    first numbered source with its ``[1]`` marker. ``count_tokens`` counts whitespace words."""

    name = "extractive"

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> str:
        return EchoGenerator(None).generate(messages, options)

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[str]:
        yield from EchoGenerator(None).stream(messages, options)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


_SOURCE_RE = re.compile(r"^\[(\d+)\][^\n]*\n(.*?)(?=^\[\d+\]|\Z)", re.S | re.M)


class EchoGenerator:
    """Deterministic fake for tests. Returns ``answer`` when given (a string, or a callable
    ``messages -> str``), else the first sentence of the first ``[n] title`` source block of the
    last user message followed by ``[n]``. Streams word by word. Tokens = whitespace words."""

    name = "echo"

    def __init__(self, answer=None):
        self.answer = answer
        self.calls: list[list[dict[str, str]]] = []

    def _text(self, messages: list[dict[str, str]]) -> str:
        self.calls.append(list(messages))
        if callable(self.answer):
            return self.answer(messages)
        if self.answer is not None:
            return str(self.answer)
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        m = _SOURCE_RE.search(user)
        if not m:
            return "I don't know."
        body = m.group(2).strip()
        first = re.split(r"(?<=[.!?])\s+", body, maxsplit=1)[0]
        return f"{first} [{m.group(1)}]"

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> str:
        return _apply_stop(self._text(messages), (options or GenerationOptions()).stop)[0]

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[str]:
        text = self._text(messages)
        pieces = re.findall(r"\S+\s*|\s+", text)
        yield from _stream_with_stop(iter(pieces), (options or GenerationOptions()).stop)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

