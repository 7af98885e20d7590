"""Generator registry: :func:`make_generator` builds the configured backend."""

from __future__ import annotations

from ..config import GenerationConfig
from ..errors import ConfigError
from .base import Generator
from .extractive import EchoGenerator, ExtractiveGenerator
from .openai import OpenAICompatibleGenerator
from .local import LocalGenerator


def make_generator(config: GenerationConfig) -> Generator:
    """Build the configured generator (cheap: models load on first use).

    ``config.backend``: "transformers" (``config.model`` on ``config.runtime``), "extractive", "openai"
    (``config.base_url``, ``config.model``, ``config.api_key_env``, ``config.timeout_s``) or "echo".
    Raises ConfigError for an unknown backend or a missing base_url.
    """
    b = config.backend
    if b == "transformers":
        return LocalGenerator(config.model, allow_pickle=config.allow_pickle, runtime=config.runtime)
    if b == "extractive":
        return ExtractiveGenerator()
    if b == "openai":
        return OpenAICompatibleGenerator(config.base_url or "", config.model, config.api_key_env, config.timeout_s)
    if b == "echo":
        return EchoGenerator()
    raise ConfigError(f"generation.backend must be transformers, extractive, openai or echo, not {b!r}")
