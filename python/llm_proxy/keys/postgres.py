"""The key store's PostgreSQL connection (psycopg 3), for many instances on one database."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .migrations import Execute, KeyStoreError

# Serialises key-schema upgrades when several instances start at once ("llmk").
_MIGRATION_LOCK = 0x6C6C6D6B


class PostgresKeyDb:
    dialect = "postgres"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(
                self.url, connect_timeout=max(1, round(self.timeout_s)), autocommit=True
            )
            conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")
            self._conn = conn
        return self._conn

    @contextmanager
    def transaction(self, *, write: bool, migrating: bool = False) -> Iterator[Execute]:
        del write
        import psycopg

        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    if migrating:
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))

                    def execute(sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
                        return conn.execute(sql.replace("?", "%s"), tuple(params))

                    yield execute
            except psycopg.Error as exc:
                self._drop()
                raise KeyStoreError(f"postgres: {exc}") from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._drop()
