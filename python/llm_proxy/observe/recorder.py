"""The record stage: receives every finished call from the pipeline, counts it, logs it."""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from .. import _core
from ..calls import Call, Outcome
from ..config import Config
from ..credentials import client_key, configured_secrets
from ..logstore import LogStore, open_store, open_writer, prepare_schema
from ..logstore.record import Handover, RecordBuilder
from ..pricing import PriceTable
from ..tokens import load_encodings
from .metrics import GatewayMetrics

log = logging.getLogger("llm_proxy.observe")

# How often the writer's own counters (written, spooled, store up...) reach the metrics.
_WRITER_STATS_S = 1.0
# How long shutdown waits for the writer to store (or spool) what is queued.
_CLOSE_TIMEOUT_S = 10.0


class CallRecorder:
    """Records every call (log store, metrics) without ever delaying or failing it."""

    def __init__(self, config: Config) -> None:
        settings = config.logging
        self.config = config
        self.prometheus = GatewayMetrics()
        self.content = settings.content if settings.enabled else "none"
        self.builder = RecordBuilder(PriceTable.from_config(config), self.content)
        self.logging = settings.enabled
        # Finished calls not yet recorded: built on the loop right after the response is sent.
        self._finished: list[tuple[Call, Outcome, float, float, str | None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._encode = msgspec.json.Encoder().encode
        # Started by start(), inside the worker: the writer's thread must not cross a fork.
        self.writer: _core.LogWriter | None = None
        self._seen: dict[str, int] = {}
        # Set while the store's schema still has to be made (the store was down at start).
        self._schema_store: LogStore | None = None
        self._schema_retry: asyncio.Task[None] | None = None
        self._stats_timer: asyncio.TimerHandle | None = None
        self._started = False

    async def start(self) -> None:
        """Load the tokenizers and start the writer (inside the worker, on its loop)."""
        if self._started:
            return
        self._started = True
        self._loop = asyncio.get_running_loop()
        load_encodings(d.model for m in self.config.models.values() for d in m.routes())
        if self.logging:
            settings = self.config.logging
            store = open_store(settings.store, settings.store_timeout_s)
            if not await asyncio.to_thread(prepare_schema, store):
                self._schema_store = store
            secrets = configured_secrets(self.config)
            self.writer = await asyncio.to_thread(open_writer, settings, secrets)
            self._stats_timer = self._loop.call_later(_WRITER_STATS_S, self._tick)

    async def close(self) -> None:
        """Record everything still queued, then stop; the store gets it or the spool does."""
        self._record()
        self._loop = None
        if self._stats_timer is not None:
            self._stats_timer.cancel()
            self._stats_timer = None
        if self._schema_retry is not None:
            self._schema_retry.cancel()
            self._schema_retry = None
        if self._started:
            self._started = False
            writer, self.writer = self.writer, None
            if writer is not None:
                if not await asyncio.to_thread(writer.close, _CLOSE_TIMEOUT_S):
                    log.error("the log writer did not finish within %g s", _CLOSE_TIMEOUT_S)
                self._count_writer(writer.stats())
            self.prometheus.process_exited()

    def finished(self, call: Call, outcome: Outcome) -> None:
        """Note the call for recording once its response is on its way; never raises."""
        try:
            latency_s = time.perf_counter() - call.started
            key = client_key(call.headers)
            pending = self._finished
            pending.append((call, outcome, time.time(), latency_s, key))
            if len(pending) == 1:
                if self._loop is not None:
                    # Runs after the current task step, which sends the response.
                    self._loop.call_soon(self._record)
                else:
                    self._record()
        except Exception:
            log.exception("could not queue the log record of %s", call.request_id)

    def _record(self) -> None:
        """Build the records of the calls finished since the last turn, count them, hand them
        to the writer. Figures (tokens, cost, timings) and metrics are done here, on the loop,
        in one batch; the content policy and the store write happen on the writer's thread.
        """
        pending, self._finished = self._finished, []
        if not pending:
            return
        records = []
        writer = self.writer
        for call, outcome, ended, latency_s, key in pending:
            try:
                record = self.builder.build(call, outcome, ended, latency_s, key)
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
                self._hand_over(writer, record, call, outcome)
        try:
            self.prometheus.observe_batch(records)
        except Exception:
            log.exception("could not count %d call(s) in the metrics", len(records))

    def _hand_over(
        self, writer: _core.LogWriter, record: Handover, call: Call, outcome: Outcome
    ) -> None:
        """One non-blocking hand-over: the record, and the bytes its content is read from."""
        prompt: bytes | None = None
        answer: bytes | None = None
        if self.content != "none":
            prompt = call.prompt_json
            summary = outcome.summary
            if summary is not None:
                record.completion = summary.text
                tools = summary.tool_calls_json
                if tools != "[]":
                    record.tool_calls = tools
            elif call.endpoint != "embeddings" and outcome.status < 400:
                if call.stream:
                    record.completion = ""
                else:
                    answer = outcome.response_body or b""
        try:
            writer.submit(self._encode(record), prompt, answer)
        except Exception:
            log.exception("could not hand the log record of %s over", call.request_id)

    # -- the writer's own figures ------------------------------------------------------------

    def _tick(self) -> None:
        writer = self.writer
        if writer is None or self._loop is None:
            return
        try:
            self._count_writer(writer.stats())
        except Exception:
            log.exception("could not read the log writer's figures")
        store = self._schema_store
        if store is not None and (self._schema_retry is None or self._schema_retry.done()):
            self._schema_retry = self._loop.create_task(self._retry_schema(store))
        self._stats_timer = self._loop.call_later(_WRITER_STATS_S, self._tick)

    async def _retry_schema(self, store: LogStore) -> None:
        if await asyncio.to_thread(prepare_schema, store):
            self._schema_store = None

    def _count_writer(self, stats: _core.LogWriterStats) -> None:
        metrics = self.prometheus
        for name, counter in (
            ("written", metrics.log_written),
            ("dropped", metrics.log_dropped),
            ("store_errors", metrics.log_store_errors),
            ("dead_lettered", metrics.log_dead_lettered),
        ):
            value = int(stats[name])  # type: ignore[literal-required]
            new = value - self._seen.get(name, 0)
            if new > 0:
                counter.inc(new)
                self._seen[name] = value
        metrics.queue_depth.set(stats["queue_len"])
        metrics.queue_bytes.set(stats["queue_bytes"])
        metrics.spooled.set(stats["spool_pending"])
        metrics.store_up.set(1 if stats["store_up"] else 0)

    def metrics(self) -> tuple[str, bytes]:
        """(content type, Prometheus text exposition) for GET /metrics."""
        if self.writer is not None:
            try:
                self._count_writer(self.writer.stats())
            except Exception:
                log.exception("could not read the log writer's figures")
        return self.prometheus.exposition()
