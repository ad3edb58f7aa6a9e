"""The key store: keys, teams and projects in the log store's database (SQLite or PostgreSQL).

Every change adds one to `keys_state.version` in the same transaction; instances poll that
number to know when to reload their in-process table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from .fields import InvalidField
from .migrations import Execute, KeyStoreError, migrate
from .model import KeyRecord, TeamRecord, new_key, now, sha256_hex

GroupKind = Literal["teams", "projects"]

_json = msgspec.json.Encoder()
_KEY_COLUMNS = (
    "id",
    "secret_sha256",
    "previous_sha256",
    "previous_expires_at",
    "alias",
    "team",
    "project",
    "allowed_models",
    "allowed_endpoints",
    "expires_at",
    "blocked",
    "tags",
    "metadata",
    "limits",
    "budgets",
    "created_at",
    "updated_at",
    "last_used_at",
)
_JSON_COLUMNS = frozenset({"allowed_models", "allowed_endpoints", "tags", "metadata", "budgets"})
_GROUP_COLUMNS = (
    "name",
    "allowed_models",
    "metadata",
    "limits",
    "budgets",
    "created_at",
    "updated_at",
)


class NotFound(Exception):
    """No key, team or project with that id or name."""


class Conflict(Exception):
    """A team or project of that name exists already, or is still in use."""


class KeyDb(Protocol):
    dialect: str

    def transaction(
        self, *, write: bool, migrating: bool = False
    ) -> AbstractContextManager[Execute]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the in-process table is built from, as of one version."""

    version: int
    keys: list[KeyRecord]
    teams: dict[str, TeamRecord]
    projects: dict[str, TeamRecord]


def open_db(url: str, timeout_s: float = 5.0) -> KeyDb:
    if url.startswith("sqlite://"):
        from .sqlite import SqliteKeyDb

        return SqliteKeyDb(url, timeout_s)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresKeyDb

        return PostgresKeyDb(url, timeout_s)
    raise KeyStoreError(f"unsupported key store `{url}`: use sqlite:///PATH or postgresql://...")


def _key_row(values: tuple[Any, ...]) -> KeyRecord:
    data = dict(zip(_KEY_COLUMNS, values, strict=True))
    for name in _JSON_COLUMNS:
        data[name] = msgspec.json.decode(data[name])
    data["limits"] = _limits(data["limits"])
    data["blocked"] = bool(data["blocked"])
    return msgspec.convert(data, KeyRecord)


def _group_row(values: tuple[Any, ...]) -> TeamRecord:
    data = dict(zip(_GROUP_COLUMNS, values, strict=True))
    for name in ("allowed_models", "metadata", "budgets"):
        data[name] = msgspec.json.decode(data[name])
    data["limits"] = _limits(data["limits"])
    return msgspec.convert(data, TeamRecord)


