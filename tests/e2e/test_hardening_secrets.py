"""Credentials never leave the gateway: not in errors, logs or stored content."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from llm_proxy import _core

from tests.e2e.test_observe import logging_config, record_of
from tests.support.servers import MockUpstream, start_gateway

PROVIDER_KEY = "sk-provider-ECHOED-0123456789abcdef"


def test_a_provider_key_echoed_in_an_upstream_error_never_reaches_the_client(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    config = logging_config(mock_upstream, tmp_path)
    config["providers"]["echo"] = {
        "kind": "openai",
        "base_url": mock_upstream.url + "/v1",
        "api_key": PROVIDER_KEY,
        "headers": {"x-mock-status": "401", "x-mock-echo-key": "1"},
    }
    config["models"]["echo"] = {"provider": "echo", "model": "gpt-4o-mini"}
    gw = start_gateway(config, tmp_path)
    try:
        r = httpx.post(
            gw.base_url + "/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-request-id": "echoed-key"},
            timeout=10,
        )
        assert r.status_code == 401
        assert "Incorrect API key provided" in r.json()["error"]["message"]
        assert PROVIDER_KEY not in r.text
        record = record_of(tmp_path / "log.db", "echoed-key")
        assert PROVIDER_KEY not in str(record)
    finally:
        gw.stop()
    assert PROVIDER_KEY not in (tmp_path / f"gateway-{gw.port}.log").read_text()


@pytest.mark.parametrize("header", ["x-api-key", "api-key"])
def test_a_client_key_in_any_credential_header_is_masked_in_stored_content(
    mock_upstream: MockUpstream, tmp_path: Path, header: str
) -> None:
    client_key = f"sk-client-{header}-0123456789abcdef"
    gw = start_gateway(logging_config(mock_upstream, tmp_path), tmp_path)
    try:
        r = httpx.post(
            gw.base_url + "/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"key {client_key}"}],
            },
            headers={header: client_key, "x-request-id": f"masked-{header}"},
            timeout=10,
        )
        assert r.status_code == 200
        record = record_of(tmp_path / "log.db", f"masked-{header}")
        assert client_key not in str(record)
        assert "[SECRET]" in record["prompt"]
    finally:
        gw.stop()


def test_a_redis_password_is_never_printed(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    config = logging_config(mock_upstream, tmp_path)
    # Nothing listens on port 9: every cache call fails and is logged.
    config["cache"] = {
        "enabled": True,
        "backend": "redis",
        "redis_url": "redis://:hunter2-REDIS-SECRET@127.0.0.1:9/0",
    }
    gw = start_gateway(config, tmp_path)
    try:
        c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    finally:
        gw.stop()
    log = (tmp_path / f"gateway-{gw.port}.log").read_text()
    assert "redis://:***@127.0.0.1:9/0" in log
    assert "hunter2-REDIS-SECRET" not in log
    assert "UserWarning" not in log


def test_the_sqlite_store_and_the_spool_are_readable_by_their_owner_only(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(logging_config(mock_upstream, tmp_path), tmp_path)
    try:
        r = httpx.post(
            gw.base_url + "/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-request-id": "perms"},
            timeout=10,
        )
        assert r.status_code == 200
        record_of(tmp_path / "log.db", "perms")
        made = [p for p in tmp_path.iterdir() if p.name.startswith("log.")]
        assert "log.db" in {p.name for p in made}
    finally:
        gw.stop()
    # A writer whose store is down spools: its spool file is 0600 too.
    spool = _core.LogWriter("postgresql://127.0.0.1:9/none", str(tmp_path / "log.spool"))
    spool.submit(
        b'{"id":"","ts":1.0,"request_id":"r","door":"http","model":"m",'
        b'"endpoint":"chat","status":200,"latency_ms":1.0,"upstream_ms":0.0,'
        b'"overhead_ms":1.0}'
    )
    spool.flush(10)
    try:
        for path in [*made, tmp_path / "log.spool"]:
            if path.exists():
                mode = path.stat().st_mode
                assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"
        assert (tmp_path / "log.spool").exists()
    finally:
        spool.close(5)
