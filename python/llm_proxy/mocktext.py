"""Deterministic reply text and vectors, shared by the mock provider and the mock upstream."""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

_WORD_TEXT = (
    "the a an of to and in for on with as by at from that this it is was are be can will "
    "model token stream cache gateway request answer prompt reply message latency router "
    "quick quiet bright steady simple careful gentle rapid clear early later often never "
    "river mountain garden window market signal harbor lantern meadow valley forest ocean "
    "build carry follow gather listen measure notice offer return settle travel wander "
    "always perhaps rather indeed still again around between during under over through "
    "small large warm cold green silver golden hidden open narrow distant ancient modern "
    "people village city engine letter story number pattern question moment season journey"
)
_WORDS = tuple(_WORD_TEXT.split())


def _stream(seed: bytes, n: int) -> bytes:
    return hashlib.shake_256(seed).digest(n)


def _sentence(i: int) -> str:
    raw = _stream(b"sentence-%d" % i, 16)
    words = [_WORDS[b % len(_WORDS)] for b in raw[1 : 5 + raw[0] % 7]]
    if len(words) > 4 and raw[0] % 3 == 0:
        words[2] += ","
    return " ".join(words).capitalize() + "."


# Replies are built from whole sentences made once, so a new seed costs a few joins.
_SENTENCES = tuple(_sentence(i) for i in range(256))


def _compose(raw: bytes) -> str:
    target, picked, count = 20 + raw[0] % 31, [], 0
    for b in raw[1:]:
        picked.append(_SENTENCES[b])
        count += _SENTENCES[b].count(" ") + 1
        if count >= target:
            break
    return " ".join(picked)


@lru_cache(maxsize=1)
def _replies() -> tuple[str, ...]:
    # A fixed pool of replies, so a new seed costs one hash, not a reply's worth of work.
    return tuple(_compose(_stream(b"reply-%d" % i, 17)) for i in range(4096))


@lru_cache(maxsize=4096)
def _first_words(text: str, n: int) -> str:
    return " ".join(text.split(" ")[: max(n, 0)])


def warm() -> None:
    """Build the table of replies now, so the first reply does not pay for it."""
    _replies()


def reply_text(seed: bytes, max_tokens: int | None = None) -> str:
    """Pseudo-English words from the seed: 20-60 of them, or the first `max_tokens` words."""
    digest = hashlib.blake2b(seed, digest_size=8).digest()
    full = _replies()[int.from_bytes(digest, "little") % 4096]
    if max_tokens is None or max_tokens > full.count(" "):
        return full
    return _first_words(full, max_tokens)


def split_chunks(text: str, n: int) -> list[str]:
    """Split text into at most n non-empty pieces that concatenate back to exactly text."""
    if not text or n <= 1:
        return [text] if text else []
    words = text.split(" ")
    if len(words) >= n:
        # Group whole words, the space travelling with the following word as in real tokens.
        pieces = [words[0]] + [" " + w for w in words[1:]]
        bounds = [len(pieces) * i // n for i in range(n + 1)]
        return ["".join(pieces[bounds[i] : bounds[i + 1]]) for i in range(n)]
    n = min(n, len(text))
    bounds = [len(text) * i // n for i in range(n + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(n)]


def embedding(seed: bytes, dims: int = 8) -> list[float]:
    """A deterministic vector of unit length."""
    raw = _stream(seed, 2 * dims)
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "little") / 32767.5 - 1.0 for i in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]
