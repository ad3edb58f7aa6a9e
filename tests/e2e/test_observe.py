"""Request logs, spend and metrics, through the real gateway (`llm-proxy serve`)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc
from llm_proxy.logstore.schema import migrations
from prometheus_client.parser import text_string_to_metric_families

from tests.support.postgres import TcpDoor, database_url, private_schema, with_search_path
from tests.support.servers import (
    Gateway,
    MockUpstream,
    add_mock_model,
    standard_config,
    start_gateway,
)

CLIENT_KEY = "sk-client-VIRTUAL-0123456789abcdef"
SECRETS = (b"sk-up-SECRET", b"az-SECRET", b"ant-SECRET", CLIENT_KEY.encode())
EMAIL = "jane.roe@example.org"
CARD = "4539 1488 0343 6467"  # Luhn-valid
IBAN = "GB82 WEST 1234 5698 7654 32"
API_KEY = "sk-proj-Zx9fQ2mL7pR4tV8wB1nC"
PII_PROMPT = f"Write to {EMAIL}, charge card {CARD}, refund to {IBAN}; my key is {API_KEY}."


# -- helpers ------------------------------------------------------------------------------


def logging_config(upstream: MockUpstream, tmp: Path, **logging: Any) -> dict[str, Any]:
    config = standard_config(upstream)
    config["logging"] = {
        "enabled": True,
        "store": f"sqlite:///{tmp / 'log.db'}",
        "spool_path": str(tmp / "log.spool"),
        "flush_interval_s": 0.05,
        "store_timeout_s": 0.3,
        "retry_interval_s": 0.2,
        **logging,
    }
    return config


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def rows(db: Path, where: str = "1=1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM requests WHERE {where}", params)]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def record_of(db: Path, request_id: str) -> dict[str, Any]:
    found = wait_for(lambda: rows(db, "request_id = ?", (request_id,)), what=request_id)
    assert len(found) == 1
    return dict(found[0])


def store_bytes(tmp: Path) -> bytes:
    """Everything the store and spool hold on disk (database, WAL, spool files)."""
    return b"".join(p.read_bytes() for p in tmp.iterdir() if p.name.startswith(("log.", "log-")))


def metrics(gw: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def run_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def chat(gw: Gateway, model: str = "gpt-4o-mini", text: str = "Say hello", **kw: Any) -> Any:
    return client(gw).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )


# -- one gateway with logging at `full` for the record tests ------------------------------


@pytest.fixture(scope="module")
def logged(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Path]]:
    tmp = tmp_path_factory.mktemp("observe")
    gw = start_gateway(logging_config(mock_upstream, tmp), tmp)
    yield gw, tmp
    gw.stop()


def test_whole_call_is_recorded_with_reported_usage_and_cost(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    raw = chat(gw, text="Tell me about logging")
    reply = raw.parse()
    rec = record_of(tmp / "log.db", raw.headers["x-request-id"])
    assert rec["door"] == "http"
    assert rec["endpoint"] == "chat"
    assert rec["model"] == "gpt-4o-mini"
    assert (rec["provider"], rec["provider_model"]) == ("up", "gpt-4o-mini")
    assert rec["stream"] == 0
    assert rec["status"] == 200 and rec["error_type"] is None
    assert rec["latency_ms"] > 0 and rec["upstream_ms"] > 0
    assert rec["overhead_ms"] == pytest.approx(rec["latency_ms"] - rec["upstream_ms"], abs=1e-6)
    assert rec["ttft_ms"] is None
    assert abs(rec["ts"] - time.time()) < 60
    assert rec["prompt_tokens"] == reply.usage.prompt_tokens
    assert rec["completion_tokens"] == reply.usage.completion_tokens
    assert rec["total_tokens"] == reply.usage.total_tokens
    assert rec["tokens_counted"] == 0
    expected = (reply.usage.prompt_tokens * 0.15 + reply.usage.completion_tokens * 0.60) / 1e6
    assert rec["cost_usd"] == pytest.approx(expected)
    assert rec["cache_status"] == "off"
    assert "Tell me about logging" in rec["prompt"]
    assert rec["completion"] == reply.choices[0].message.content


def test_stream_without_usage_is_counted_with_the_tokenizer(logged: tuple[Gateway, Path]) -> None:
    from llm_proxy import _core

    gw, tmp = logged
    messages: list[Any] = [{"role": "user", "content": "Stream me a story"}]
    with client(gw).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=messages, stream=True
    ) as resp:
        request_id = resp.headers["x-request-id"]
        chunks: list[Any] = list(resp.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    rec = record_of(tmp / "log.db", request_id)
    assert rec["stream"] == 1 and rec["status"] == 200
    assert rec["ttft_ms"] is not None and 0 < rec["ttft_ms"] <= rec["latency_ms"]
    assert rec["tokens_counted"] == 1
    prompt_json = json.dumps(messages, separators=(",", ":")).encode()
    assert rec["prompt_tokens"] == _core.count_chat_tokens(prompt_json, "gpt-4o-mini")
    assert rec["completion_tokens"] > 0
    assert rec["cost_usd"] is not None and rec["cost_usd"] > 0
    assert rec["completion"] == text


def test_stream_with_usage_records_the_upstream_figures(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    with client(gw).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Count to three"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as resp:
        request_id = resp.headers["x-request-id"]
        usage = [c.usage for c in resp.parse() if c.usage is not None][-1]
    rec = record_of(tmp / "log.db", request_id)
    assert rec["tokens_counted"] == 0
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )


def test_upstream_error_is_recorded_without_tokens_or_cost(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    with pytest.raises(openai.APIStatusError) as info:
        chat(gw, model="up500")
    request_id = info.value.response.headers["x-request-id"]
    rec = record_of(tmp / "log.db", request_id)
    assert rec["status"] == 502
    assert rec["error_type"] == "upstream_error"
    assert rec["provider"] == "up500"
    assert rec["prompt_tokens"] is None and rec["cost_usd"] is None
    assert rec["completion"] is None


def test_unknown_model_is_recorded_with_no_provider(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    with pytest.raises(openai.NotFoundError) as info:
        chat(gw, model="no-such-model")
    rec = record_of(tmp / "log.db", info.value.response.headers["x-request-id"])
    assert (rec["status"], rec["provider"], rec["model"]) == (404, None, "no-such-model")


def test_unknown_price_gives_null_cost_and_dated_snapshot_is_priced(
    logged: tuple[Gateway, Path],
) -> None:
    gw, tmp = logged
    unknown = record_of(tmp / "log.db", chat(gw, model="mock-1").headers["x-request-id"])
    assert unknown["prompt_tokens"] > 0
    assert unknown["cost_usd"] is None
    dated = record_of(tmp / "log.db", chat(gw, model="fast").headers["x-request-id"])
    assert dated["provider_model"] == "gpt-4o-mini-2024-07-18"
    assert dated["cost_usd"] is not None and dated["cost_usd"] > 0


def test_embeddings_are_recorded_without_content(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    raw = client(gw).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one", "two"]
    )
    rec = record_of(tmp / "log.db", raw.headers["x-request-id"])
    assert rec["endpoint"] == "embeddings" and rec["status"] == 200
    assert rec["completion"] is None
    assert rec["cost_usd"] is not None


def test_provider_and_client_keys_never_reach_the_store(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    for model in ("gpt-4o-mini", "azure-gpt", "claude", "up400", "claude429"):
        with contextlib.suppress(openai.APIStatusError):
            chat(gw, model=model, text=f"the key is {CLIENT_KEY}")
    wait_for(lambda: len(rows(tmp / "log.db", "model = 'claude429'")) >= 1)
    data = store_bytes(tmp)
    assert data, "the store should exist"
    for secret in SECRETS:
        assert secret not in data, secret


def test_logs_and_stats_commands_read_the_store(logged: tuple[Gateway, Path]) -> None:
    gw, tmp = logged
    with pytest.raises(openai.APIStatusError):
        chat(gw, model="up500")
    chat(gw, model="mock-1")
    request_id = chat(gw, text="for the cli").headers["x-request-id"]
    record_of(tmp / "log.db", request_id)
    out = run_cli("logs", "--config", str(gw.config_path), "--json", "--since", "1h")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    mine = [r for r in lines if r["request_id"] == request_id]
    assert len(mine) == 1 and mine[0]["model"] == "gpt-4o-mini" and mine[0]["status"] == 200
    assert "prompt" not in mine[0]

    table = run_cli("logs", "--config", str(gw.config_path), "--model", "up500")
    assert table.returncode == 0, table.stderr
    assert "up500" in table.stdout and "gpt-4o-mini " not in table.stdout

    errors = run_cli("logs", "--config", str(gw.config_path), "--json", "--status", "5xx")
    assert all(json.loads(line)["status"] >= 500 for line in errors.stdout.splitlines())

    stats = run_cli("stats", "--config", str(gw.config_path), "--json", "--by", "model")
    assert stats.returncode == 0, stats.stderr
    by_model = {r["model"]: r for r in map(json.loads, stats.stdout.splitlines())}
    stored = rows(tmp / "log.db", "model = 'gpt-4o-mini'")
    assert by_model["gpt-4o-mini"]["calls"] == len(stored)
    assert by_model["gpt-4o-mini"]["prompt_tokens"] == sum(r["prompt_tokens"] or 0 for r in stored)
    assert by_model["up500"]["error_rate"] == 1.0
    assert by_model["mock-1"]["cost_usd"] is None
    assert by_model["gpt-4o-mini"]["p50_ms"] <= by_model["gpt-4o-mini"]["p99_ms"]

    readable = run_cli("stats", "--config", str(gw.config_path), "--by", "provider")
    assert readable.returncode == 0 and "p99 ms" in readable.stdout


def test_logs_follow_prints_new_calls_as_they_are_recorded(logged: tuple[Gateway, Path]) -> None:
    gw, _tmp = logged
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm_proxy.cli",
            "logs",
            "--config",
            str(gw.config_path),
            "--follow",
            "--json",
            "--since",
            "1s",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # let it print the (empty) backlog and start following
        request_id = chat(gw, text="follow me").headers["x-request-id"]
        seen: list[str] = []

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(json.loads(line)["request_id"])
                if seen[-1] == request_id:
                    return

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(15)
        assert request_id in seen
    finally:
        proc.terminate()
        proc.wait(10)


# -- content policy -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["full", "redacted", "none"])
def test_content_policy_decides_what_of_the_prompt_is_stored(
    policy: str, mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(logging_config(mock_upstream, tmp_path, content=policy), tmp_path)
    try:
        whole = chat(gw, text=PII_PROMPT).headers["x-request-id"]
        with client(gw).chat.completions.with_streaming_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PII_PROMPT}], stream=True
        ) as resp:
            streamed = resp.headers["x-request-id"]
            list(resp.parse())
        records = [record_of(tmp_path / "log.db", rid) for rid in (whole, streamed)]
    finally:
        gw.stop()
    data = store_bytes(tmp_path)
    for rec in records:
        assert rec["content"] == policy
        if policy == "full":
            assert all(v in rec["prompt"] for v in (EMAIL, CARD, IBAN, API_KEY))
            assert rec["completion"]
        elif policy == "redacted":
            for marker in ("[EMAIL]", "[CARD]", "[IBAN]", "[API_KEY]"):
                assert marker in rec["prompt"]
            assert "Write to" in rec["prompt"]
        else:
            assert rec["prompt"] is None and rec["completion"] is None
            assert rec["prompt_tokens"] > 0
    if policy != "full":
        for value in (EMAIL, CARD, IBAN, API_KEY):
            assert value.encode() not in data, value
    for secret in SECRETS:
        assert secret not in data


# -- the store going away -----------------------------------------------------------------


def _load(gw: Gateway, n: int, workers: int = 8) -> list[float]:
    """`n` chat calls from `workers` threads; returns each call's latency in seconds."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "load"}]}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=workers)) as http:

        def one(i: int) -> float:
            started = time.perf_counter()
            r = http.post(gw.base_url + "/chat/completions", json=body, headers=headers)
            assert r.status_code == 200, r.text
            return time.perf_counter() - started

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, range(n)))


