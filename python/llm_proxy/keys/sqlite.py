"""The key store's SQLite connection: one file shared with the request log (WAL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..logstore.sqlite import open_database
from .migrations import Execute, KeyStoreError


def _path(url: str) -> str:
    path = url.removeprefix("sqlite://")
    return path[1:] if path.startswith("/") else path


class SqliteKeyDb:
    dialect = "sqlite"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.path = _path(url)
        self.timeout_s = timeout_s
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_database(self.path, self.timeout_s)
        return self._conn

    @contextmanager
    def transaction(self, *, write: bool, migrating: bool = False) -> Iterator[Execute]:
        """A transaction; a writing one holds SQLite's write lock from its start (which also
        serialises migrations between processes)."""
        del migrating  # BEGIN IMMEDIATE is the lock
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise KeyStoreError(f"sqlite {self.path}: {exc}") from exc
            try:
                yield _execute(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise KeyStoreError(f"sqlite {self.path}: {exc}") from exc
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _execute(conn: sqlite3.Connection) -> Execute:
    def execute(sql: str, params: tuple[Any, ...] | list[Any] = ()) -> sqlite3.Cursor:
        return conn.execute(sql, tuple(params))

    return execute
