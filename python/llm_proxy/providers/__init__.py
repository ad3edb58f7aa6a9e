"""Providers: one module per upstream wire format, assembled here."""

from __future__ import annotations

from ..config import (
    AnthropicProvider,
    AzureProvider,
    MockProvider,
    OpenAIProvider,
    ProviderConfig,
)
from .base import Provider


def build_provider(name: str, config: ProviderConfig) -> Provider:
    """The adapter for one configured provider (its pool is created by `start()`)."""
    if isinstance(config, OpenAIProvider):
        from .openai import OpenAICompatible

        return OpenAICompatible(name, config)
    if isinstance(config, AzureProvider):
        from .openai import Azure

        return Azure(name, config)
    if isinstance(config, AnthropicProvider):
        from .anthropic import Anthropic

        return Anthropic(name, config)
    if isinstance(config, MockProvider):
        from .mock import Mock

        return Mock(name, config)
    raise TypeError(f"unknown provider config {type(config).__name__}")


__all__ = ["Provider", "build_provider"]
