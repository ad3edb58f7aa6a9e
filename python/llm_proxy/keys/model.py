"""Keys, teams and projects as stored, and the shape of a virtual key's text."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

import msgspec

from ..limits.spec import Budget, Limits, to_builtins

KEY_PREFIX = "sk-lp-"
ENDPOINTS = ("chat", "completions", "embeddings")


class KeyRecord(msgspec.Struct, kw_only=True):
    """A virtual key as stored: only the SHA-256 of its secret, never the secret."""

    id: str
    secret_sha256: str
    alias: str | None = None
    team: str | None = None
    project: str | None = None
    # Exact names and globs (`gpt-4o*`); empty means every model.
    allowed_models: list[str] = []
    # Endpoint names (chat, completions, embeddings); empty means every endpoint.
    allowed_endpoints: list[str] = []
    expires_at: float | None = None
    blocked: bool = False
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    # What the limits engine enforces for this key (docs/limits.md); None/[] is none.
    limits: Limits | None = None
    budgets: list[Budget] = []
    created_at: float = 0.0
    updated_at: float = 0.0
    last_used_at: float | None = None
    # After a rotation the old secret keeps working until `previous_expires_at`.
    previous_sha256: str | None = None
    previous_expires_at: float | None = None
    # Declared in the YAML (read-only through the admin API).
    source: str = "store"

    def public(self) -> dict[str, Any]:
        """The fields the admin API and CLI show (no hashes)."""
        data = msgspec.structs.asdict(self)
        del data["secret_sha256"]
        del data["previous_sha256"]
        data["limits"] = to_builtins(self.limits)
        data["budgets"] = to_builtins(self.budgets)
        return data


class TeamRecord(msgspec.Struct, kw_only=True):
    """A team or a project: a name, the models its keys may use, its limits and budgets
    (shared by all its keys), and metadata."""

    name: str
    allowed_models: list[str] = []
    metadata: dict[str, Any] = {}
    limits: Limits | None = None
    budgets: list[Budget] = []
    created_at: float = 0.0
    updated_at: float = 0.0

    def public(self) -> dict[str, Any]:
        data = msgspec.structs.asdict(self)
        data["limits"] = to_builtins(self.limits)
        data["budgets"] = to_builtins(self.budgets)
        return data


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(public id, secret, the whole key `sk-lp-<id>-<secret>`)."""
    public_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return public_id, secret, f"{KEY_PREFIX}{public_id}-{secret}"


def split_key(text: str) -> tuple[str, str] | None:
    """`sk-lp-<id>-<secret>` -> (id, secret), or None when it is not shaped like a key."""
    if not text.startswith(KEY_PREFIX):
        return None
    public_id, sep, secret = text[6:].partition("-")
    if not sep or not public_id or not secret:
        return None
    return public_id, secret


def now() -> float:
    return time.time()
