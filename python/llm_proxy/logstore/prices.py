"""What a call costs: a built-in price table, overridden and extended by `logging.prices`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config import Price as PriceConfig


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None


# Public list prices (USD per 1M tokens), standard tier.
BUILT_IN: dict[str, Price] = {
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "o1": Price(15.00, 60.00, 7.50),
    "o1-mini": Price(1.10, 4.40, 0.55),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "text-embedding-ada-002": Price(0.10, 0.0),
    # Anthropic: cached_input is the cache-read price.
    "claude-opus-4-1": Price(15.00, 75.00, 1.50),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
    "claude-sonnet-4-5": Price(3.00, 15.00, 0.30),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
    "claude-haiku-4-5": Price(1.00, 5.00, 0.10),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    "claude-3-haiku": Price(0.25, 1.25, 0.03),
    "claude-3-opus": Price(15.00, 75.00, 1.50),
}

# Dated snapshots ("gpt-4o-mini-2024-07-18", "claude-3-5-sonnet-20241022") and "-latest"
# cost what their family costs.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


_REMEMBERED = 1024


class PriceTable:
    """Prices by model name; the config's entries win over the built-in ones."""

    def __init__(self, overrides: dict[str, PriceConfig] | None = None) -> None:
        self._prices = dict(BUILT_IN)
        # The price each (deployment model, requested model) pair found: looked up once.
        self._found: dict[tuple[str | None, ...], Price | None] = {}
        for name, p in (overrides or {}).items():
            self._prices[name] = Price(p.input, p.output, p.cached_input)

    def find(self, *models: str | None) -> Price | None:
        """The price of the first of `models` that is known (exactly, then without a date)."""
        for model in models:
            if not model:
                continue
            price = self._prices.get(model)
            if price is None:
                price = self._prices.get(_SNAPSHOT.sub("", model))
            if price is not None:
                return price
        return None

    def cost(
        self,
        models: tuple[str | None, ...],
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> float | None:
        """USD for the tokens, or None when the price is unknown."""
        try:
            price = self._found[models]
        except KeyError:
            price = self.find(*models)
            # Bounded: past that many pairs (names clients made up, say), prices are looked up
            # every time.
            if len(self._found) < _REMEMBERED:
                self._found[models] = price
        if price is None:
            return None
        cached = min(cached_tokens, prompt_tokens) if price.cached_input is not None else 0
        total = (
            (prompt_tokens - cached) * price.input
            + cached * (price.cached_input or 0.0)
            + completion_tokens * price.output
        )
        return total / 1_000_000
