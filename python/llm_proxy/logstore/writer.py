"""The recorder thread: gives records their content and writes them to the store.

The event loop builds each record's figures (tokens, cost, timings) and feeds the metrics
after the response is sent (see observe/recorder.py), then appends it to this thread's deque. The
thread does the rest in batches: the content policy (prompt and completion, redacted or not)
and the store write. When the store is slow or down, batches go to the local spool and are
replayed once it answers again.

When the worker's core is saturated the thread may not get enough CPU to keep up (on a
saturated core it shares the CPU with the loop and Granian's threads). Once the queue passes
its high-water mark, the event loop steps aside for up to 2 ms at a time (`make_room`) so the
records are written instead of dropped.

`writer_priority: idle` (Linux) runs the thread at SCHED_IDLE: it gets the core only when
nothing else wants it, so a batch never holds up a request, but every wake-up of the loop
must preempt it (benchmarks/README.md has the trade's figures). The default, `normal`, writes
each batch in one go at normal priority.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from ..calls import Call, Outcome
from .record import LogRecord, RecordBuilder, as_row, new_id
from .schema import LogStore, Row, StoreError, retention_cutoff
from .spool import Spool
from .sqlite import SMALL_INSERT, SqliteStore

if TYPE_CHECKING:
    from ..observe.metrics import GatewayMetrics

log = logging.getLogger("llm_proxy.observe")

# Records given their content between two hand-backs of the GIL to the event loop: holding it
# for a whole batch makes the loop wait out the switch interval, and handing it back every
# few records makes many preemptions; an idle-priority writer is preempted anyway.
_SLICE = 64
_IDLE_SLICE = 8

# The longest the event loop steps aside at a time for a starved writer, and
# the longest it leaves alone a writer that did not use that time (it waits for the store).
_MAKE_ROOM_S = 0.002
_ROOM_BACKOFF_S = 0.2

WriterPriority = Literal["idle", "normal"]

# (the record without its content, the call, its outcome, the caller's Authorization value)
Pending = tuple[LogRecord, Call, Outcome, Any]


class LogWriter:
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
        priority: WriterPriority = "normal",
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
        self.priority = priority
        # Past this many queued records a starved writer is given the CPU.
        self.high_water = max(1, queue_size // 4)
        self.idle = False  # running at idle priority (set by the thread once it is)
        self.made_room = 0  # times the loop stepped aside for it
        self.dropped = 0
        self.written = 0
        self._wake = threading.Event()
        self._progress = threading.Event()
        # The loop is stepping aside (make_room) until the queue is down to _low_water.
        self._room_wanted = False
        self._low_water = self.high_water // 2
        self._cpu_clock = 0  # the thread's CPU-time clock (set by the thread)
        self._room_after = 0.0
        self._room_backoff = 0.0
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

    def make_room(self) -> None:
        """Step aside (block the loop, briefly) while a starved writer catches up.

        Called by the loop after it queued records. Does nothing unless the queue is past its
        high-water mark. If the writer did not use the CPU it was given, it is waiting for a
        slow or locked store, not for the CPU (that is what the queue and the spool are for):
        the loop then leaves it alone for a while.
        """
        queue = self.queue
        if len(queue) < self.high_water or not self._cpu_clock:
            return
        now = time.monotonic()
        if now < self._room_after:
            return
        clock = self._cpu_clock
        before = time.clock_gettime(clock)
        self._progress.clear()
        self._room_wanted = True
        self._wake.set()
        self._progress.wait(_MAKE_ROOM_S)  # until the queue is down to half the mark
        self._room_wanted = False
        if time.clock_gettime(clock) - before < _MAKE_ROOM_S / 10:
            # Waiting for the disk or the store: ask again after 5, 10, 20 ... 200 ms.
            self._room_backoff = min(_ROOM_BACKOFF_S, max(0.005, self._room_backoff * 2))
            self._room_after = now + self._room_backoff
            return
        self._room_backoff = 0.0
        self.made_room += 1
        self.metrics.log_writer_yields.inc()

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
        self._prepare_thread()
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

    def _prepare_thread(self) -> None:
        """Note this thread's CPU clock (for make_room) and set its priority."""
        cpu_clock_of = getattr(time, "pthread_getcpuclockid", None)  # not on every Unix
        if cpu_clock_of is not None:
            self._cpu_clock = cpu_clock_of(threading.get_ident())
        if self.priority != "idle" or not hasattr(os, "SCHED_IDLE"):
            return
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
        except OSError as exc:
            log.info("log writer stays at normal priority: %s", exc)
            return
        self.idle = True
        if isinstance(self.store, SqliteStore):
            self.store.rows_per_insert = SMALL_INSERT

    def _drain(self) -> None:
        queue = self.queue
        builder = self.builder
        slice_ = _IDLE_SLICE if self.idle else _SLICE
        while queue:
            batch: list[LogRecord] = []
            rows: list[Row] = []
            while queue and len(batch) < self.batch_size:
                record, call, outcome, auth = queue.popleft()
                record.id = new_id(record.ts + record.latency_ms / 1000.0)
                try:
                    builder.add_content(record, call, outcome, auth)
                except Exception:
                    log.exception("could not add the content to the log of %s", call.request_id)
                batch.append(record)
                rows.append(as_row(record))
                if len(batch) % slice_ == 0:
                    self._tell_if_caught_up()
                    time.sleep(0)  # hand the GIL back to the event loop
            self._tell_if_caught_up()
            self.metrics.queue_depth.set(len(queue))
            if self.store is not None and batch:
                self._persist(batch, rows)

    def _tell_if_caught_up(self) -> None:
        """End the loop's make_room wait once the queue is down to the low-water mark."""
        if self._room_wanted and len(self.queue) <= self._low_water:
            self._progress.set()

    def _persist(self, batch: list[LogRecord], rows: list[Row]) -> None:
        if not self._store_up and time.monotonic() >= self._retry_at:
            self._connect()
        if self._store_up:
            try:
                self._write(batch, rows)
                return
            except StoreError as exc:
                self._down(exc)
        self._spool(batch)

    def _write(self, batch: list[LogRecord], rows: list[Row] | None = None) -> None:
        assert self.store is not None
        self.store.write(rows if rows is not None else [as_row(r) for r in batch])
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
