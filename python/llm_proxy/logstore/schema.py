"""The log store interface, its schema and migrations, and the SQL both backends share."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from .record import COLUMNS

Row = tuple[Any, ...]


class StoreError(Exception):
    """The store cannot be reached or written right now (records are kept and retried)."""


class LogStore(Protocol):
    """Where log records go. Every method may raise StoreError; none is called on the loop."""

    url: str

    def connect(self) -> None:
        """Open the connection and create or upgrade the schema."""

    def write(self, rows: Sequence[Row]) -> None:
        """Insert rows (in COLUMNS order); a row whose id is already stored is skipped."""

    def purge(self, before_ts: float, max_rows: int | None) -> int:
        """Delete records older than `before_ts` and all but the newest `max_rows`."""

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read query written with `?` placeholders."""

    def close(self) -> None: ...


def _types(dialect: str) -> dict[str, str]:
    if dialect == "postgres":
        return {"seq": "BIGSERIAL PRIMARY KEY", "real": "DOUBLE PRECISION", "bool": "BOOLEAN"}
    return {"seq": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL", "bool": "INTEGER"}


def migrations(dialect: str) -> list[list[str]]:
    """The schema, as the statements of each version in order (append; never edit)."""
    t = _types(dialect)
    v1 = [
        f"""CREATE TABLE requests (
            seq {t["seq"]},
            id TEXT NOT NULL UNIQUE,
            ts {t["real"]} NOT NULL,
            request_id TEXT NOT NULL,
            door TEXT NOT NULL,
            key_id TEXT,
            team TEXT,
            model TEXT NOT NULL,
            provider TEXT,
            provider_model TEXT,
            endpoint TEXT NOT NULL,
            stream {t["bool"]} NOT NULL,
            status INTEGER NOT NULL,
            error_type TEXT,
            error_message TEXT,
            latency_ms {t["real"]} NOT NULL,
            upstream_ms {t["real"]},
            overhead_ms {t["real"]},
            ttft_ms {t["real"]},
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            total_tokens INTEGER,
            tokens_counted {t["bool"]} NOT NULL,
            cost_usd {t["real"]},
            cache_status TEXT,
            content TEXT,
            prompt TEXT,
            completion TEXT,
            tool_calls TEXT
        )""",
        "CREATE INDEX requests_ts ON requests (ts)",
        "CREATE INDEX requests_model_ts ON requests (model, ts)",
        "CREATE INDEX requests_key_ts ON requests (key_id, ts)",
        "CREATE INDEX requests_status_ts ON requests (status, ts)",
        "CREATE INDEX requests_request_id ON requests (request_id)",
    ]
    # v2: every attempt of a routed call (deployment, status, latency), as JSON text.
    v2 = ["ALTER TABLE requests ADD COLUMN attempts TEXT"]
    return [v1, v2]


def insert_sql(dialect: str) -> str:
    names = ", ".join(COLUMNS)
    if dialect == "postgres":
        marks = ", ".join(["%s"] * len(COLUMNS))
        return f"INSERT INTO requests ({names}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING"
    marks = ", ".join(["?"] * len(COLUMNS))
    return f"INSERT OR IGNORE INTO requests ({names}) VALUES ({marks})"


PURGE_OLD = "DELETE FROM requests WHERE ts < ?"
# The seq of the oldest row to keep when only the newest N are kept.
KEEP_FROM = "SELECT seq FROM requests ORDER BY seq DESC LIMIT 1 OFFSET ?"
PURGE_BELOW = "DELETE FROM requests WHERE seq < ?"


def retention_cutoff(days: float, now: float | None = None) -> float:
    return (time.time() if now is None else now) - days * 86400.0
