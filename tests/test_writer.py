"""The log writer thread's CPU priority (real threads, real SQLite, the real Linux scheduler)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_proxy.calls import Call, Deployment, Outcome
from llm_proxy.config import ConfigError, load_config
from llm_proxy.credentials import SecretMask
from llm_proxy.logstore import open_store
from llm_proxy.logstore.prices import PriceTable
from llm_proxy.logstore.record import RecordBuilder
from llm_proxy.logstore.spool import Spool
from llm_proxy.logstore.writer import LogWriter
from llm_proxy.observe.metrics import GatewayMetrics

ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hello there"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}'
)
PROMPT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}'

linux_only = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE"), reason="idle CPU priority is a Linux scheduling policy"
)


def make_writer(tmp: Path, priority: str, queue_size: int = 10_000) -> LogWriter:
    return LogWriter(
        RecordBuilder(PriceTable(), "full", SecretMask(["sk-provider-secret"])),
        GatewayMetrics(),
        open_store(f"sqlite:///{tmp / 'log.db'}"),
        Spool(str(tmp / "log.spool")),
        queue_size=queue_size,
        batch_size=500,
        flush_interval_s=0.05,
        retry_interval_s=1.0,
        retention_days=30,
        max_rows=None,
        purge_interval_s=300,
        priority=priority,  # type: ignore[arg-type]
    )


def submit(writer: LogWriter, n: int) -> None:
    for i in range(n):
        call = Call(
            request_id=f"req-{i}", door="http", endpoint="chat", body=PROMPT, model="gpt-4o-mini"
        )
        call.deployment = Deployment("gpt-4o-mini", "up", "gpt-4o-mini")
        call.prompt_json = PROMPT
        outcome = Outcome(200, response_body=ANSWER)
        record = writer.builder.build(call, outcome, time.time(), 0.001, None)
        writer.submit((record, call, outcome, None))


def stored(tmp: Path) -> int:
    with sqlite3.connect(tmp / "log.db") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


@pytest.fixture
def one_cpu() -> Iterator[None]:
    """Pin this thread (and the threads it starts) to one CPU, so they compete for it."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@linux_only
def test_writer_thread_runs_at_idle_priority_and_normal_on_request(tmp_path: Path) -> None:
    for priority, policy in (("idle", os.SCHED_IDLE), ("normal", os.SCHED_OTHER)):
        writer = make_writer(tmp_path, priority)
        writer.start()
        try:
            assert writer._thread is not None
            wait = time.monotonic() + 5
            while writer._thread.native_id is None and time.monotonic() < wait:
                time.sleep(0.01)
            time.sleep(0.1)  # the thread sets its policy first thing
            assert os.sched_getscheduler(writer._thread.native_id) == policy
            assert writer.idle is (priority == "idle")
        finally:
            writer.stop(10)
        # The calling thread keeps its own policy.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER


@linux_only
@pytest.mark.parametrize("priority", ["idle", "normal"])
def test_writer_on_a_saturated_cpu_drops_nothing(
    tmp_path: Path, one_cpu: None, priority: str
) -> None:
    """The submitting thread keeps the only CPU busy. Without `make_room` an idle-priority
    writer gets next to none of it and the queue overflows (tens of thousands of records
    dropped in these 4 s). The queue is sized for the ~60 ms a WAL checkpoint can take."""
    writer = make_writer(tmp_path, priority, queue_size=4000)
    writer.start()
    try:
        total = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            submit(writer, 40)
            total += 40
            spin = time.perf_counter() + 0.002  # the request handling this loop stands for
            while time.perf_counter() < spin:
                pass
            writer.make_room()
    finally:
        writer.stop(30)
    assert writer.idle is (priority == "idle")
    if priority == "idle":
        assert writer.made_room > 0, "the queue never passed its high-water mark: no contention"
    assert writer.dropped == 0, (writer.made_room, total, writer.written)
    assert writer.written == total
    assert stored(tmp_path) == total


def test_writer_priority_is_checked_in_the_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("logging: {writer_priority: normal}\n")
    assert load_config(str(path)).logging.writer_priority == "normal"
    path.write_text("logging: {writer_priority: realtime}\n")
    with pytest.raises(ConfigError, match="writer_priority"):
        load_config(str(path))


def test_sqlite_store_binds_none_as_null_and_bools_as_integers(tmp_path: Path) -> None:
    # The store registers sqlite3 adapters for None and bool (a faster bind); the stored
    # values must be exactly what sqlite3 stores without them.
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    assert (bool, sqlite3.PrepareProtocol) in sqlite3.adapters
    writer = make_writer(tmp_path, "normal")
    writer._connect()
    for i in range(2):
        call = Call(request_id=f"r{i}", door="http", endpoint="chat", body=PROMPT, model="m")
        call.deployment = Deployment("gpt-4o-mini", "up", "gpt-4o-mini")
        call.prompt_json = b'[{"role":"user","content":"Say hello"}]'
        outcome = Outcome(200, response_body=ANSWER)  # no usage read: tokens are counted
        record = writer.builder.build(call, outcome, time.time(), 0.001, None)
        writer.submit((record, call, outcome, None))
    writer._drain()
    assert writer.store is not None
    writer.store.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    try:
        rows = conn.execute(
            "SELECT typeof(key_id), key_id, typeof(ttft_ms), typeof(stream), stream, "
            "typeof(tokens_counted), tokens_counted, typeof(status), typeof(prompt) "
            "FROM requests"
        ).fetchall()
        conn.execute("CREATE TABLE t (a, b, c)")
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (None, True, False))
        assert conn.execute("SELECT typeof(a), b, typeof(b), c FROM t").fetchone() == (
            "null",
            1,
            "integer",
            0,
        )
    finally:
        conn.close()
    assert rows == [("null", None, "null", "integer", 0, "integer", 1, "integer", "text")] * 2
