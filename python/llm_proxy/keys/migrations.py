"""The keys schema: versioned migrations, applied by the gateway itself under a lock.

The version lives in its own table (`keys_schema_version`), beside the request log's, so
the two concerns upgrade independently in one database. Append versions; never edit one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class KeyStoreError(Exception):
    """The key store cannot be used (unreachable, or a schema this gateway does not know)."""


def migrations(dialect: str) -> list[list[str]]:
    real = "DOUBLE PRECISION" if dialect == "postgres" else "REAL"
    big = "BIGINT" if dialect == "postgres" else "INTEGER"
    group = """CREATE TABLE {name} (
            name TEXT PRIMARY KEY,
            allowed_models TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL
        )"""
    v1 = [
        f"""CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            previous_sha256 TEXT,
            previous_expires_at {real},
            alias TEXT,
            team TEXT,
            project TEXT,
            allowed_models TEXT NOT NULL,
            allowed_endpoints TEXT NOT NULL,
            expires_at {real},
            blocked INTEGER NOT NULL,
            tags TEXT NOT NULL,
            metadata TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            last_used_at {real}
        )""",
        "CREATE INDEX api_keys_team ON api_keys (team)",
        group.format(name="teams", real=real),
        group.format(name="projects", real=real),
        # One row; every change to a key, team or project adds one, and each instance polls it.
        f"CREATE TABLE keys_state (id INTEGER PRIMARY KEY, version {big} NOT NULL)",
        "INSERT INTO keys_state (id, version) VALUES (1, 0)",
    ]
    # Limits and budgets (limits/spec.py) as JSON text: NULL limits and `[]` budgets are none.
    v2 = [
        statement
        for table in ("api_keys", "teams", "projects")
        for statement in (
            f"ALTER TABLE {table} ADD COLUMN limits TEXT",
            f"ALTER TABLE {table} ADD COLUMN budgets TEXT NOT NULL DEFAULT '[]'",
        )
    ]
    return [v1, v2]


Execute = Callable[..., Any]


def migrate(execute: Execute, dialect: str) -> int:
    """Bring the schema up to date inside the caller's locked transaction; its version."""
    steps = migrations(dialect)
    execute("CREATE TABLE IF NOT EXISTS keys_schema_version (version INTEGER NOT NULL)")
    row = execute("SELECT MAX(version) FROM keys_schema_version").fetchone()
    current = int(row[0] or 0)
    if current > len(steps):
        raise KeyStoreError(
            f"the key store's schema is version {current}, newer than this gateway knows "
            f"({len(steps)}); upgrade llm-proxy before serving from this database"
        )
    for version, statements in enumerate(steps, start=1):
        if version <= current:
            continue
        for statement in statements:
            execute(statement)
        execute("INSERT INTO keys_schema_version (version) VALUES (?)", (version,))
    return len(steps)


def known_version() -> int:
    return len(migrations("sqlite"))
