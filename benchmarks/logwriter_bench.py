"""The Rust log writer on its own: records/s sustained into SQLite and into PostgreSQL on
loopback (target >= 30,000 each), and what `submit()` costs the calling thread.

Each run submits N records as fast as one thread can (the writer batching and writing on its
own thread meanwhile), then waits for `flush()`: records/s is N over the time from the first
submit to the end of the flush, so it is the writer's pace whenever submitting is faster. The
submit cost is the submitting loop's time over N (queue lock and copy included, while the
writer runs). The process CPU per record (both threads, SQLite's work included, the
PostgreSQL server's not) is the steadier figure on a shared machine. PostgreSQL is
DATABASE_URL or postgresql://postgres@127.0.0.1:5432/test, in a schema of its own, dropped
afterwards; skipped with a line when unreachable.

    python benchmarks/logwriter_bench.py [--records 200000] [--runs 3] [--content full]
                                         [--batch-size 500] [--bodies]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import msgspec
from llm_proxy import _core
from llm_proxy.observe.record import LogRecord
from llm_proxy.observe.store import open_store

PROMPT = (
    '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful '
    'assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences. '
    'Reply to jane.doe@example.com or +44 20 7946 0958."}]}'
)
COMPLETION = (
    "Prince Hamlet seeks revenge on his uncle Claudius, who murdered Hamlet's father to seize "
    "the throne and marry his mother. His hesitation and feigned madness lead to a tragic chain "
    "of deaths, including his own."
)


ANSWER = msgspec.json.encode(
    {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": COMPLETION}}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 44, "total_tokens": 75},
    }
)  # fmt: skip

# (record, prompt, answer) as handed to submit()
Submitted = tuple[bytes, bytes | None, bytes | None]


def records(n: int, bodies: bool) -> list[Submitted]:
    """N records as the gateway hands them over (ids given by the writer): with the prompt and
    completion in the record, or (`bodies`) with the request and answer bodies beside it."""
    now = time.time()
    out: list[Submitted] = []
    for i in range(n):
        record = LogRecord(
            id="", ts=now + i * 1e-5, request_id=f"{i:032x}", door="http",
            key_id="key-1", model="gpt-4o-mini", provider="openai",
            provider_model="gpt-4o-mini-2024-07-18", endpoint="chat", status=200,
            latency_ms=412.5, upstream_ms=411.9, overhead_ms=0.6, prompt_tokens=31,
            completion_tokens=44, total_tokens=75, cost_usd=3.1e-05, content="full",
        )  # fmt: skip
        if not bodies:
            record.prompt, record.completion = PROMPT, COMPLETION
        fields = msgspec.structs.asdict(record)
        fields["caller_key"] = "sk-caller-key-abcdefghij"
        raw = msgspec.json.encode(fields)
        out.append((raw, PROMPT.encode(), ANSWER) if bodies else (raw, None, None))
    return out


Content = Literal["full", "redacted", "none"]


def run(
    store: str,
    spool: Path,
    raws: list[Submitted],
    content: Content,
    batch_size: int,
    server: PostgresTarget | None = None,
) -> dict[str, float]:
    writer = _core.LogWriter(
        store, str(spool), queue_max_bytes=4 << 30, content=content, batch_size=batch_size,
        secrets=["sk-provider-secret-0123456789"], id_prefix=uuid.uuid4().hex[:10],
        retention_days=36500.0,
    )  # fmt: skip
    time.sleep(0.2)  # connected
    backend = server.backend_cpu_s() if server is not None else 0.0
    cpu = time.process_time()
    began = time.perf_counter()
    for raw, prompt, answer in raws:
        writer.submit(raw, prompt, answer)
    submitted = time.perf_counter()
    assert writer.flush(600), "flush timed out"
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    if server is not None:
        backend = server.backend_cpu_s() - backend
    assert writer.close(60)
    stats = writer.stats()
    assert stats["written"] == len(raws), stats
    return {
        "records_per_s": len(raws) / (done - began),
        "submit_us": (submitted - began) / len(raws) * 1e6,
        # This process's CPU (submitting thread + writer thread, SQLite included) per record,
        # and the PostgreSQL backend's: steadier than records/s on a shared machine.
        "cpu_us": cpu / len(raws) * 1e6,
        "server_us": backend / len(raws) * 1e6,
    }


def sqlite_target(tmp: Path, i: int) -> str:
    url = f"sqlite:///{tmp / f'bench-{i}.db'}"
    store = open_store(url)
    store.connect()  # the schema, as the gateway creates it at startup
    store.close()
    return url


class PostgresTarget:
    def __init__(self) -> None:
        import psycopg

        self.app = f"logwriter-bench-{uuid.uuid4().hex[:8]}"
        self.url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"
        self.schema = f"llm_proxy_logwriter_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')

    def fresh(self) -> str:
        import psycopg

        sep = "&" if "?" in self.url else "?"
        url = f"{self.url}{sep}options={quote(f'-csearch_path={self.schema}')}"
        url += f"&application_name={self.app}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{self.schema}".requests')
            conn.execute(f'DROP TABLE IF EXISTS "{self.schema}".schema_version')
        store = open_store(url)
        store.connect()
        store.close()
        return url

    def backend_cpu_s(self) -> float:
        """CPU seconds of the writer's server process so far (0 if /proc cannot tell)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.app,)
            ).fetchone()
        if row is None:
            return 0.0
        try:
            fields = Path(f"/proc/{row[0]}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


def report(name: str, results: list[dict[str, float]], size: float) -> None:
    rate = statistics.median(r["records_per_s"] for r in results)
    submit = statistics.median(r["submit_us"] for r in results)
    cpu = statistics.median(r["cpu_us"] for r in results)
    server = statistics.median(r["server_us"] for r in results)
    rates = ", ".join(f"{r['records_per_s']:,.0f}" for r in results)
    print(
        f"{name:<11} {rate:>9,.0f} records/s  (runs: {rates})   submit {submit:.2f} us"
        f"   CPU/record: {cpu:.1f} us here"
        + (f", {server:.1f} us server" if server else "")
        + f"   record {size:,.0f} B"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--content", choices=["full", "redacted", "none"], default="full")
    parser.add_argument("--batch-size", type=int, default=500, help="logging.batch_size")
    parser.add_argument(
        "--bodies",
        action="store_true",
        help="hand over the request and answer bodies for the writer to read the content from",
    )
    args = parser.parse_args()
    raws = records(args.records, args.bodies)
    size = statistics.mean(sum(len(part or b"") for part in r) for r in raws)
    print(
        f"{args.records:,} records a run, content {args.content}, batch_size {args.batch_size},"
        f" {'bodies beside the record' if args.bodies else 'content in the record'},"
        f" median of {args.runs} runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        spool = Path(tmp) / "bench.spool"
        results: list[dict[str, Any]] = [
            run(sqlite_target(Path(tmp), i), spool, raws, args.content, args.batch_size)
            for i in range(args.runs)
        ]
        report("sqlite", results, size)
        try:
            pg = PostgresTarget()
        except Exception as exc:
            print(f"postgresql  skipped: not reachable ({type(exc).__name__}: {exc})")
            return
        try:
            results = [
                run(pg.fresh(), spool, raws, args.content, args.batch_size, pg)
                for _ in range(args.runs)
            ]
            report("postgresql", results, size)
        finally:
            pg.drop()


if __name__ == "__main__":
    main()
