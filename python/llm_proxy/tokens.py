"""Token counting for the log and for limits: exact and offline for OpenAI's encodings."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from . import _core
from .calls import Call

_any = msgspec.json.Decoder()


def encoding(model: str) -> str:
    try:
        return str(_core.encoding_for_model(model))
    except Exception:
        return "cl100k_base"


def load_encodings(models: Iterable[str]) -> None:
    """Load the tokenizers that counting `models`' tokens needs, now rather than at the first
    call that counts (a load stalls the event loop, and every call in flight with it).
    """
    for name in {encoding(model) for model in models}:
        _core.count_tokens("warm", name)


def count_text(text: str, model: str) -> int:
    if not text:
        return 0
    return int(_core.count_tokens(text, encoding(model)))


def count_prompt(call: Call, model: str) -> int:
    if call.endpoint == "chat":
        return int(_core.count_chat_tokens(call.prompt_json, model))
    try:
        value = _any.decode(call.prompt_json)
    except msgspec.DecodeError:
        return 0
    if isinstance(value, str):
        return count_text(value, model)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        total = 0
        for item in value:
            if isinstance(item, str):
                total += count_text(item, model)
            elif isinstance(item, list):
                total += len(item)
        return total
    return 0
