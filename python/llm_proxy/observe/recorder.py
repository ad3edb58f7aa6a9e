"""The log-and-metrics stage: receives every finished call from the pipeline."""

from __future__ import annotations

import asyncio
import logging
import time

from ..calls import Call, Outcome
from ..config import Config
from ..credentials import SecretMask, client_key, configured_secrets
from ..logstore import LogWriter, open_store
from ..logstore.prices import PriceTable
from ..logstore.record import RecordBuilder, load_encodings
from ..logstore.spool import Spool
from .metrics import GatewayMetrics

log = logging.getLogger("llm_proxy.observe")


class CallRecorder:
    """Records every call (log store, metrics) without ever delaying or failing it."""

    def __init__(self, config: Config) -> None:
        settings = config.logging
        self.config = config
        self.prometheus = GatewayMetrics()
        content = settings.content if settings.enabled else "none"
        secrets = SecretMask(configured_secrets(config))
        builder = RecordBuilder(PriceTable(settings.prices), content, secrets)
        store = open_store(settings.store, settings.store_timeout_s) if settings.enabled else None
        spool = Spool(settings.spool_path) if settings.enabled else None
        self.builder = builder
        self.logging = settings.enabled
        # Finished calls not yet recorded: built on the loop right after the response is sent.
        self._finished: list[tuple[Call, Outcome, float, float, object]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.writer = LogWriter(
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
            priority=settings.writer_priority,
        )
        self._started = False

    async def start(self) -> None:
        """Load the tokenizers and start the writer thread (inside the worker, on its loop)."""
        if not self._started:
            self._started = True
            self._loop = asyncio.get_running_loop()
            load_encodings(d.model for m in self.config.models.values() for d in m.routes())
            self.writer.start()

    async def close(self) -> None:
        """Record everything still queued, then stop; the store gets it or the spool does."""
        self._record()
        self._loop = None
        if self._started:
            self._started = False
            await asyncio.to_thread(self.writer.stop)
            self.prometheus.process_exited()

    def close_sync(self) -> None:
        """`close` for callers without a running loop."""
        self._record()
        self._loop = None
        if self._started:
            self._started = False
            self.writer.stop()
            self.prometheus.process_exited()

    def finished(self, call: Call, outcome: Outcome) -> None:
        """Note the call for recording once its response is on its way; never raises."""
        try:
            latency_s = time.perf_counter() - call.started
            auth = client_key(call.headers)
            pending = self._finished
            pending.append((call, outcome, time.time(), latency_s, auth))
            if len(pending) == 1:
                if self._loop is not None:
                    # Runs after the current task step, which sends the response.
                    self._loop.call_soon(self._record)
                else:
                    self._record()
        except Exception:
            log.exception("could not queue the log record of %s", call.request_id)

    def _record(self) -> None:
        """Build the records of the calls finished since the last turn, count them, queue them.

        Figures (tokens, cost, timings) and metrics are done here, on the loop, in one batch:
        doing them on the writer thread made the loop wait for the GIL (tail latency). The
        content policy and the store write stay on the thread.
        """
        pending, self._finished = self._finished, []
        if not pending:
            return
        records = []
        writer = self.writer if self.logging else None
        for call, outcome, ended, latency_s, auth in pending:
            try:
                record = self.builder.build(call, outcome, ended, latency_s, auth)
            except Exception:
                log.exception("could not build the log record of %s", call.request_id)
                continue
            records.append(record)
            if call.routing is not None:
                try:
                    self.prometheus.observe_route(call.model, call.routing)
                except Exception:
                    log.exception("could not count the attempts of %s", call.request_id)
            if writer is not None:
                writer.submit((record, call, outcome, auth))
        try:
            self.prometheus.observe_batch(records)
        except Exception:
            log.exception("could not count %d call(s) in the metrics", len(records))
        if writer is not None:
            writer.make_room()

    def metrics(self) -> tuple[str, bytes]:
        """(content type, Prometheus text exposition) for GET /metrics."""
        return self.prometheus.exposition()
