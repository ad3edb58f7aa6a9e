"""The recorder thread: gives records their content and writes them to the store.

The event loop builds each record's figures (tokens, cost, timings) and feeds the metrics
after the response is sent (see observer.py), then appends it to this thread's deque. The
thread does the rest in batches: the content policy (prompt and completion, redacted or not)
and the store write. When the store is slow or down, batches go to the local spool and are
replayed once it answers again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from ..calls import Call, Outcome
from .metrics import GatewayMetrics
from .record import LogRecord, RecordBuilder, as_row, new_id
from .spool import Spool
from .store import LogStore, StoreError, retention_cutoff

log = logging.getLogger("llm_proxy.observe")

# Records given their content between two hand-backs of the GIL to the event loop (~0.4 ms of
# work): holding it for a whole batch makes the loop wait out the 5 ms switch interval, and
# handing it back after every few records costs a thread switch each time.
_SLICE = 64

# (the record without its content, the call, its outcome, the caller's Authorization value)
Pending = tuple[LogRecord, Call, Outcome, Any]


class RecordWriter:
    """Owns the queue, the store connection and the spool; all I/O happens on its thread."""

    def __init__(
        self,
        builder: RecordBuilder,
        metrics: GatewayMetrics,
        store: LogStore | None,
        spool: Spool | None,
        *,
        queue_size: int,
        batch_size: int,
        flush_interval_s: float,
        retry_interval_s: float,
        retention_days: float,
        max_rows: int | None,
        purge_interval_s: float,
    ) -> None:
        self.builder = builder
        self.metrics = metrics
        self.store = store
        self.spool = spool
        self.queue: collections.deque[Pending] = collections.deque()
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        self.retention_days = retention_days
        self.max_rows = max_rows
        self.purge_interval_s = purge_interval_s
        self.dropped = 0
        self.written = 0
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._store_up = False
        self._retry_at = 0.0
        self._purge_at = 0.0
        self._last_error_log = 0.0
        # A write has succeeded since the last warning (so the next failure is news).
        self._healthy = True

    # -- the event loop's side --------------------------------------------------------------

    def submit(self, item: Pending) -> None:
        queue = self.queue
        if len(queue) >= self.queue_size:
            self.dropped += 1
            self.metrics.log_dropped.inc()
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("log queue full: %d record(s) dropped so far", self.dropped)
            return
        queue.append(item)
        if len(queue) == self.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="llm-proxy-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Record everything queued (to the store, else the spool), then stop the thread."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        self._connect()
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain()
                self._maintain()
            except Exception:
                log.exception("log writer failed; continuing")
            if stopping and not self.queue:
                break
        self._finish()

    def _drain(self) -> None:
        queue = self.queue
        builder = self.builder
        while queue:
            batch: list[LogRecord] = []
            while queue and len(batch) < self.batch_size:
                record, call, outcome, auth = queue.popleft()
                record.id = new_id(record.ts + record.latency_ms / 1000.0)
                try:
                    builder.add_content(record, call, outcome, auth)
                except Exception:
                    log.exception("could not add the content to the log of %s", call.request_id)
                batch.append(record)
                if len(batch) % _SLICE == 0:
                    time.sleep(0)  # hand the GIL back to the event loop
            self.metrics.queue_depth.set(len(queue))
            if self.store is not None and batch:
                self._persist(batch)

    def _persist(self, batch: list[LogRecord]) -> None:
        if not self._store_up and time.monotonic() >= self._retry_at:
            self._connect()
        if self._store_up:
            try:
                self._write(batch)
                return
            except StoreError as exc:
                self._down(exc)
        self._spool(batch)

    def _write(self, batch: list[LogRecord]) -> None:
        assert self.store is not None
        self.store.write([as_row(r) for r in batch])
        self.written += len(batch)
        self._healthy = True
        self.metrics.log_written.inc(len(batch))

    def _spool(self, batch: list[LogRecord]) -> None:
        if self.spool is None:
            return
        try:
            self.spool.append(batch)
        except OSError:
            log.exception(
                "cannot write the log spool at %s; %d record(s) lost", self.spool.path, len(batch)
            )
            self.metrics.log_dropped.inc(len(batch))
        self.metrics.spooled.set(self.spool.pending)

    def _connect(self) -> None:
        if self.store is None:
            return
        try:
            self.store.connect()
        except StoreError as exc:
            self._down(exc)
            return
        self._store_up = True
        self.metrics.store_up.set(1)

    def _down(self, exc: Exception) -> None:
        self.metrics.log_store_errors.inc()
        self.metrics.store_up.set(0)
        now = time.monotonic()
        if self._healthy or now - self._last_error_log > 60:
            log.warning("log store unavailable (records are spooled and retried): %s", exc)
            self._last_error_log = now
        self._healthy = False
        self._store_up = False
        self._retry_at = now + self.retry_interval_s
        if self.store is not None:
            self.store.close()

    def _maintain(self) -> None:
        """Replay the spool once the store is back, and enforce retention."""
        if self.store is None:
            return
        spool = self.spool
        if spool is not None and (spool.pending or spool.has_orphans()):
            if not self._store_up and time.monotonic() >= self._retry_at:
                self._connect()
            if self._store_up:
                try:
                    done = spool.replay(self._write, self.batch_size)
                    if done:
                        log.info("wrote %d spooled log record(s) to the store", done)
                except StoreError as exc:
                    self._down(exc)
            self.metrics.spooled.set(spool.pending)
        if self._store_up and time.monotonic() >= self._purge_at:
            self._purge_at = time.monotonic() + self.purge_interval_s
            try:
                removed = self.store.purge(retention_cutoff(self.retention_days), self.max_rows)
                if removed:
                    log.info("retention: purged %d log record(s)", removed)
            except StoreError as exc:
                self._down(exc)

    def _finish(self) -> None:
        try:
            self._maintain()
        except Exception:
            log.exception("log writer: final spool replay failed")
        if self.spool is not None:
            self.spool.close()
        if self.store is not None:
            self.store.close()


def _safe_url(url: str) -> str:
    """The store URL without a password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url
