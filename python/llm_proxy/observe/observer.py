"""The log-and-metrics stage: receives every finished call from the pipeline."""

from __future__ import annotations

import asyncio
import logging
import time

from ..calls import Call, Outcome
from ..config import Config
from .metrics import GatewayMetrics
from .prices import PriceTable
from .record import RecordBuilder
from .redact import SecretMask
from .spool import Spool
from .store import open_store
from .writer import RecordWriter

log = logging.getLogger("llm_proxy.observe")


def _secrets(config: Config) -> list[str]:
    """Every configured credential: never stored, whatever the content policy."""
    found: list[str] = []
    for provider in config.providers.values():
        key = getattr(provider, "api_key", None)
        if key:
            found.append(key)
        for name, value in provider.headers.items():
            if name.lower() in ("authorization", "api-key", "x-api-key"):
                found.append(value)
                found.append(value.split()[-1])
    return found


class CallRecorder:
    """Records every call (log store, metrics) without ever delaying or failing it."""

    def __init__(self, config: Config) -> None:
        settings = config.logging
        self.config = config
        self.prometheus = GatewayMetrics()
        content = settings.content if settings.enabled else "none"
        builder = RecordBuilder(PriceTable(settings.prices), content, SecretMask(_secrets(config)))
        store = open_store(settings.store, settings.store_timeout_s) if settings.enabled else None
        spool = Spool(settings.spool_path) if settings.enabled else None
        self.writer = RecordWriter(
            builder,
            self.prometheus,
            store,
            spool,
            queue_size=settings.queue_size,
            batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s,
            retry_interval_s=settings.retry_interval_s,
            retention_days=settings.retention_days,
            max_rows=settings.max_rows,
            purge_interval_s=settings.purge_interval_s,
        )
        self._started = False

    async def start(self) -> None:
        """Start the writer thread (call inside the worker, on its loop)."""
        if not self._started:
            self._started = True
            self.writer.start()

    async def close(self) -> None:
        """Record everything still queued, then stop; the store gets it or the spool does."""
        if self._started:
            self._started = False
            await asyncio.to_thread(self.writer.stop)
            self.prometheus.process_exited()

    def close_sync(self) -> None:
        """`close` for callers without a running loop."""
        if self._started:
            self._started = False
            self.writer.stop()
            self.prometheus.process_exited()

    def finished(self, call: Call, outcome: Outcome) -> None:
        """Queue the call for recording; never blocks, never raises."""
        try:
            now = time.perf_counter()
            auth = call.headers.get("authorization")
            self.writer.submit((call, outcome, time.time(), now - call.started, auth))
        except Exception:
            log.exception("could not queue the log record of %s", call.request_id)

    def metrics(self) -> tuple[str, bytes]:
        """(content type, Prometheus text exposition) for GET /metrics."""
        return self.prometheus.exposition()
