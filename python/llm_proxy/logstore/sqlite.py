"""SQLite log store: one file in WAL mode, written in batches by the writer thread."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from .schema import (
    KEEP_FROM,
    PURGE_BELOW,
    PURGE_OLD,
    Row,
    StoreError,
    insert_sql,
    migrations,
)

# Rows per INSERT statement: one statement per chunk means the writer thread releases and
# retakes the GIL once per chunk instead of once per row; an idle-priority writer uses smaller
# statements (SMALL_INSERT) so the loop never waits long for the GIL.
_ROWS_PER_INSERT = 500 if sqlite3.sqlite_version_info >= (3, 32, 0) else 30
SMALL_INSERT = 64 if sqlite3.sqlite_version_info >= (3, 32, 0) else 30


# Without a registered adapter, sqlite3 raises and clears an AttributeError for every None and
# bool it binds; these adapters bind the same values (NULL, 0 or 1) with a dict lookup.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
sqlite3.register_adapter(bool, int)


def open_database(path: str, timeout_s: float) -> sqlite3.Connection:
    """A connection to the SQLite file at `path` in WAL mode, the file made 0600 if new.

    The mode is set with chmod once SQLite has created the file, not by creating it first:
    closing another descriptor of a database drops every POSIX lock this process holds on it
    (another connection's, in another thread), and another process may then reset the WAL.
    """
    memory = path == ":memory:"
    new = not memory and not os.path.exists(path)
    if new:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    if new:
        os.chmod(path, 0o600)  # before anything is written; the WAL takes this mode
    # Switching to WAL can meet another starting connection's lock without waiting on it.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)


def sqlite_path(url: str) -> str:
    """`sqlite:///rel/path` -> `rel/path`; `sqlite:////abs/path` -> `/abs/path`."""
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path


class SqliteStore:
    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._insert = insert_sql("sqlite")
        self._inserts: dict[int, str] = {}
        self.rows_per_insert = _ROWS_PER_INSERT

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def connect(self) -> None:
        try:
            conn = open_database(self.path, self.timeout_s)
            conn.execute("PRAGMA synchronous=NORMAL")
            # A bigger page cache and rarer WAL checkpoints: less writer CPU per logged row.
            conn.execute("PRAGMA cache_size=-32768")
            conn.execute("PRAGMA wal_autocheckpoint=10000")
            self._conn = conn
            self._migrate(conn)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        steps = migrations("sqlite")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        if (row[0] or 0) >= len(steps):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, statements in enumerate(steps, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def write(self, rows: Sequence[Row]) -> None:
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                step = self.rows_per_insert
                for start in range(0, len(rows), step):
                    chunk = rows[start : start + step]
                    params = [value for row in chunk for value in row]
                    conn.execute(self._insert_of(len(chunk)), params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    def _insert_of(self, count: int) -> str:
        """`INSERT ... VALUES (...), (...)` for `count` rows (kept per count)."""
        sql = self._inserts.get(count)
        if sql is None:
            head, _, values = self._insert.partition(" VALUES ")
            sql = self._inserts[count] = f"{head} VALUES {', '.join([values] * count)}"
        return sql

    def purge(self, before_ts: float, max_rows: int | None) -> int:
        try:
            conn = self._connection()
            deleted = conn.execute(PURGE_OLD, (before_ts,)).rowcount
            if max_rows is not None:
                row = conn.execute(KEEP_FROM, (max_rows - 1,)).fetchone()
                if row is not None:
                    deleted += conn.execute(PURGE_BELOW, (row[0],)).rowcount
            return int(deleted)
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return list(self._connection().execute(sql, tuple(params)).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
