"""Virtual keys, teams and projects: the store, the in-process table, the authenticate stage."""

from __future__ import annotations

import ipaddress
import os

from ..auth_config import DeclaredGroup
from ..config import Config, ConfigError
from ..limits.spec import Limits
from .migrations import KeyStoreError
from .model import KeyRecord, TeamRecord
from .stage import Authenticate
from .store import KeyStore
from .table import KeyTable

__all__ = [
    "Authenticate",
    "KeyService",
    "KeyStore",
    "KeyStoreError",
    "KeyTable",
    "admin_key",
    "check_exposure",
    "prepare_store",
    "store_url",
]


def admin_key(config: Config) -> str | None:
    """The admin API's key: `auth.admin_key`, else LLM_PROXY_ADMIN_KEY; None turns it off."""
    return config.auth.admin_key or os.environ.get("LLM_PROXY_ADMIN_KEY") or None


def store_url(config: Config) -> str:
    return config.auth.store or config.logging.store


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: Config, host: str) -> None:
    """Refuse an open gateway (auth.mode none) on a non-loopback address unless allowed."""
    auth = config.auth
    if auth.mode == "none" and not is_loopback(host) and not auth.allow_anonymous_non_loopback:
        raise ConfigError(
            f"auth.mode is `none` but the gateway would listen on {host}, reachable by anyone: "
            "set auth.mode: keys, or auth.allow_anonymous_non_loopback: true - at `$.auth.mode`"
        )


def needs_store(config: Config) -> bool:
    """Keys are checked, or the admin API is on: the key store is used."""
    return config.auth.mode == "keys" or bool(admin_key(config) and config.server.admin_port)


def prepare_store(config: Config) -> None:
    """Create or upgrade the key schema before the workers start; KeyStoreError when the
    database cannot be used (unreachable, or a schema newer than this gateway knows)."""
    if not needs_store(config):
        return
    store = KeyStore(store_url(config))
    try:
        store.migrate()
    finally:
        store.close()


def _declared(
    config: Config,
) -> tuple[list[KeyRecord], dict[str, TeamRecord], dict[str, TeamRecord]]:
    keys = [
        KeyRecord(
            id=k.id,
            secret_sha256=k.secret_sha256.lower(),
            alias=k.alias,
            team=k.team,
            project=k.project,
            allowed_models=k.allowed_models,
            allowed_endpoints=k.allowed_endpoints,
            expires_at=k.expires_at.timestamp() if k.expires_at is not None else None,
            blocked=k.blocked,
            tags=k.tags,
            metadata=k.metadata,
            limits=_limits(k.limits),
            budgets=k.budgets,
            source="config",
        )
        for k in config.auth.keys
    ]
    teams = {name: _group(name, t) for name, t in config.auth.teams.items()}
    projects = {name: _group(name, p) for name, p in config.auth.projects.items()}
    return keys, teams, projects


def _limits(limits: Limits | None) -> Limits | None:
    # `limits: {}` in the YAML is no limits, as it is through the admin API.
    return None if limits is None or limits.empty else limits


def _group(name: str, group: DeclaredGroup) -> TeamRecord:
    return TeamRecord(
        name=name,
        allowed_models=group.allowed_models,
        metadata=group.metadata,
        limits=_limits(group.limits),
        budgets=group.budgets,
    )


class KeyService:
    """One worker's keys: the store (when keys are on or the admin API is), the table, the
    stage. `start` migrates and loads (blocking, at worker start); `stop` ends the threads."""

    def __init__(self, config: Config) -> None:
        auth = config.auth
        self.config = config
        self.admin_key = admin_key(config)
        self.store = KeyStore(store_url(config)) if needs_store(config) else None
        keys, teams, projects = _declared(config)
        if self.store is not None:
            self.store.declared = {"teams": frozenset(teams), "projects": frozenset(projects)}
        self.table = KeyTable(
            self.store,
            keys,
            teams,
            projects,
            poll_interval_s=auth.poll_interval_s,
            redis_url=auth.redis_url,
            channel=auth.redis_channel,
        )
        self.stage = Authenticate(self.table) if auth.mode == "keys" else None

    def start(self) -> None:
        if self.store is not None:
            self.store.migrate()
        self.table.load()
        self.table.start()

    def stop(self) -> None:
        self.table.stop()
        if self.store is not None:
            self.store.close()
