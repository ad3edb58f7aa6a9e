"""What a client or an upstream sends can never stop the log store (issue 17, critical)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_observe import logging_config, wait_for
from tests.support.postgres import database_url, private_schema, with_search_path
from tests.support.servers import MockUpstream, start_gateway


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = database_url()
    with private_schema(url) as schema:
        yield url, schema


def pg_rows(url: str, schema: str) -> dict[str, dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(with_search_path(url, schema), autocommit=True) as conn:
        try:
            cur = conn.cursor(row_factory=dict_row)
            return {r["request_id"]: r for r in cur.execute("SELECT * FROM requests")}
        except psycopg.errors.UndefinedTable:
            return {}


def post(gw: Any, request_id: str, model: str, content: str) -> httpx.Response:
    return httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}]},
        headers={"x-request-id": request_id},
        timeout=10,
    )


def test_a_nul_character_anywhere_never_stops_the_postgres_store(
    pg_schema: tuple[str, str], mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    url, schema = pg_schema
    store = with_search_path(url, schema)
    gw = start_gateway(logging_config(mock_upstream, tmp_path, store=store), tmp_path)
    try:
        # Before any auth or routing: an unknown model whose name holds a NUL (a 404).
        assert post(gw, "nul-model", "gpt\u0000x", "hello").status_code == 404
        # A NUL in the prompt, stored with the content.
        assert post(gw, "nul-prompt", "gpt-4o-mini", "a\u0000b").status_code == 200
        for i in range(5):
            assert post(gw, f"after-{i}", "gpt-4o-mini", "plain").status_code == 200
        wanted = {"nul-model", "nul-prompt", *(f"after-{i}" for i in range(5))}
        found = wait_for(
            lambda: (rows := pg_rows(url, schema)) and wanted <= set(rows) and rows,
            timeout=20,
            what="every record in PostgreSQL",
        )
    finally:
        gw.stop()
    model = found["nul-model"]["model"]
    assert "\u0000" not in model and model.startswith("gpt") and model.endswith("x")
    prompt = found["nul-prompt"]["prompt"]
    assert "\u0000" not in prompt and "a" in prompt and "b" in prompt
    # A restart finds nothing stuck in the spool.
    spool = tmp_path / "log.spool"
    assert not spool.exists() or not spool.read_bytes().strip()
