"""What crosses the gateway's upstream boundary in headers, and how bodies are decoded."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping

from ..errors import GatewayError

# Upstream response headers worth passing to the client (rate limits, retry hints, ids).
PASS_HEADERS = ("retry-after", "retry-after-ms", "x-request-id")
PASS_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def passed_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers.items():
        low = name.lower()
        if low in PASS_HEADERS or low.startswith(PASS_PREFIXES):
            out.append((low if low != "x-request-id" else "x-upstream-request-id", value))
    return out


def encode_headers(extra: Iterable[tuple[str, str]] | None) -> bytes:
    """Header lines, each ending in CRLF; a line break inside a name or value is refused."""
    if not extra:
        return b""
    lines = []
    for name, value in extra:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise GatewayError(502, f"upstream header {name!r} holds a line break")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


def body_decoder(headers: Mapping[str, str]) -> zlib._Decompress | None:
    coding = headers.get("content-encoding", "").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj()
    return None
