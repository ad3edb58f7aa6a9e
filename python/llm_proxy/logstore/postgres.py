"""PostgreSQL log store (psycopg 3), for many gateway instances writing to one place."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from .schema import (
    KEEP_FROM,
    PURGE_BELOW,
    PURGE_OLD,
    Row,
    StoreError,
    insert_sql,
    migrations,
)

# Serialises schema upgrades when several instances start at once.
_MIGRATION_LOCK = 0x6C6C6D70  # "llmp"


class PostgresStore:
    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: Any = None
        self._insert = insert_sql("postgres")

    def connect(self) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "the PostgreSQL log store needs psycopg: pip install 'psycopg[binary]'"
            ) from None
        self.close()
        try:
            conn = psycopg.connect(
                self.url,
                connect_timeout=max(1, round(self.timeout_s)),
                autocommit=True,
            )
            self._conn = conn
            # Not as a connect option: that would replace `options` given in the URL.
            conn.execute(f"SET statement_timeout = {int(self.timeout_s * 1000)}")
            self._migrate(conn)
        except psycopg.Error as exc:
            self.close()
            raise StoreError(f"postgres: {exc}") from exc

    def _migrate(self, conn: Any) -> None:
        steps = migrations("postgres")
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            current = row[0] or 0
            for version, statements in enumerate(steps, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))

    def _run(self, work: Any) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self.connect()
        try:
            return work(self._conn)
        except psycopg.Error as exc:
            self.close()  # a broken or timed-out connection is replaced on the next call
            raise StoreError(f"postgres: {exc}") from exc

    def write(self, rows: Sequence[Row]) -> None:
        safe = [_storable(row) for row in rows]

        def work(conn: Any) -> None:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(self._insert, safe)

        self._run(work)

    def purge(self, before_ts: float, max_rows: int | None) -> int:
        def work(conn: Any) -> int:
            deleted = conn.execute(PURGE_OLD.replace("?", "%s"), (before_ts,)).rowcount
            if max_rows is not None:
                row = conn.execute(KEEP_FROM.replace("?", "%s"), (max_rows - 1,)).fetchone()
                if row is not None:
                    deleted += conn.execute(PURGE_BELOW.replace("?", "%s"), (row[0],)).rowcount
            return int(deleted)

        return int(self._run(work))

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        def work(conn: Any) -> list[Row]:
            return list(conn.execute(sql.replace("?", "%s"), tuple(params)).fetchall())

        return list(self._run(work))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _storable(row: Row) -> Row:
    """The row with every NUL escaped: PostgreSQL text cannot hold one, and one such value
    would fail its whole batch every time it is retried."""
    if not any(type(v) is str and "\x00" in v for v in row):
        return row
    return tuple(v.replace("\x00", "\\u0000") if type(v) is str else v for v in row)
