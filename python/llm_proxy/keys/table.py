"""The in-process key table: what the authenticate stage reads on every call.

Built from the store (plus the keys declared in the YAML) and replaced whole when the store's
version changes: a thread polls the version every `poll_interval_s`, and wakes at once on a
Redis message when Redis is configured. The hot path only reads a dict.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..limits.spec import Budget, Limits
from .model import KeyRecord, TeamRecord
from .store import KeyStore, Snapshot

log = logging.getLogger("llm_proxy.keys")

_TOUCH_INTERVAL_S = 5.0


def _matcher(patterns: list[str]) -> tuple[frozenset[str], tuple[str, ...]]:
    exact = frozenset(p for p in patterns if not any(c in p for c in "*?["))
    globs = tuple(p for p in patterns if any(c in p for c in "*?["))
    return exact, globs


@dataclass(slots=True)
class KeyEntry:
    """One usable key, ready for the check: digests as bytes, allow-lists compiled."""

    record: KeyRecord
    id: str
    digest: bytes
    previous: bytes | None
    previous_until: float
    expires_at: float
    blocked: bool
    team: str | None
    project: str | None
    # The key's own limits and budgets, and those of its team and its project (read from
    # their records when the table is built; None / [] when there are none or no record).
    limits: Limits | None
    budgets: list[Budget]
    team_limits: Limits | None
    team_budgets: list[Budget]
    project_limits: Limits | None
    project_budgets: list[Budget]
    # Each list must allow the model (the key's own, its team's, its project's): an
    # intersection. An empty list allows every model, so it is left out.
    model_lists: tuple[tuple[frozenset[str], tuple[str, ...]], ...]
    endpoints: frozenset[str] | None
    _verdicts: dict[str, bool] = field(default_factory=dict)

    def allows(self, model: str) -> bool:
        verdict = self._verdicts.get(model)
        if verdict is None:
            verdict = all(
                model in exact or any(fnmatch.fnmatchcase(model, g) for g in globs)
                for exact, globs in self.model_lists
            )
            if len(self._verdicts) < 4096:
                self._verdicts[model] = verdict
        return verdict

    def allowed_models(self, names: Iterable[str]) -> list[str]:
        return [name for name in names if self.allows(name)]


def build_entries(
    keys: Iterable[KeyRecord], teams: dict[str, TeamRecord], projects: dict[str, TeamRecord]
) -> dict[str, KeyEntry]:
    entries: dict[str, KeyEntry] = {}
    for key in keys:
        lists = [key.allowed_models]
        team = teams.get(key.team) if key.team else None
        if team is not None:
            lists.append(team.allowed_models)
        project = projects.get(key.project) if key.project else None
        if project is not None:
            lists.append(project.allowed_models)
        entries[key.id] = KeyEntry(
            record=key,
            id=key.id,
            digest=bytes.fromhex(key.secret_sha256),
            previous=bytes.fromhex(key.previous_sha256) if key.previous_sha256 else None,
            previous_until=key.previous_expires_at or 0.0,
            expires_at=key.expires_at if key.expires_at is not None else math.inf,
            blocked=key.blocked,
            team=key.team,
            project=key.project,
            limits=key.limits,
            budgets=key.budgets,
            team_limits=team.limits if team is not None else None,
            team_budgets=team.budgets if team is not None else [],
            project_limits=project.limits if project is not None else None,
            project_budgets=project.budgets if project is not None else [],
            model_lists=tuple(_matcher(m) for m in lists if m),
            endpoints=frozenset(key.allowed_endpoints) if key.allowed_endpoints else None,
        )
    return entries


class KeyTable:
    """Keys by public id, kept current with the store by a background thread."""

    def __init__(
        self,
        store: KeyStore | None,
        declared_keys: list[KeyRecord],
        declared_teams: dict[str, TeamRecord],
        declared_projects: dict[str, TeamRecord],
        *,
        poll_interval_s: float = 0.25,
        redis_url: str | None = None,
        channel: str = "llm-proxy:keys",
    ) -> None:
        self.store = store
        self.declared_keys = declared_keys
        self.declared_teams = declared_teams
        self.declared_projects = declared_projects
        self.poll_interval_s = poll_interval_s
        self.redis_url = redis_url
        self.channel = channel
        self.entries: dict[str, KeyEntry] = {}
        # The teams and projects the entries were built from (stored merged with declared).
        self.teams: dict[str, TeamRecord] = dict(declared_teams)
        self.projects: dict[str, TeamRecord] = dict(declared_projects)
        self.version = -1
        # Public id -> when it was last used; written by the stage, flushed by the thread.
        self.used: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._publisher: object | None = None
        self._lock = threading.Lock()
        self.reloads = 0

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the store and replace the table (blocking)."""
        with self._lock:
            snapshot = Snapshot(0, [], {}, {}) if self.store is None else self.store.snapshot()
            self._install(snapshot)

    def _install(self, snapshot: Snapshot) -> None:
        teams = {**snapshot.teams, **self.declared_teams}
        projects = {**snapshot.projects, **self.declared_projects}
        stored = {k.id: k for k in snapshot.keys}
        for key in self.declared_keys:  # the YAML wins over a stored key of the same id
            stored[key.id] = key
        # One assignment: a call reads either the old table or the new one, never a mix.
        self.entries = build_entries(stored.values(), teams, projects)
        self.teams = teams
        self.projects = projects
        self.version = snapshot.version
        self.reloads += 1

    def refresh(self) -> bool:
        """Reload if the store's version moved; whether it did (blocking)."""
        if self.store is None:
            return False
        if self.store.version() == self.version:
            return False
        self.load()
        return True

    # -- keeping current -------------------------------------------------------------------

    def start(self) -> None:
        """Start the poll thread (and the Redis listener); call inside the worker."""
        if self.store is None or self._threads:
            return
        self._stop.clear()
        poller = threading.Thread(target=self._poll, name="llm-proxy-keys", daemon=True)
        self._threads.append(poller)
        if self.redis_url:
            listener = threading.Thread(
                target=self._listen, name="llm-proxy-keys-redis", daemon=True
            )
            self._threads.append(listener)
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self._flush_used()

    def changed(self) -> None:
        """After a change made here: reload now, and tell the other instances (blocking)."""
        self.refresh()
        if not self.redis_url:
            return
        try:
            import redis

            client = self._publisher
            if client is None:
                client = self._publisher = redis.Redis.from_url(
                    self.redis_url, socket_timeout=1, socket_connect_timeout=1
                )
            client.publish(self.channel, str(self.version))  # type: ignore[attr-defined]
        except Exception as exc:  # the version poll still carries the change
            log.warning("could not publish a key change on Redis: %s", exc)

    def _poll(self) -> None:
        failing = False
        last_touch = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
                if time.monotonic() - last_touch >= _TOUCH_INTERVAL_S:
                    last_touch = time.monotonic()
                    self._flush_used()
                if failing:
                    log.warning("the key store answers again")
                failing = False
            except Exception as exc:
                # Serve the last table we have; say so once per outage.
                if not failing:
                    log.warning("cannot refresh the key table (serving the last one): %s", exc)
                failing = True

    def _flush_used(self) -> None:
        used, self.used = self.used, {}
        if used and self.store is not None:
            try:
                self.store.touch(used)
            except Exception as exc:
                log.debug("could not record key use: %s", exc)

    def _listen(self) -> None:
        import redis

        while not self._stop.is_set():
            try:
                client = redis.Redis.from_url(
                    self.redis_url or "", socket_timeout=5, socket_connect_timeout=2
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    if pubsub.get_message(timeout=0.5) is not None:
                        self._wake.set()
                pubsub.close()
                client.close()
            except Exception as exc:
                log.debug("key change listener on Redis: %s", exc)
                self._stop.wait(1.0)
