"""The `auth` config section: who may call, and the keys declared in the YAML."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from .config_base import Section as _Section
from .limits.spec import Budget, Limits


class DeclaredKey(_Section):
    """A key declared in the YAML by the SHA-256 of its secret (`llm-proxy keys hash`)."""

    id: str
    secret_sha256: str
    alias: str | None = None
    team: str | None = None
    project: str | None = None
    allowed_models: list[str] = []
    allowed_endpoints: list[str] = []
    expires_at: datetime | None = None
    blocked: bool = False
    tags: list[str] = []
    metadata: dict[str, Any] = {}
    limits: Limits | None = None
    budgets: list[Budget] = []

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-fA-F]{64}", self.secret_sha256):
            raise ValueError("secret_sha256 must be 64 hex digits (llm-proxy keys hash KEY)")
        if not self.id or "-" in self.id:
            raise ValueError("id must be non-empty, without `-`")
        for endpoint in self.allowed_endpoints:
            if endpoint not in ("chat", "completions", "embeddings"):
                raise ValueError(f"unknown endpoint `{endpoint}` in allowed_endpoints")


class DeclaredGroup(_Section):
    """A team or project declared in the YAML."""

    allowed_models: list[str] = []
    metadata: dict[str, Any] = {}
    limits: Limits | None = None
    budgets: list[Budget] = []


class AuthConfig(_Section):
    """Who may call: virtual keys (`keys`) or anyone (`none`); see docs/keys.md."""

    mode: Literal["keys", "none"] = "none"
    # Guards the admin API; falls back to the LLM_PROXY_ADMIN_KEY environment variable.
    admin_key: str | None = None
    allow_anonymous_non_loopback: bool = False
    # Where keys live; the log store's database unless set.
    store: str | None = None
    # With Redis, key changes reach other instances at once (the version poll is the floor).
    redis_url: str | None = None
    redis_channel: str = "llm-proxy:keys"
    poll_interval_s: float = 0.25
    keys: list[DeclaredKey] = []
    teams: dict[str, DeclaredGroup] = {}
    projects: dict[str, DeclaredGroup] = {}

    def __post_init__(self) -> None:
        if not 0 < self.poll_interval_s <= 0.5:
            raise ValueError("auth.poll_interval_s must be in (0, 0.5]")
