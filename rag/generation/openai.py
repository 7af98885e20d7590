"""Remote generator: :class:`OpenAICompatibleGenerator`, any OpenAI-compatible chat endpoint
(OpenAI, llama.cpp server, vLLM, Ollama); stdlib ``urllib`` only."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Iterator

from ..errors import ConfigError, GenerationError
from .base import GenerationOptions, _apply_stop, _stream_with_stop


class OpenAICompatibleGenerator:
    """An OpenAI-compatible chat endpoint: ``POST {base_url}/chat/completions``.

    Uses stdlib ``urllib`` only. The API key is read from the environment variable
    ``api_key_env`` at call time (absent is fine for local servers) and sent as
    ``Authorization: Bearer``. Streaming reads server-sent events (``data: {json}`` lines, ending
    with ``data: [DONE]``) per the OpenAI chat completions API. HTTP errors, timeouts
    (``timeout_s`` seconds) and malformed replies raise GenerationError with a one-line message.
    ``count_tokens`` is an estimate (whitespace words x 4/3) since the server's tokenizer is
    unknown.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0):
        if not base_url:
            raise ConfigError("generation.base_url is required for the openai backend")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)

    def _request(self, messages: list[dict[str, str]], options: GenerationOptions, stream: bool):
        body: dict = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": int(options.max_new_tokens),
            "temperature": float(options.temperature),
            "seed": int(options.seed),
            "stream": stream,
        }
        if options.stop:
            body["stop"] = list(options.stop)[:4]
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream" if stream else "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            return urllib.request.urlopen(req, timeout=self.timeout_s)  # noqa: S310 - user-configured URL
        except urllib.error.HTTPError as e:
            detail = ""
            try:
                detail = e.read(300).decode("utf-8", "replace").strip().splitlines()[0]
            except Exception:  # noqa: BLE001
                pass
            raise GenerationError(f"{self.base_url}: HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")) from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise GenerationError(f"{self.base_url}: request failed ({reason})") from None

    def generate(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> str:
        """The first choice's ``message.content``, cut at stop strings."""
        options = options or GenerationOptions()
        resp = self._request(messages, options, stream=False)
        try:
            with resp:
                data = json.loads(resp.read().decode("utf-8"))
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
            raise GenerationError(f"{self.base_url}: malformed reply ({type(e).__name__})") from None
        return _apply_stop(text, options.stop)[0]

    def stream(self, messages: list[dict[str, str]], options: GenerationOptions | None = None) -> Iterator[str]:
        """``choices[0].delta.content`` pieces from the SSE stream."""
        options = options or GenerationOptions()
        resp = self._request(messages, options, stream=True)

        def pieces() -> Iterator[str]:
            try:
                with resp:
                    for raw in resp:
                        line = raw.decode("utf-8").strip()
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            return
                        data = json.loads(payload)
                        if "error" in data:
                            raise GenerationError(f"{self.base_url}: {str(data['error'])[:200]}")
                        choices = data.get("choices") or []
                        if choices:
                            piece = (choices[0].get("delta") or {}).get("content")
                            if piece:
                                yield piece
            except GenerationError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise GenerationError(f"{self.base_url}: malformed stream event ({type(e).__name__})") from None
            except (TimeoutError, OSError) as e:
                raise GenerationError(f"{self.base_url}: stream failed ({e})") from None

        yield from _stream_with_stop(pieces(), options.stop)

    def count_tokens(self, text: str) -> int:
        return (len(text.split()) * 4 + 2) // 3