def test_locked_sqlite_store_does_not_slow_responses_and_loses_nothing(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    gw = start_gateway(logging_config(mock_upstream, tmp_path), tmp_path)
    try:
        _load(gw, 20)
        wait_for(lambda: len(rows(db)) == 20, what="the first 20 records")
        baseline = sorted(_load(gw, 100))
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            locked = sorted(_load(gw, 200))
            wait_for(
                lambda: total(metrics(gw), "llm_proxy_log_spooled_records") > 0,
                what="records in the spool",
            )
            assert len(rows(db)) == 120 or not db.exists() or True  # reads may also be locked
            # Responses are not held up by the store: p50 stays close to the unlocked run.
            assert locked[len(locked) // 2] < baseline[len(baseline) // 2] * 3 + 0.02
            assert locked[-1] < 1.0
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(lambda: len(rows(db)) == 320, timeout=20, what="all 320 records after unlock")
        wait_for(lambda: total(metrics(gw), "llm_proxy_log_spooled_records") == 0)
        samples = metrics(gw)
        assert total(samples, "llm_proxy_log_records_dropped_total") == 0
        assert total(samples, "llm_proxy_log_store_errors_total") > 0
    finally:
        gw.stop()
    assert len({r["id"] for r in rows(db)}) == 320


def test_sigterm_writes_every_queued_record(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    # A long flush interval and a big batch keep the records in the queue until shutdown.
    config = logging_config(mock_upstream, tmp_path, flush_interval_s=60, batch_size=5000)
    gw = start_gateway(config, tmp_path)
    ids = [chat(gw, text=f"q{i}").headers["x-request-id"] for i in range(30)]
    time.sleep(0.3)
    assert len(rows(db)) < 30
    gw.stop()
    assert gw.proc.returncode is not None
    assert sorted(r["request_id"] for r in rows(db)) == sorted(ids)


def test_records_spooled_at_shutdown_are_written_by_the_next_start(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    config = logging_config(mock_upstream, tmp_path)
    gw = start_gateway(config, tmp_path)
    chat(gw)
    wait_for(lambda: len(rows(db)) == 1)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        ids = [chat(gw, text=f"s{i}").headers["x-request-id"] for i in range(25)]
        gw.stop()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    spooled = [p for p in tmp_path.iterdir() if p.name.startswith("log.spool")]
    assert sum(len(p.read_bytes().splitlines()) for p in spooled) == 25
    gw = start_gateway(config, tmp_path)
    try:
        wait_for(lambda: len(rows(db)) == 26, what="the spooled records")
        assert {r["request_id"] for r in rows(db)} >= set(ids)
        wait_for(
            lambda: (
                not any(
                    p.stat().st_size for p in tmp_path.iterdir() if p.name.startswith("log.spool")
                )
            ),
            what="the spool to empty",
        )
    finally:
        gw.stop()


# -- retention ----------------------------------------------------------------------------


def _seed(db: Path, ages_days: list[float]) -> list[str]:
    from llm_proxy.logstore.record import LogRecord, as_row
    from llm_proxy.logstore.sqlite import SqliteStore

    store = SqliteStore(f"sqlite:///{db}")
    store.connect()
    now = time.time()
    records = [
        LogRecord(
            id=f"seed{i}",
            ts=now - age * 86400,
            request_id=f"seed-{i}",
            door="http",
            model="gpt-4o-mini",
            endpoint="chat",
            status=200,
            latency_ms=1.0,
            upstream_ms=0.5,
            overhead_ms=0.5,
        )
        for i, age in enumerate(ages_days)
    ]
    store.write([as_row(r) for r in records])
    store.close()
    return [r.request_id for r in records]


def test_retention_purges_old_records_and_keeps_the_rest(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    ages = [45, 31, 30.5, 29, 10, 1, 0]
    seeded = _seed(db, ages)
    gw = start_gateway(logging_config(mock_upstream, tmp_path, retention_days=30), tmp_path)
    try:
        fresh = chat(gw).headers["x-request-id"]
        wait_for(lambda: len(rows(db, "request_id LIKE 'seed-%'")) == 4, what="the purge")
        time.sleep(0.3)
        kept = {r["request_id"] for r in rows(db)}
        assert kept == {seeded[i] for i, age in enumerate(ages) if age < 30} | {fresh}
    finally:
        gw.stop()


def test_max_rows_keeps_only_the_newest(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    seeded = _seed(db, [0.0] * 40)
    gw = start_gateway(logging_config(mock_upstream, tmp_path, max_rows=15), tmp_path)
    try:
        wait_for(lambda: len(rows(db)) == 15, what="the purge")
        assert {r["request_id"] for r in rows(db)} == set(seeded[-15:])
    finally:
        gw.stop()


# -- metrics ------------------------------------------------------------------------------


def test_metrics_parse_and_count_the_calls_made(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    gw = start_gateway(logging_config(mock_upstream, tmp_path), tmp_path)
    try:
        for _ in range(3):
            chat(gw)
        for _ in range(2):
            list(
                client(gw).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "s"}], stream=True
                )
            )
        with pytest.raises(openai.APIStatusError):
            chat(gw, model="up500")
        wait_for(lambda: total(metrics(gw), "llm_proxy_requests_total") == 6, what="6 calls")
        s = metrics(gw)
        ok = {"model": "gpt-4o-mini", "provider": "up", "door": "http", "cache": "off"}
        assert total(s, "llm_proxy_requests_total", status="200", **ok) == 5
        assert total(s, "llm_proxy_requests_total", status="502", model="up500") == 1
        assert total(s, "llm_proxy_request_duration_seconds_count") == 6
        assert total(s, "llm_proxy_overhead_seconds_count") == 6
        assert total(s, "llm_proxy_time_to_first_token_seconds_count") == 2
        assert total(s, "llm_proxy_upstream_errors_total", provider="up500") == 1
        stored = wait_for(lambda: len(rows(db)) == 6 and rows(db))
        for kind in ("prompt", "completion"):
            assert total(s, "llm_proxy_tokens_total", kind=kind) == sum(
                r[f"{kind}_tokens"] or 0 for r in stored
            )
        assert total(s, "llm_proxy_cost_usd_total") == pytest.approx(
            sum(r["cost_usd"] or 0 for r in stored)
        )
        # The writer counts a batch after its write commits, so after the rows are visible.
        written = "llm_proxy_log_records_written_total"
        wait_for(lambda: total(metrics(gw), written) == 6, what="6 records written")
        s = metrics(gw)
        assert total(s, "llm_proxy_log_queue_depth") == 0
        assert total(s, "llm_proxy_log_spooled_records") == 0
        assert total(s, written) == 6
    finally:
        gw.stop()


def test_metrics_with_two_workers_count_every_call(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    config = logging_config(mock_upstream, tmp_path)
    config["server"]["workers"] = 2
    (tmp_path / "prom").mkdir()
    gw = start_gateway(config, tmp_path, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom")})
    try:
        _load(gw, 40, workers=8)
        wait_for(lambda: len(rows(tmp_path / "log.db")) == 40, what="40 records")
        for _ in range(6):  # whichever worker answers the scrape, the sum is the same
            s = metrics(gw)
            assert total(s, "llm_proxy_requests_total") == 40
            assert total(s, "llm_proxy_request_duration_seconds_count") == 40
    finally:
        gw.stop()


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = database_url()
    with private_schema(url) as schema:
        yield url, schema


def _pg_rows(url: str, schema: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(with_search_path(url, schema), autocommit=True) as conn:
        try:
            return list(conn.execute("SELECT request_id, status, prompt_tokens FROM requests"))
        except psycopg.errors.UndefinedTable:
            return []


def test_postgres_store_gets_schema_and_records(
    pg_schema: tuple[str, str], mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    import psycopg

    url, schema = pg_schema
    gw = start_gateway(
        logging_config(mock_upstream, tmp_path, store=with_search_path(url, schema)), tmp_path
    )
    try:
        ids = {chat(gw, text=f"pg{i}").headers["x-request-id"] for i in range(5)}
        wait_for(lambda: len(_pg_rows(url, schema)) == 5, what="5 rows in postgres")
        assert {r[0] for r in _pg_rows(url, schema)} == ids
        with psycopg.connect(with_search_path(url, schema)) as conn:
            latest = len(migrations("postgres"))
            assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (latest,)
        stats = run_cli("stats", "--config", str(gw.config_path), "--json")
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout.splitlines()[0])["calls"] == 5
    finally:
        gw.stop()


def test_postgres_down_during_load_then_every_record_written(
    pg_schema: tuple[str, str], mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    from urllib.parse import urlsplit

    url, schema = pg_schema
    parts = urlsplit(url)
    door = TcpDoor((parts.hostname or "127.0.0.1", parts.port or 5432))
    door.open()
    store = with_search_path(url, schema, host_port=("127.0.0.1", door.port))
    gw = start_gateway(logging_config(mock_upstream, tmp_path, store=store), tmp_path)
    try:
        _load(gw, 10)
        wait_for(lambda: len(_pg_rows(url, schema)) == 10, what="the first rows")
        door.shut()
        latencies = sorted(_load(gw, 150))
        assert latencies[-1] < 1.0
        wait_for(lambda: total(metrics(gw), "llm_proxy_log_spooled_records") > 0)
        assert total(metrics(gw), "llm_proxy_log_store_up") == 0
        door.open()
        wait_for(lambda: len(_pg_rows(url, schema)) == 160, timeout=20, what="160 rows")
        wait_for(lambda: total(metrics(gw), "llm_proxy_log_spooled_records") == 0)
    finally:
        gw.stop()
        door.shut()
    assert len(_pg_rows(url, schema)) == 160


# -- calls the client abandons ------------------------------------------------------------


def test_cancelled_grpc_calls_are_still_recorded(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "log.db"
    config = logging_config(mock_upstream, tmp_path)
    add_mock_model(config, mock_upstream, "slow", {"x-mock-delay-ms": "3000"}, timeout_s=10)
    gw = start_gateway(config, tmp_path, grpc=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            message = pb.ChatMessage(role="user", content="cancel me")
            whole = stub.ChatCompletion.future(
                pb.ChatCompletionRequest(model="slow", messages=[message]),
                metadata=(("x-request-id", "cancel-whole"),),
            )
            stream = stub.StreamChatCompletion(
                pb.StreamChatCompletionRequest(model="slow", messages=[message]),
                metadata=(("x-request-id", "cancel-stream"),),
            )
            time.sleep(0.5)  # both are waiting on the upstream
            whole.cancel()
            stream.cancel()
        for request_id in ("cancel-whole", "cancel-stream"):
            record = record_of(db, request_id)
            assert record["status"] == 499
            assert record["error_type"] == "client_closed"
    finally:
        gw.stop()
