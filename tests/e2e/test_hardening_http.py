"""Bad input and misbehaving clients at the HTTP door: a clear error, nothing lost, no hang."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_observe import logging_config, metrics, record_of, rows, wait_for
from tests.support.servers import Gateway, MockUpstream, add_mock_model, start_gateway

LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def hardened(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Path]]:
    tmp = tmp_path_factory.mktemp("hardened")
    config = logging_config(mock_upstream, tmp)
    config["server"].update({"max_body_bytes": LIMIT, "body_timeout_s": 1.0})
    add_mock_model(config, mock_upstream, "upslow", {"x-mock-delay-ms": "3000"}, timeout_s=10)
    gw = start_gateway(config, tmp)
    yield gw, tmp / "log.db"
    gw.stop()


def raw_request(gw: Gateway, head: bytes, body_parts: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send a request by hand (head, then each body part) and read the response head and body."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:
                break  # the gateway answered and closed before the body was sent whole
            if pause_s:
                time.sleep(pause_s)
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + 10:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data


def chunked_head(gw: Gateway, request_id: str) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{gw.port}\r\n"
        f"content-type: application/json\r\ntransfer-encoding: chunked\r\n"
        f"x-request-id: {request_id}\r\n\r\n"
    ).encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_chunked_body_over_the_limit_is_refused_as_it_arrives(
    hardened: tuple[Gateway, Path],
) -> None:
    gw, _ = hardened
    piece = b"a" * 65536
    parts = [chunk(piece) for _ in range(64)]  # 4 MiB offered against a 256 KiB limit
    started = time.monotonic()
    answer = raw_request(gw, chunked_head(gw, "chunked-413"), parts, pause_s=0.01)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than 262144 bytes" in answer
    # The 4 MiB would take 0.64 s to offer; the answer came once the limit was passed.
    assert time.monotonic() - started < 0.6


def test_a_body_that_stops_arriving_gets_408(hardened: tuple[Gateway, Path]) -> None:
    gw, db = hardened
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{gw.port}\r\n"
        "content-type: application/json\r\ncontent-length: 100\r\nx-request-id: slow-body\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = raw_request(gw, head, [b'{"model": "up'])
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"request_timeout"' in answer
    assert 0.9 < time.monotonic() - started < 5
    assert record_of(db, "slow-body")["status"] == 408


def test_malformed_chunked_encoding_gets_400(hardened: tuple[Gateway, Path]) -> None:
    gw, _ = hardened
    answer = raw_request(gw, chunked_head(gw, "bad-chunks"), [b"zz\r\nnot a chunk\r\n0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_json_nested_thousands_deep_gets_400(hardened: tuple[Gateway, Path]) -> None:
    gw, _ = hardened
    body = b'{"model":"up","messages":' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = httpx.post(gw.base_url + "/chat/completions", content=body, timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "the request body is nested too deeply"


def test_invalid_utf8_gets_a_whole_error_object(hardened: tuple[Gateway, Path]) -> None:
    gw, _ = hardened
    body = b'{"model":"up","messages":[{"role":"user","content":"caf\xe9"}]}'
    r = httpx.post(gw.base_url + "/chat/completions", content=body, timeout=10)
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "not valid UTF-8" in error["message"]
    assert error["code"] is None or isinstance(error["code"], str)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", b'{"model":"nope","messages":[{"role":"user"}]}', 404),
        ("GET", "/v1/models/nope", None, 404),
        ("GET", "/nowhere", None, 404),
        ("PUT", "/v1/chat/completions", b"{}", 405),
        ("POST", "/v1/chat/completions", b"not json", 400),
        ("GET", "/v1/models", None, 200),
    ],
)
def test_every_response_carries_the_overhead_header(
    hardened: tuple[Gateway, Path], method: str, path: str, body: bytes | None, status: int
) -> None:
    gw, _ = hardened
    r = httpx.request(method, gw.url + path, content=body, timeout=10)
    assert r.status_code == status
    assert float(r.headers["x-llm-proxy-overhead-ms"]) >= 0


def test_client_identifiers_are_capped_where_they_are_echoed_and_stored(
    hardened: tuple[Gateway, Path],
) -> None:
    gw, db = hardened
    long_model = "m" * 100_000
    r = httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": long_model, "messages": [{"role": "user", "content": "x"}]},
        headers={"x-request-id": "cap-" + "r" * 300_000},
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model"
    assert len(r.content) < 2000
    assert r.headers["x-request-id"] == ("cap-" + "r" * 300_000)[:128]
    r = httpx.get(gw.url + "/" + "p" * 60_000, timeout=10)
    assert r.status_code == 404 and len(r.content) < 2000
    assert record_of(db, ("cap-" + "r" * 300_000)[:128])["status"] == 400


def test_requests_refused_before_routing_are_counted_and_recorded(
    hardened: tuple[Gateway, Path],
) -> None:
    gw, db = hardened
    url = gw.base_url + "/chat/completions"
    before = metrics(gw)
    cases = [
        ("refused-400", {"content": b"[1,2", "headers": {"content-type": "application/json"}}),
        ("refused-413", {"content": b"x" * (LIMIT + 1)}),
        ("refused-415", {"content": b"{}", "headers": {"content-type": "text/plain"}}),
    ]
    for request_id, kwargs in cases:
        headers: dict[str, Any] = {"x-request-id": request_id, **kwargs.pop("headers", {})}
        r = httpx.post(url, headers=headers, timeout=10, **kwargs)
        assert r.status_code == int(request_id[-3:])
        record = record_of(db, request_id)
        assert (record["status"], record["door"], record["endpoint"]) == (
            int(request_id[-3:]),
            "http",
            "chat",
        )

    def counted(status: str) -> float:
        after = metrics(gw)
        key = next(
            (k for k in after if k[0] == "llm_proxy_requests_total" and ("status", status) in k[1]),
            None,
        )
        return after.get(key, 0.0) - before.get(key, 0.0) if key else 0.0

    for status in ("400", "413", "415"):
        wait_for(lambda s=status: counted(s) >= 1, what=f"{status} counted")  # type: ignore[misc]


def test_a_client_leaving_a_whole_request_cancels_the_upstream_call(
    hardened: tuple[Gateway, Path], mock_upstream: MockUpstream
) -> None:
    gw, db = hardened
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            gw.base_url + "/chat/completions",
            json={"model": "upslow", "messages": [{"role": "user", "content": "wait"}]},
            headers={"x-request-id": "abandoned-whole"},
            timeout=0.5,
        )
    started = time.monotonic()
    record = record_of(db, "abandoned-whole")
    assert record["status"] == 499
    # Recorded when the client left, not when the 3 s upstream would have answered.
    assert record["latency_ms"] < 2500
    assert time.monotonic() - started < 2.5
    assert not rows(db, "request_id = ? AND status = 200", ("abandoned-whole",))
