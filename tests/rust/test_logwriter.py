"""The Rust log writer through its binding, against a real SQLite file and a real PostgreSQL.

The rows it writes are compared field by field with rows written through the Python stores
(SqliteStore, PostgresStore) from the same calls, built by RecordBuilder and given their
content by the pure-Python reference of the content policy (tests/support/content_reference.py);
its redaction is held to the Python detectors (tests/support/redact_reference.py) by a property
test; the store faults (refused, hanging) go through a TCP forwarder the test starts, never by
stopping the machine's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_proxy import _core
from llm_proxy.calls import Call, Deployment, Outcome
from llm_proxy.logstore import open_store
from llm_proxy.logstore.record import (
    LogRecord,
    RecordBuilder,
    _completion_of,
    _read_answer,
    as_row,
)
from llm_proxy.pricing import PriceTable

from tests.support.content_reference import ContentReference, as_stored
from tests.support.redact_reference import redact

ANSWER = (
    b'{"id":"c1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi a.b@example.com, call +44 20 7946 0958"},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3}}'
)
TOOL_ANSWER = (
    b'{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t","type":"function",'
    b'"function":{"name":"f","arguments":"{}"}}]}}]}'
)
TOOL_CALLS = '[{"id":"t","type":"function","function":{"name":"f","arguments":"{}"}}]'
PROMPT = (
    b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"card 4111 1111 1111 1111,'
    b' key sk-provider-secret-0123456789, mine sk-caller-key-abcdefghij"}]}'
)
# What the door keeps of a chat request for counting and the log: its `messages` array.
PROMPT_JSON = msgspec.json.encode(msgspec.json.decode(PROMPT)["messages"])
SECRETS = ["sk-provider-secret-0123456789"]
CALLER_KEY = "sk-caller-key-abcdefghij"  # as the recorder gives it: "Bearer " dropped
WAIT = 30.0


def make_calls() -> list[tuple[Call, Outcome, str | None]]:
    """Calls of every shape a record comes from: whole, stream, error, tools, cache hit."""
    calls: list[tuple[Call, Outcome, str | None]] = []
    for i in range(6):
        call = Call(
            request_id=f"req-{i}", door="http" if i % 2 else "grpc", endpoint="chat",
            body=PROMPT, model="gpt-4o-mini",
        )  # fmt: skip
        call.prompt_json = PROMPT_JSON
        call.deployment = Deployment("gpt-4o-mini", "up", "gpt-4o-mini")
        call.upstream_s = 0.01 * i
        call.key_id = f"key-{i}" if i % 3 else None
        outcome = Outcome(200, response_body=ANSWER)
        if i == 1:
            call.stream = True
            call.first_token_s = 0.002
            outcome = Outcome(200)
        elif i == 2:
            outcome = Outcome(
                502, error_type="upstream_error",
                error_message="upstream said: bad key sk-provider-secret-0123456789 a@b.co",
            )  # fmt: skip
        elif i == 3:
            outcome = Outcome(200, response_body=TOOL_ANSWER)
        elif i == 4:
            call.cache_status = "hit"
        elif i == 5:
            call.team = "team-a"
            call.deployment = None
            outcome = Outcome(404, error_type="model_not_found", error_message="no such model")
        calls.append((call, outcome, CALLER_KEY if i != 4 else None))
    return calls


PRICES = PriceTable()


def python_rows(content: str, ids: list[str]) -> list[LogRecord]:
    """The records as the Python reference stores them: built as the recorder builds them,
    then given their content (policy, redaction, secrets and the caller's key masked)."""
    builder = RecordBuilder(PRICES, content)  # type: ignore[arg-type]
    policy = ContentReference(content, SECRETS)  # type: ignore[arg-type]
    out = []
    for (call, outcome, key), id_ in zip(make_calls(), ids, strict=False):
        record = builder.build(call, outcome, 1_800_000_000.5, 0.0421, key)
        record.id = id_
        policy.apply(record, call, outcome, key)
        out.append(as_stored(record))
    return out


def submitted(ids: list[str]) -> list[bytes]:
    """The same records with their content in the record: text filled but not yet cleaned,
    the caller's key beside it (the writer masks it and never stores it)."""
    builder = RecordBuilder(PRICES, "full")
    fill = ContentReference("full", [])  # fills the text; masks nothing
    out = []
    for (call, outcome, key), id_ in zip(make_calls(), ids, strict=False):
        record = builder.build(call, outcome, 1_800_000_000.5, 0.0421, key)
        record.id = id_
        fill.apply(record, call, outcome, None)
        assert record.caller_key == key
        out.append(msgspec.json.encode(record))
    return out


Handed = list[tuple[bytes, bytes | None, bytes | None]]


def handed_over(ids: list[str]) -> Handed:
    """The records as the recorder hands them over (`CallRecorder._hand_over`, content not
    "none"): figures and a summary's text in the record, the prompt's and a whole answer's
    bytes beside it, for the writer to read."""
    builder = RecordBuilder(PRICES, "full")
    out: Handed = []
    for (call, outcome, key), id_ in zip(make_calls(), ids, strict=False):
        record = builder.build(call, outcome, 1_800_000_000.5, 0.0421, key)
        record.id = id_
        answer = None
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
        out.append((msgspec.json.encode(record), call.prompt_json, answer))
    return out


def sqlite_store(path: Path) -> str:
    """A SQLite log file with the schema Python creates at startup; its URL."""
    url = f"sqlite:///{path}"
    store = open_store(url)
    store.connect()
    store.close()
    return url


def sqlite_rows(path: Path, where: str = "") -> list[tuple[Any, ...]]:
    """Every column but seq, with each value's SQLite type (so 1 and 1.0 differ)."""
    cols = ", ".join(f"{c}, typeof({c})" for c in LogRecord.__struct_fields__)
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT {cols} FROM requests {where} ORDER BY id").fetchall()


def start(store: str, tmp: Path, **kwargs: Any) -> _core.LogWriter:
    kwargs.setdefault("secrets", SECRETS)
    kwargs.setdefault("max_batch_delay_s", 0.01)
    kwargs.setdefault("retention_days", 36500.0)
    return _core.LogWriter(store, str(tmp / "log.spool"), id_prefix="abcdef0123", **kwargs)


def wait_for(predicate: Any, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- SQLite ---------------------------------------------------------------------------------


def submit_all(writer: _core.LogWriter, ids: list[str], handover: str) -> bool:
    if handover == "bodies":
        return all(writer.submit(r, prompt=p, answer=a) for r, p, a in handed_over(ids))
    return all(writer.submit(raw) for raw in submitted(ids))


@pytest.mark.parametrize("handover", ["content_in_record", "bodies"])
@pytest.mark.parametrize("content", ["full", "redacted", "none"])
def test_sqlite_rows_are_identical_to_the_python_writers(
    tmp_path: Path, content: str, handover: str
) -> None:
    ids = [f"{i:014x}abcdef0123{i:06x}" for i in range(6)]
    expected_db = tmp_path / "python.db"
    store = open_store(sqlite_store(expected_db))
    store.write([as_row(r) for r in python_rows(content, ids)])
    store.close()

    db = tmp_path / "rust.db"
    writer = start(sqlite_store(db), tmp_path, content=content)
    assert submit_all(writer, ids, handover)
    assert writer.close(WAIT)
    assert writer.stats()["written"] == 6
    rows = sqlite_rows(db)
    assert rows == sqlite_rows(expected_db)
    assert "sk-provider-secret" not in " ".join(str(v) for row in rows for v in row)


def test_ids_are_given_as_python_gives_them(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    writer = start(sqlite_store(db), tmp_path)
    record = LogRecord(
        id="", ts=1_800_000_000.5, request_id="r", door="http", model="m", endpoint="chat",
        status=200, latency_ms=42.1, upstream_ms=40.0, overhead_ms=2.1,
    )  # fmt: skip
    for _ in range(3):
        writer.submit(msgspec.json.encode(record))
    assert writer.close(WAIT)
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM requests ORDER BY seq")]
    prefix = f"{int((1_800_000_000.5 + 0.0421) * 1_000_000):014x}abcdef0123"
    assert ids == [f"{prefix}{n:06x}" for n in range(3)]


def test_sqlite_file_spool_and_dead_letters_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "log.db"
    writer = start(str(db), tmp_path)  # created by the writer: no schema, so the store is down
    writer.submit(submitted(["a" * 30])[0])
    writer.submit(b"not a record")
    assert writer.close(WAIT)
    stats = writer.stats()
    assert (stats["spooled"], stats["dead_lettered"], stats["store_up"]) == (1, 1, False)
    for path in (db, tmp_path / "log.spool", tmp_path / "log.spool-dead-letter.jsonl"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_nul_in_every_text_field_is_stored_escaped(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    writer = start(sqlite_store(db), tmp_path)
    assert all(writer.submit(raw) for raw in nul_records(20))
    assert writer.close(WAIT)
    stats = writer.stats()
    assert (stats["written"], stats["dead_lettered"]) == (20, 0)
    check_nul_rows(sqlite_rows(db))


def nul_records(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        text = f"a\x00{i}"
        out.append(
            msgspec.json.encode(
                LogRecord(
                    id=f"nul-{i:04d}\x00", ts=time.time(), request_id=text, door=text,
                    key_id=text, team=text, model="gpt\x00x", provider=text,
                    provider_model=text, endpoint=text, status=500, error_type=text,
                    error_message=text, latency_ms=1.0, upstream_ms=0.5, overhead_ms=0.5,
                    cache_status=text, content="full", prompt=text, completion=text,
                    tool_calls=text,
                )
            )
        )  # fmt: skip
    return out


def check_nul_rows(rows: list[tuple[Any, ...]]) -> None:
    assert len(rows) == 20
    for row in rows:
        texts = [v for v in row if isinstance(v, str) and v not in ("text", "real", "integer")]
        assert all("\x00" not in v for v in texts)
        assert "gpt\\u0000x" in row
        assert sum("\\u0000" in v for v in texts) >= 14


def test_a_record_the_store_rejects_is_set_aside_and_the_rest_written(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    url = sqlite_store(db)
    with sqlite3.connect(db) as conn:  # a store that refuses one particular model name
        conn.execute(
            "CREATE TRIGGER no_poison BEFORE INSERT ON requests WHEN NEW.model = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    writer = start(url, tmp_path, batch_size=64)
    raws = []
    record = msgspec.json.decode(submitted(["x"])[0])
    for i in range(200):
        record["id"] = f"id-{i:04d}"
        record["model"] = "poison" if i in (7, 150) else "m"
        raws.append(msgspec.json.encode(record))
    assert all(writer.submit(raw) for raw in raws)
    assert writer.close(WAIT)
    stats = writer.stats()
    assert (stats["written"], stats["dead_lettered"]) == (198, 2)
    dead = [json.loads(line) for line in (tmp_path / "log.spool-dead-letter.jsonl").open()]
    assert sorted(d["record"]["id"] for d in dead) == ["id-0007", "id-0150"]
    assert all("poisoned" in d["error"] for d in dead)


def test_poisoned_spool_does_not_block_the_replay_after_a_restart(tmp_path: Path) -> None:
    # A spool an older writer left: a record with NUL, a torn line, then good records.
    good = submitted([f"g{i:029d}" for i in range(6)])
    spool = tmp_path / "log.spool"
    lines = [nul_records(1)[0], b'{"id": "torn', *good]
    spool.write_bytes(b"\n".join(lines) + b"\n")
    db = tmp_path / "log.db"
    writer = start(sqlite_store(db), tmp_path)
    wait_for(lambda: writer.stats()["written"] >= 7)
    assert writer.close(WAIT)
    assert writer.stats()["dead_lettered"] == 1
    assert len(sqlite_rows(db)) == 7
    assert not spool.exists()


def test_the_queue_is_bounded_by_bytes(tmp_path: Path) -> None:
    raw = submitted(["q" * 30])[0]
    writer = start(
        sqlite_store(tmp_path / "log.db"), tmp_path,
        queue_max_bytes=len(raw) * 10, batch_size=100_000, max_batch_delay_s=30,
    )  # fmt: skip
    accepted = [writer.submit(raw) for _ in range(15)]
    assert accepted == [True] * 10 + [False] * 5
    stats = writer.stats()
    assert (stats["dropped"], stats["queue_bytes"], stats["queue_len"]) == (5, len(raw) * 10, 10)
    assert writer.close(WAIT)
    assert writer.stats()["written"] == 10
    assert len(sqlite_rows(tmp_path / "log.db")) == 1  # one id: the other nine repeat it


@contextmanager
def locked(db: Path) -> Iterator[None]:
    """Hold SQLite's write lock on `db` from another process, as another gateway worker or a
    reader of the log would (the writer links the system SQLite, so an in-process lock would
    work too; another process is the case that matters).
    """
    holder = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline() == b"locked\n"
        yield
    finally:
        holder.stdin.close()
        holder.wait(10)


_LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_a_locked_sqlite_store_spools_within_the_deadline_and_catches_up(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    writer = start(sqlite_store(db), tmp_path, store_timeout_s=0.2, retry_interval_s=0.1)
    with locked(db):
        spool_while_locked(writer)
    wait_for(lambda: writer.stats()["written"] == 6)
    assert writer.close(WAIT)
    assert len(sqlite_rows(db)) == 6


def spool_while_locked(writer: _core.LogWriter) -> None:
    raws = submitted([f"l{i:029d}" for i in range(6)])
    for raw in raws:
        writer.submit(raw)
    began = time.monotonic()
    assert writer.flush(WAIT)
    assert time.monotonic() - began < 2
    assert writer.stats()["spooled"] == 6 and not writer.stats()["store_up"]


def test_retention_purges_old_records_at_start(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    writer = start(sqlite_store(db), tmp_path)
    old, new = (msgspec.json.decode(r) for r in submitted(["o" * 30, "n" * 30]))
    old["ts"] = time.time() - 40 * 86400
    new["ts"] = time.time()
    for record in (old, new):
        writer.submit(msgspec.json.encode(record))
    assert writer.close(WAIT)
    writer = start(str(db), tmp_path, retention_days=30)
    assert writer.close(WAIT)
    assert writer.stats()["purged"] == 1
    assert [row[0] for row in sqlite_rows(db)] == ["n" * 30]


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is a Linux policy")
def test_writer_thread_runs_at_idle_priority_on_request(tmp_path: Path) -> None:
    for priority, policy in (("idle", os.SCHED_IDLE), ("normal", os.SCHED_OTHER)):
        writer = start(sqlite_store(tmp_path / f"{priority}.db"), tmp_path, priority=priority)
        try:
            time.sleep(0.2)  # the thread sets its policy first thing
            tids = [
                int(task.name)
                for task in Path("/proc/self/task").iterdir()
                if (task / "comm").read_text().startswith("llm-proxy-logwr")
            ]
            assert [os.sched_getscheduler(tid) for tid in tids] == [policy]
        finally:
            assert writer.close(WAIT)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER


# -- reading the answer ---------------------------------------------------------------------

_scalar = st.one_of(st.none(), st.text(max_size=6), st.integers(-3, 3), st.booleans())
_tool_calls = st.one_of(
    st.none(), st.lists(st.dictionaries(st.sampled_from(["id", "type"]), _scalar), max_size=2)
)
_message = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {}, optional={"content": st.one_of(_scalar, st.lists(_scalar, max_size=2)),
                      "tool_calls": _tool_calls, "role": st.just("assistant")},
    ),
)  # fmt: skip
_choice = st.fixed_dictionaries({}, optional={"message": _message, "text": _scalar})
_usage = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"prompt_tokens": _scalar, "completion_tokens": _scalar}),
)
_answer = st.fixed_dictionaries(
    {}, optional={"choices": st.lists(_choice, max_size=3), "usage": _usage, "id": _scalar}
)
_body = st.one_of(
    st.builds(lambda a, sep: json.dumps(a, separators=sep).encode(), _answer,
              st.sampled_from([(",", ":"), (", ", ": ")])),
    st.binary(max_size=20),
)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.lists(_body, min_size=1, max_size=15))
def test_completion_is_read_from_the_answer_as_python_reads_it(bodies: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "log.db"
        writer = start(sqlite_store(db), Path(tmp), secrets=[])
        template = msgspec.json.decode(submitted(["x"])[0])
        for i, body in enumerate(bodies):
            template["id"] = f"a{i:04d}"
            template["completion"] = template["tool_calls"] = None
            writer.submit(msgspec.json.encode(template), answer=body)
        assert writer.close(WAIT)
        with sqlite3.connect(db) as conn:
            got = conn.execute("SELECT completion, tool_calls FROM requests ORDER BY id").fetchall()
    assert got == [_completion_of(_read_answer(body)) for body in bodies]


def test_whole_answers_with_tool_calls_are_stored_as_python_reads_them(tmp_path: Path) -> None:
    # Python's answer reader once lost them (`tool_calls: Raw | None` reads as "null only");
    # `AnswerMessage.tool_calls` is now `Raw = NULL`, and both readers keep them.
    assert _completion_of(_read_answer(TOOL_ANSWER)) == ("", TOOL_CALLS)
    db = tmp_path / "log.db"
    writer = start(sqlite_store(db), tmp_path)
    record, prompt, answer = handed_over([f"{i:030d}" for i in range(6)])[3]
    assert answer == TOOL_ANSWER
    writer.submit(record, prompt=prompt, answer=answer)
    assert writer.close(WAIT)
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT completion, tool_calls FROM requests").fetchone()
    assert row == ("", TOOL_CALLS)


# -- redaction ------------------------------------------------------------------------------

# What the detectors look at: digits, separators, letters, the key and e-mail shapes.
_pieces = st.sampled_from(
    [
        "4111 1111 1111 1111", "4111-1111-1111-1112", "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000", "+44 20 7946 0958", "(020) 7946 0958", "2024-01-05",
        "1.2.3", "sk-abcdefghijklmnopqrstuv", "AKIAABCDEFGHIJKLMNOP", "Bearer abcdefghijklmnopq",
        "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl", "ghp_" + "a" * 36, "xoxb-1234567890",
        "AIza" + "b" * 35, "a.b+c@example.co.uk", "user@host", " ", "-", ".", "+", "(", ")",
    ]
)  # fmt: skip
_text = st.lists(
    st.one_of(_pieces, st.text(alphabet="0123456789 -.+()@_abcXYZé€\n", max_size=12)),
    max_size=12,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_text)
def test_redaction_matches_the_python_detectors(text: str) -> None:
    assert _core.redact(text) == redact(text)


def test_redaction_masks_each_kind_as_python_does() -> None:
    text = "sk-abcdefghijklmnopqrstu 4111 1111 1111 1111 a@b.com +44 20 7946 0958"
    assert _core.redact(text) == redact(text) == "[API_KEY] [CARD] [EMAIL] [PHONE]"


# -- PostgreSQL -----------------------------------------------------------------------------


def pg_url() -> str:
    url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL must be reachable in CI: {exc}")
        pytest.skip(f"PostgreSQL is not reachable at {urlsplit(url).hostname}: {exc}")
    return url


def via(url: str, schema: str, port: int | None = None) -> str:
    """`url` using only `schema`, optionally reached through 127.0.0.1:`port`."""
    parts = urlsplit(url)
    if port is not None:
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        parts = parts._replace(netloc=f"{auth}127.0.0.1:{port}")
    sep = "&" if parts.query else ""
    query = f"{parts.query}{sep}options={quote(f'-csearch_path={schema}')}"
    return urlunsplit(parts._replace(query=query))


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """(server URL, a private schema with the log tables), dropped afterwards."""
    import psycopg

    url = pg_url()
    schema = f"llm_proxy_logwriter_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        store = open_store(via(url, schema))
        store.connect()
        store.close()
        yield url, schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_rows(url: str, schema: str) -> list[tuple[Any, ...]]:
    import psycopg

    cols = ", ".join(LogRecord.__struct_fields__)
    with psycopg.connect(via(url, schema)) as conn:
        return conn.execute(f"SELECT {cols} FROM requests ORDER BY id").fetchall()


@pytest.mark.parametrize("handover", ["content_in_record", "bodies"])
@pytest.mark.parametrize("content", ["full", "redacted", "none"])
def test_postgres_rows_are_identical_to_the_python_writers(
    tmp_path: Path, pg_schema: tuple[str, str], content: str, handover: str
) -> None:
    url, schema = pg_schema
    ids = [f"{i:014x}abcdef0123{i:06x}" for i in range(6)]
    writer = start(via(url, schema), tmp_path, content=content)
    assert submit_all(writer, ids, handover)
    assert writer.close(WAIT)
    assert writer.stats()["written"] == 6
    rust = pg_rows(url, schema)
    with psycopg_conn(via(url, schema)) as conn:
        conn.execute("DELETE FROM requests")
    store = open_store(via(url, schema))
    store.write([as_row(r) for r in python_rows(content, ids)])
    store.close()
    assert rust == pg_rows(url, schema)


@contextmanager
def psycopg_conn(url: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def test_postgres_takes_nul_in_every_text_field(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    writer = start(via(url, schema), tmp_path)
    assert all(writer.submit(raw) for raw in nul_records(20))
    assert writer.close(WAIT)
    stats = writer.stats()
    assert (stats["written"], stats["dead_lettered"], stats["spooled"]) == (20, 0, 0)
    check_nul_rows(pg_rows(url, schema))


def server_ssl(url: str) -> bool:
    with psycopg_conn(url) as conn:
        return bool(conn.execute("SHOW ssl").fetchone()[0] == "on")


@pytest.mark.parametrize(("sslmode", "encrypted"), [("disable", False), ("prefer", True)])
def test_postgres_tls_follows_sslmode_as_libpq_reads_it(
    tmp_path: Path, pg_schema: tuple[str, str], sslmode: str, encrypted: bool
) -> None:
    url, schema = pg_schema
    if encrypted and not server_ssl(url):
        pytest.skip("this PostgreSQL has ssl off")
    app = f"logwriter-{uuid.uuid4().hex[:8]}"
    writer = start(f"{via(url, schema)}&sslmode={sslmode}&application_name={app}", tmp_path)
    try:
        writer.submit(submitted(["t" * 30])[0])
        assert writer.flush(WAIT)
        assert writer.stats()["written"] == 1
        with psycopg_conn(url) as conn:
            row = conn.execute(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.application_name = %s",
                (app,),
            ).fetchone()
        assert row == (encrypted,)
    finally:
        assert writer.close(WAIT)


def test_postgres_verify_full_refuses_an_untrusted_certificate(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    if not server_ssl(url):
        pytest.skip("this PostgreSQL has ssl off")
    try:
        writer = start(
            f"{via(url, schema)}&sslmode=verify-full&sslrootcert=system", tmp_path,
            store_timeout_s=1.0,
        )  # fmt: skip
    except ValueError as exc:
        pytest.skip(f"no system roots to check against: {exc}")
    writer.submit(submitted(["v" * 30])[0])
    assert writer.close(WAIT)
    stats = writer.stats()
    assert (stats["written"], stats["spooled"], stats["store_up"]) == (0, 1, False)


def test_bad_tls_settings_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sslmode"):
        start("postgresql://u:secret@127.0.0.1/db?sslmode=sometimes", tmp_path)
    with pytest.raises(ValueError, match=r"/no/such/ca\.pem") as err:
        start(
            "postgresql://u:secret@127.0.0.1/db?sslmode=verify-ca&sslrootcert=/no/such/ca.pem",
            tmp_path,
        )
    assert "secret" not in str(err.value)


class Forwarder:
    """A TCP forwarder to PostgreSQL switched between `pass`, `refuse` (nothing listens,
    open connections cut) and `hang` (connections accepted and held open, nothing relayed)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.mode = "refuse"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def set(self, mode: str) -> None:
        if mode == "refuse":
            self._close_listener()
            self._cut()
        elif mode == "hang":
            self.mode = "hang"  # relaying stops; connections stay open
            if self._listener is None:
                self._listen()
        else:
            self._cut()  # connections held while hanging are never answered: cut them
            if self._listener is None:
                self._listen()
        self.mode = mode

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _cut(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(client)
            if self.mode == "hang":
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.mode == "hang":
                    time.sleep(0.01)  # swallow: the peer waits for an answer that never comes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._close_listener()
        self._cut()


@pytest.fixture
def forwarder(pg_schema: tuple[str, str]) -> Iterator[Forwarder]:
    url = pg_schema[0]
    parts = urlsplit(url)
    door = Forwarder((parts.hostname or "127.0.0.1", parts.port or 5432))
    door.set("pass")
    yield door
    door.close()


def test_a_hanging_postgres_sends_batches_to_the_spool_within_the_deadline(
    tmp_path: Path, pg_schema: tuple[str, str], forwarder: Forwarder
) -> None:
    url, schema = pg_schema
    writer = start(
        via(url, schema, forwarder.port), tmp_path, store_timeout_s=0.5, retry_interval_s=0.2
    )
    raws = submitted([f"h{i:029d}" for i in range(6)])
    writer.submit(raws[0])
    assert writer.flush(WAIT)
    assert writer.stats()["written"] == 1

    forwarder.set("hang")
    began = time.monotonic()
    for raw in raws[1:3]:
        writer.submit(raw)
    assert writer.flush(WAIT)
    assert time.monotonic() - began < 0.5 * 2 + 1.0  # one deadline (plus a retry's connect)
    stats = writer.stats()
    assert stats["spooled"] == 2 and not stats["store_up"] and stats["store_errors"] >= 1

    forwarder.set("refuse")
    writer.submit(raws[3])
    assert writer.flush(WAIT)
    assert writer.stats()["spooled"] == 3

    forwarder.set("pass")
    for raw in raws[4:]:
        writer.submit(raw)
    wait_for(lambda: writer.stats()["written"] == 6)
    assert writer.stats()["store_up"]
    assert writer.close(WAIT)
    assert [row[0] for row in pg_rows(url, schema)] == [f"h{i:029d}" for i in range(6)]


def test_postgres_killed_mid_run_loses_nothing(
    tmp_path: Path, pg_schema: tuple[str, str], forwarder: Forwarder
) -> None:
    url, schema = pg_schema
    writer = start(
        via(url, schema, forwarder.port), tmp_path, store_timeout_s=0.5, retry_interval_s=0.1,
        batch_size=50,
    )  # fmt: skip
    total = 3000
    raws = submitted([f"k{i:029d}" for i in range(6)])
    template = msgspec.json.decode(raws[0])
    stop_at = {1000: "refuse", 1500: "hang", 2200: "pass"}
    for i in range(total):
        if i in stop_at:
            forwarder.set(stop_at[i])
        template["id"] = f"k{i:029d}"
        assert writer.submit(msgspec.json.encode(template))
        if i % 100 == 0:
            time.sleep(0.05)
    wait_for(lambda: writer.stats()["written"] >= total)
    assert writer.close(WAIT)
    stats = writer.stats()
    assert stats["dropped"] == 0 and stats["dead_lettered"] == 0
    assert stats["spooled"] > 0 and stats["store_errors"] > 0  # the store was really away
    assert len(pg_rows(url, schema)) == total


def test_close_with_postgres_down_spools_and_the_next_writer_replays(
    tmp_path: Path, pg_schema: tuple[str, str], forwarder: Forwarder
) -> None:
    url, schema = pg_schema
    forwarder.set("refuse")
    writer = start(via(url, schema, forwarder.port), tmp_path, store_timeout_s=0.5)
    for raw in submitted([f"c{i:029d}" for i in range(6)]):
        writer.submit(raw)
    assert writer.close(WAIT)
    assert writer.stats()["spooled"] == 6
    assert (tmp_path / "log.spool").stat().st_size > 0

    forwarder.set("pass")
    writer = start(via(url, schema, forwarder.port), tmp_path)
    wait_for(lambda: writer.stats()["written"] == 6)
    assert writer.close(WAIT)
    assert len(pg_rows(url, schema)) == 6
    assert not (tmp_path / "log.spool").exists()
