"""Credentials: which headers carry them, and keeping them out of logs, stores and errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Config

# Every header the gateway accepts a client's or a provider's key in.
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")


def client_key(headers: Any) -> str | None:
    """The client's key from the first credential header it sent ("Bearer " dropped)."""
    for name in CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value:
            return str(value).split()[-1]
    return None


def configured_secrets(config: Config) -> list[str]:
    """Every configured credential: never stored or shown, whatever the content policy."""
    found: list[str] = []
    for provider in config.providers.values():
        key = getattr(provider, "api_key", None)
        if key:
            found.append(key)
        for name, value in provider.headers.items():
            if name.lower() in CREDENTIAL_HEADERS:
                found.append(value)
                found.append(value.split()[-1])
    return found


def safe_url(url: str) -> str:
    """A URL fit to print: any password in it replaced by `***`."""
    return _USERINFO.sub(_hide_password, url)


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://)([^@/]*)@")


def _hide_password(m: re.Match[str]) -> str:
    user, _, password = m.group(2).partition(":")
    return f"{m.group(1)}{user}:***@" if password or not user else f"{m.group(1)}***@"


class SecretMask:
    """Removes known secrets (provider keys, the caller's own key) from any stored text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        found = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, found))) if found else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def __call__(self, text: str, extra: str | None = None) -> str:
        if self._pattern is not None:
            text = self._pattern.sub("[SECRET]", text)
        if extra and len(extra) >= 4 and extra in text:
            text = text.replace(extra, "[SECRET]")
        return text

    def error(self, exc: Any) -> None:
        """Mask the secrets an upstream echoed in a GatewayError's message and body."""
        if self._pattern is None:
            return
        exc.message = self(exc.message)
        exc.args = (exc.message,)
        body = exc._body
        if body is not None:
            text = body.decode("utf-8", "replace")
            masked = self(text)
            if masked != text:
                exc._body = masked.encode()
