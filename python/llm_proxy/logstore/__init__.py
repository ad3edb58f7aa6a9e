"""The request log: records, their schema, the SQLite and PostgreSQL stores, spool and writer.

`open_store(url)` picks the backend named by `logging.store` (schema, reads); `open_writer`
starts the Rust core's writer, which takes finished records (hand over, flush, close) and
writes them in batches off the event loop.
"""

from __future__ import annotations

from .schema import LogStore, StoreError
from .writer import open_writer, prepare_schema

__all__ = ["LogStore", "StoreError", "open_store", "open_writer", "prepare_schema"]


def open_store(url: str, timeout_s: float = 2.0) -> LogStore:
    """The backend named by a `logging.store` URL."""
    if url.startswith("sqlite://"):
        from .sqlite import SqliteStore

        return SqliteStore(url, timeout_s)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url, timeout_s)
    raise ValueError(f"unsupported log store {url!r}: use sqlite:///PATH or postgresql://...")
