"""The key store's SQLite connection: one file shared with the request log (WAL)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # Created private, like the log store, and only when missing: closing another
                # descriptor of an open database drops this process's POSIX locks on it.
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(
                self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            self._conn = conn
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
