"""Streams end the right way: a client leaving cancels the upstream; SIGTERM drains."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import Gateway, MockUpstream, standard_config, start_gateway

MESSAGES = [{"role": "user", "content": "stream slowly please"}]


def _wait_for(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_mid_stream_closes_the_upstream_connection(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    before = mock_upstream.stats()
    body = {"model": "updrip", "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=10) as http,
        http.stream("POST", gateway.base_url + "/chat/completions", json=body) as resp,
    ):
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data:"))
        assert "chat.completion.chunk" in first
    # The client is gone with ~2 s of stream left; the gateway must drop the upstream now.
    assert _wait_for(
        lambda: mock_upstream.stats()["streams_aborted"] > before["streams_aborted"], 1.5
    ), mock_upstream.stats()
    assert _wait_for(lambda: mock_upstream.stats()["active_streams"] == 0, 2.0)


def _requests_with_status(gateway: Gateway, status: str) -> float:
    families = text_string_to_metric_families(httpx.get(gateway.url + "/metrics").text)
    return sum(
        sample.value
        for family in families
        if family.name == "llm_proxy_requests"
        for sample in family.samples
        if sample.name == "llm_proxy_requests_total" and sample.labels["status"] == status
    )


def test_client_leaving_before_the_upstream_answers_closes_the_upstream(
    gateway: Gateway, mock_upstream: MockUpstream
) -> None:
    """The upstream hangs (a model slow to its first token); the client gives up after 0.5 s.

    The gateway must drop the upstream then, not at its own 30 s timeout, and log a 499.
    """
    hanging = mock_upstream.stats()["hangs_open"]
    left = _requests_with_status(gateway, "499")
    body = {"model": "uphang", "messages": MESSAGES, "stream": True}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=0.5) as http:
        http.post(gateway.base_url + "/chat/completions", json=body)
    assert _wait_for(lambda: _requests_with_status(gateway, "499") == left + 1, 3.0)
    assert _wait_for(lambda: mock_upstream.stats()["hangs_open"] == hanging, 2.0), (
        mock_upstream.stats()
    )


def test_sigterm_lets_an_inflight_stream_finish(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    gw = start_gateway(standard_config(mock_upstream), tmp_path)
    try:
        body = {"model": "updrip", "messages": MESSAGES, "stream": True}
        with (
            httpx.Client(timeout=15) as http,
            http.stream("POST", gw.base_url + "/chat/completions", json=body) as resp,
        ):
            lines = resp.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            os.kill(gw.proc.pid, signal.SIGTERM)
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        assert len(rest) >= 40
        assert gw.proc.wait(timeout=20) == 0
        # Stopped accepting: a new connection is refused.
        try:
            httpx.get(gw.url + "/health", timeout=1)
            refused = False
        except httpx.HTTPError:
            refused = True
        assert refused
    finally:
        gw.stop()
