"""The shipped model table: context windows and prices of the main providers' models.

Data: `model_table.json` beside this module, trimmed from LiteLLM's
`model_prices_and_context_window_backup.json` (MIT, notice in `MODEL_TABLE_LICENSE`). It is
read from the package, never fetched at run time.
"""

from __future__ import annotations

import functools
from importlib import resources

import msgspec


class ModelFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One upstream model: its context window and prices (USD per million tokens)."""

    provider: str
    mode: str
    context_window: int
    max_output_tokens: int | None = None
    input: float | None = None
    output: float | None = None
    cached_input: float | None = None


class _Table(msgspec.Struct):
    source: str
    models: dict[str, ModelFacts]


@functools.cache
def _models() -> dict[str, ModelFacts]:
    raw = resources.files(__package__).joinpath("model_table.json").read_bytes()
    return msgspec.json.decode(raw, type=_Table).models


def all_models() -> dict[str, ModelFacts]:
    """The whole table, by upstream model name."""
    return _models()


def model_facts(model: str) -> ModelFacts | None:
    """The table's entry for an upstream model name (`gpt-4`, `groq/llama-3.1-8b-instant`);
    a `provider/` prefix the table does not use is tried without it."""
    models = _models()
    found = models.get(model)
    if found is None and "/" in model:
        found = models.get(model.split("/", 1)[1])
    return found


def context_window(model: str) -> int | None:
    """Input tokens the upstream model takes, if the table knows it."""
    facts = model_facts(model)
    return facts.context_window if facts is not None else None
