"""The Anthropic Messages provider: the adapter and its pure translations."""

from .adapter import Anthropic

__all__ = ["Anthropic"]
