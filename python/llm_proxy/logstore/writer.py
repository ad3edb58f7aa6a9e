"""The log writer: the Rust core's, on its own thread, holding no GIL while it works.

The event loop hands each finished call's record over in one call that never waits
(`submit`); the writer thread batches, applies the content policy (redaction, secret
masking), and writes to SQLite or PostgreSQL, or to the spool while the store is down.
"""

from __future__ import annotations

import logging
from typing import Literal

from .. import _core, calls
from ..config import LoggingConfig
from .schema import LogStore, StoreError

log = logging.getLogger("llm_proxy.logstore")


def prepare_schema(store: LogStore) -> bool:
    """Create or upgrade the store's schema (then close the connection); False if the store
    cannot be reached now (the caller tries again later; the writer spools meanwhile)."""
    try:
        store.connect()
    except StoreError as exc:
        log.warning("the log store is not reachable, records are spooled until it is: %s", exc)
        return False
    finally:
        store.close()
    return True


def open_writer(settings: LoggingConfig, secrets: list[str]) -> _core.LogWriter:
    """Start the writer for `settings` inside the worker (after the fork)."""
    content: Literal["full", "redacted", "none"] = settings.content
    return _core.LogWriter(
        settings.store,
        settings.spool_path,
        queue_max_bytes=settings.queue_max_bytes,
        batch_size=settings.batch_size,
        max_batch_delay_s=settings.flush_interval_s,
        store_timeout_s=settings.store_timeout_s,
        retry_interval_s=settings.retry_interval_s,
        retention_days=settings.retention_days,
        max_rows=settings.max_rows,
        purge_interval_s=settings.purge_interval_s,
        content=content,
        secrets=secrets,
        id_prefix=calls.PROCESS_PREFIX[:10],
        priority=settings.writer_priority,
    )
