"""What a call costs: one price table for the log's cost column, budgets and routing by cost.

The shipped model table (`routing/model_table.json`, from LiteLLM's price file, MIT) gives
prices per upstream model; `pricing.models` in the config overrides and extends it (and the
older `logging.prices`, which `pricing.models` wins over); a deployment's own `price` wins
for that deployment. Dated snapshots (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`) and
`-latest` names cost what their family costs when the table has no entry of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import Config
from .config import Price as PriceConfig
from .routing.model_table import all_models, model_facts


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    # Where the price came from: `config`, `deployment` or `table`.
    source: str = "table"


# Models LiteLLM's current price file no longer lists, still served by their providers.
RETIRED: dict[str, Price] = {
    "o1-mini": Price(1.10, 4.40, 0.55),
    "claude-opus-4-1": Price(15.00, 75.00, 1.50),
    "claude-opus-4": Price(15.00, 75.00, 1.50),
    "claude-sonnet-4": Price(3.00, 15.00, 0.30),
    "claude-3-7-sonnet": Price(3.00, 15.00, 0.30),
    "claude-3-5-sonnet": Price(3.00, 15.00, 0.30),
    "claude-3-5-haiku": Price(0.80, 4.00, 0.08),
    "claude-3-haiku": Price(0.25, 1.25, 0.03),
    "claude-3-opus": Price(15.00, 75.00, 1.50),
}

_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")
_REMEMBERED = 1024


def _table_price(model: str) -> Price | None:
    facts = model_facts(model)
    if facts is not None and facts.input is not None:
        return Price(facts.input, facts.output or 0.0, facts.cached_input)
    return RETIRED.get(model)


class PriceTable:
    """Prices by model name: the config's entries first, then the shipped table."""

    def __init__(self, overrides: dict[str, PriceConfig] | None = None) -> None:
        self.overrides = {
            name: Price(p.input, p.output, p.cached_input, "config")
            for name, p in (overrides or {}).items()
        }
        # The price each (deployment model, requested model) pair found: looked up once.
        self._found: dict[tuple[str | None, ...], Price | None] = {}

    @classmethod
    def from_config(cls, config: Config) -> PriceTable:
        merged = dict(config.logging.prices)
        merged.update(config.pricing.models)
        table = cls(merged)
        for model in config.models.values():
            for deployment in model.deployments:
                if deployment.price is not None:
                    p = deployment.price
                    table.overrides.setdefault(
                        deployment.model, Price(p.input, p.output, p.cached_input, "deployment")
                    )
        return table

    def _one(self, model: str) -> Price | None:
        price = self.overrides.get(model)
        if price is None:
            price = _table_price(model)
        if price is None:
            family = _SNAPSHOT.sub("", model)
            if family != model:
                price = self.overrides.get(family) or _table_price(family)
        return price

    def find(self, *models: str | None) -> Price | None:
        """The price of the first of `models` that is known."""
        for model in models:
            if model:
                price = self._one(model)
                if price is not None:
                    return price
        return None

    def lookup(self, models: tuple[str | None, ...]) -> Price | None:
        """`find`, remembered per tuple of names (bounded: made-up names are looked up anew)."""
        try:
            return self._found[models]
        except KeyError:
            price = self.find(*models)
            if len(self._found) < _REMEMBERED:
                self._found[models] = price
            return price

    def cost(
        self,
        models: tuple[str | None, ...],
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
    ) -> float | None:
        """USD for the tokens, or None when the price is unknown."""
        price = self.lookup(models)
        if price is None:
            return None
        return price_of(price, prompt_tokens, completion_tokens, cached_tokens)

    def known_models(self) -> list[str]:
        """Every name with a price: the config's and the shipped table's."""
        names = set(self.overrides) | set(RETIRED)
        names.update(name for name, facts in all_models().items() if facts.input is not None)
        return sorted(names)


def price_of(price: Price, prompt_tokens: int, completion_tokens: int, cached: int = 0) -> float:
    cached = min(cached, prompt_tokens) if price.cached_input is not None else 0
    total = (
        (prompt_tokens - cached) * price.input
        + cached * (price.cached_input or 0.0)
        + completion_tokens * price.output
    )
    return total / 1_000_000


def price_rows(config: Config, everything: bool = False) -> list[dict[str, object]]:
    """The effective price of each configured model (and, with `everything`, of every model
    the table or the config prices), as `llm-proxy prices` shows it."""
    table = PriceTable.from_config(config)
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    for name, model in config.models.items():
        for deployment in model.routes():
            price = table.find(deployment.model, name)
            facts = model_facts(deployment.model)
            rows.append(_row(name, deployment.model, price, facts))
            seen.add(deployment.model)
    if everything:
        for name in table.known_models():
            if name not in seen:
                rows.append(_row(None, name, table.find(name), model_facts(name)))
    return rows


def _row(name: str | None, upstream: str, price: Price | None, facts: object) -> dict[str, object]:
    return {
        "model": name,
        "upstream_model": upstream,
        "input_per_mtok": price.input if price else None,
        "output_per_mtok": price.output if price else None,
        "cached_input_per_mtok": price.cached_input if price else None,
        "source": price.source if price else None,
        "context_window": getattr(facts, "context_window", None),
        "max_output_tokens": getattr(facts, "max_output_tokens", None),
    }


def render_prices(rows: list[dict[str, object]], unknown: str) -> str:
    def money(value: object) -> str:
        return "-" if value is None else f"{value:g}"

    titles = ("model", "upstream model", "input $", "output $", "cached $", "source", "context")
    widths = (22, 34, 9, 9, 9, 10, 9)
    lines = [
        "USD per million tokens",
        "  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)),
    ]
    for r in rows:
        cells = (
            str(r["model"] or "-"),
            str(r["upstream_model"]),
            money(r["input_per_mtok"]),
            money(r["output_per_mtok"]),
            money(r["cached_input_per_mtok"]),
            str(r["source"] or "NO PRICE"),
            str(r["context_window"] or "-"),
        )
        lines.append("  ".join(c[:w].ljust(w) for c, w in zip(cells, widths, strict=True)))
    if any(r["source"] is None for r in rows):
        action = "refused" if unknown == "reject" else "counted as free"
        lines.append(
            f"models with NO PRICE: budgeted calls to them are {action} (pricing.unknown_model)"
        )
    return "\n".join(lines)