def _limits(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _value(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return _json.encode(value).decode()
    if name == "limits":
        return None if value is None else _json.encode(value).decode()
    if name == "blocked":
        return 1 if value else 0
    return value


class KeyStore:
    """Reads and changes keys, teams and projects; thread-safe, blocking (never on the loop)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.db = open_db(url, timeout_s)
        self.dialect = self.db.dialect
        # Teams and projects declared in the YAML (they count as existing for keys).
        self.declared: dict[str, frozenset[str]] = {}

    def migrate(self) -> int:
        """Create or upgrade the schema (under the database's lock); refuses a newer one."""
        with self.db.transaction(write=True, migrating=True) as execute:
            return migrate(execute, self.dialect)

    def close(self) -> None:
        self.db.close()

    # -- reads for the table ---------------------------------------------------------------

    def version(self) -> int:
        with self.db.transaction(write=False) as execute:
            return int(execute("SELECT version FROM keys_state WHERE id = 1").fetchone()[0])

    def snapshot(self) -> Snapshot:
        with self.db.transaction(write=False) as execute:
            version = int(execute("SELECT version FROM keys_state WHERE id = 1").fetchone()[0])
            keys = [
                _key_row(r)
                for r in execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM api_keys").fetchall()
            ]
            groups = ", ".join(_GROUP_COLUMNS)
            teams = [_group_row(r) for r in execute(f"SELECT {groups} FROM teams").fetchall()]
            projects = [_group_row(r) for r in execute(f"SELECT {groups} FROM projects").fetchall()]
        return Snapshot(version, keys, {t.name: t for t in teams}, {p.name: p for p in projects})

    def touch(self, used: dict[str, float]) -> None:
        """Note when keys were last used (not a change: the version stays)."""
        if not used:
            return
        with self.db.transaction(write=True) as execute:
            # A copy: the stage may still be adding to this dict on the loop's thread.
            for key_id, ts in list(used.items()):
                execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (ts, key_id))

    # -- keys ------------------------------------------------------------------------------

    def create_key(self, fields: dict[str, Any]) -> tuple[KeyRecord, str]:
        """A new key from checked fields; (its record, the whole key text, shown once)."""
        public_id, secret, text = new_key()
        ts = now()
        record = msgspec.convert(
            {**fields, "id": public_id, "secret_sha256": sha256_hex(secret)}, KeyRecord
        )
        record.created_at = record.updated_at = ts
        with self.db.transaction(write=True) as execute:
            self._check_groups(execute, fields)
            values = [_value(c, getattr(record, c)) for c in _KEY_COLUMNS]
            marks = ", ".join("?" * len(_KEY_COLUMNS))
            execute(f"INSERT INTO api_keys ({', '.join(_KEY_COLUMNS)}) VALUES ({marks})", values)
            _bump(execute)
        return record, text

    def get_key(self, key_id: str) -> KeyRecord:
        with self.db.transaction(write=False) as execute:
            return self._get_key(execute, key_id)

    def _get_key(self, execute: Execute, key_id: str) -> KeyRecord:
        row = execute(
            f"SELECT {', '.join(_KEY_COLUMNS)} FROM api_keys WHERE id = ?", (key_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no key with id `{key_id}`")
        return _key_row(tuple(row))

    def list_keys(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        team: str | None = None,
        project: str | None = None,
        alias: str | None = None,
        blocked: bool | None = None,
    ) -> list[KeyRecord]:
        """Keys in id order after the cursor `after`, filtered."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("team", team), ("project", project), ("alias", alias)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if blocked is not None:
            where.append("blocked = ?")
            params.append(1 if blocked else 0)
        if after is not None:
            where.append("id > ?")
            params.append(after)
        sql = (
            f"SELECT {', '.join(_KEY_COLUMNS)} FROM api_keys WHERE {' AND '.join(where)} "
            f"ORDER BY id LIMIT {int(limit)}"
        )
        with self.db.transaction(write=False) as execute:
            return [_key_row(tuple(r)) for r in execute(sql, params).fetchall()]

    def update_key(self, key_id: str, fields: dict[str, Any]) -> KeyRecord:
        with self.db.transaction(write=True) as execute:
            self._get_key(execute, key_id)
            self._check_groups(execute, fields)
            changes = {**fields, "updated_at": now()}
            sets = ", ".join(f"{name} = ?" for name in changes)
            params = [_value(n, v) for n, v in changes.items()]
            execute(f"UPDATE api_keys SET {sets} WHERE id = ?", [*params, key_id])
            _bump(execute)
            return self._get_key(execute, key_id)

    def delete_key(self, key_id: str) -> None:
        with self.db.transaction(write=True) as execute:
            if execute("DELETE FROM api_keys WHERE id = ?", (key_id,)).rowcount == 0:
                raise NotFound(f"no key with id `{key_id}`")
            _bump(execute)

    def rotate_key(self, key_id: str, grace_s: float) -> tuple[KeyRecord, str]:
        """A new secret for the same public id; the old one works for `grace_s` more."""
        _, secret, _ = new_key()
        text = f"sk-lp-{key_id}-{secret}"
        ts = now()
        with self.db.transaction(write=True) as execute:
            old = self._get_key(execute, key_id)
            previous = old.secret_sha256 if grace_s > 0 else None
            until = ts + grace_s if grace_s > 0 else None
            execute(
                "UPDATE api_keys SET secret_sha256 = ?, previous_sha256 = ?, "
                "previous_expires_at = ?, updated_at = ? WHERE id = ?",
                (sha256_hex(secret), previous, until, ts, key_id),
            )
            _bump(execute)
            return self._get_key(execute, key_id), text

    def _check_groups(self, execute: Execute, fields: dict[str, Any]) -> None:
        for field, table in (("team", "teams"), ("project", "projects")):
            name = fields.get(field)
            if name is not None:
                row = execute(f"SELECT 1 FROM {table} WHERE name = ?", (name,)).fetchone()
                if row is None and name not in self.declared.get(table, ()):
                    raise InvalidField(field, f"{field} `{name}` does not exist; create it first")

    # -- teams and projects ----------------------------------------------------------------

    def create_group(self, kind: GroupKind, fields: dict[str, Any]) -> TeamRecord:
        ts = now()
        record = msgspec.convert(fields, TeamRecord)
        record.created_at = record.updated_at = ts
        with self.db.transaction(write=True) as execute:
            found = execute(f"SELECT 1 FROM {kind} WHERE name = ?", (record.name,)).fetchone()
            if found is not None:
                raise Conflict(f"{kind[:-1]} `{record.name}` exists already")
            marks = ", ".join("?" * len(_GROUP_COLUMNS))
            execute(
                f"INSERT INTO {kind} ({', '.join(_GROUP_COLUMNS)}) VALUES ({marks})",
                [_value(c, getattr(record, c)) for c in _GROUP_COLUMNS],
            )
            _bump(execute)
        return record

    def get_group(self, kind: GroupKind, name: str) -> TeamRecord:
        with self.db.transaction(write=False) as execute:
            return self._get_group(execute, kind, name)

    def _get_group(self, execute: Execute, kind: GroupKind, name: str) -> TeamRecord:
        row = execute(
            f"SELECT {', '.join(_GROUP_COLUMNS)} FROM {kind} WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no {kind[:-1]} named `{name}`")
        return _group_row(tuple(row))

    def list_groups(
        self, kind: GroupKind, *, after: str | None = None, limit: int = 100
    ) -> list[TeamRecord]:
        where, params = ("WHERE name > ?", [after]) if after is not None else ("", [])
        sql = (
            f"SELECT {', '.join(_GROUP_COLUMNS)} FROM {kind} {where} "
            f"ORDER BY name LIMIT {int(limit)}"
        )
        with self.db.transaction(write=False) as execute:
            return [_group_row(tuple(r)) for r in execute(sql, params).fetchall()]

    def update_group(self, kind: GroupKind, name: str, fields: dict[str, Any]) -> TeamRecord:
        with self.db.transaction(write=True) as execute:
            self._get_group(execute, kind, name)
            changes = {**fields, "updated_at": now()}
            sets = ", ".join(f"{n} = ?" for n in changes)
            params = [_value(n, v) for n, v in changes.items()]
            execute(f"UPDATE {kind} SET {sets} WHERE name = ?", [*params, name])
            _bump(execute)
            return self._get_group(execute, kind, name)

    def delete_group(self, kind: GroupKind, name: str) -> None:
        column = "team" if kind == "teams" else "project"
        with self.db.transaction(write=True) as execute:
            used = execute(f"SELECT COUNT(*) FROM api_keys WHERE {column} = ?", (name,)).fetchone()[
                0
            ]
            if used:
                raise Conflict(
                    f"{column} `{name}` still has {used} key(s); move or delete them first"
                )
            if execute(f"DELETE FROM {kind} WHERE name = ?", (name,)).rowcount == 0:
                raise NotFound(f"no {column} named `{name}`")
            _bump(execute)


def _bump(execute: Execute) -> None:
    execute("UPDATE keys_state SET version = version + 1 WHERE id = 1")


def iter_pages(store: KeyStore, **filters: Any) -> Iterator[KeyRecord]:
    """Every key matching the filters, a page at a time."""
    after = None
    while True:
        page = store.list_keys(after=after, limit=500, **filters)
        yield from page
        if len(page) < 500:
            return
        after = page[-1].id
