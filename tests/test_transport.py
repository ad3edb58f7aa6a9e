"""The upstream HTTP/1.1 client against a real socket server that answers scripted bytes."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from llm_proxy.errors import GatewayError
from llm_proxy.upstream import UpstreamClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test"}


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def run(handler: Handler, body: Callable[[UpstreamClient, str], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(
            max_connections=kw.get("max_connections", 10),
            connect_timeout_s=2,
            max_response_bytes=kw.get("max_response_bytes", 64 << 20),
        )
        await client.start()
        try:
            return await body(client, f"http://127.0.0.1:{port}/v1/chat/completions")
        finally:
            await client.close()
            server.close()

    return asyncio.run(main())


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def answer(raw: bytes, *, keep_open: bool = True, requests: int = 1) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(requests):
                await read_request(reader)
                writer.write(raw)
                await writer.drain()
            if keep_open:
                await reader.read()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handler


def test_request_carries_headers_length_and_body() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def body(client: UpstreamClient, url: str) -> Any:
        return await client.post(url + "?api-version=1", HEADERS, b'{"a":1}', 5)

    resp = run(handler, body)
    assert resp.status == 200 and resp.body == b"{}"
    request = seen[0]
    assert request.startswith(b"POST /v1/chat/completions?api-version=1 HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer sk-test\r\n" in request
    assert b"\r\ncontent-length: 7\r\n" in request
    assert request.endswith(b'\r\n\r\n{"a":1}')


def test_chunked_answer_is_joined_and_headers_are_lowercase() -> None:
    raw = (
        b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n"
        b"Retry-After: 3\r\nX-RateLimit-Remaining: 0\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    resp = run(answer(raw), lambda c, u: c.post(u, HEADERS, b"{}", 5))
    assert (resp.status, resp.body) == (429, b"hello world")
    assert resp.headers["retry-after"] == "3"
    assert resp.headers["x-ratelimit-remaining"] == "0"


def test_gzip_answer_is_decompressed() -> None:
    packed = gzip.compress(b'{"ok":true}')
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    resp = run(answer(raw + packed), lambda c, u: c.post(u, HEADERS, b"{}", 5))
    assert resp.body == b'{"ok":true}'


def test_body_delimited_by_connection_close() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    resp = run(answer(raw, keep_open=False), lambda c, u: c.post(u, HEADERS, b"{}", 5))
    assert resp.body == b"all of it"


def test_connection_is_kept_alive_and_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def body(client: UpstreamClient, url: str) -> list[bytes]:
        return [(await client.post(url, HEADERS, b"{}", 5)).body for _ in range(5)]

    assert run(handler, body) == [b"ok"] * 5
    assert connections == 1


def test_stale_kept_alive_connection_is_retried_on_a_new_one() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        # Claims keep-alive, then drops the connection as soon as the answer is sent.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def body(client: UpstreamClient, url: str) -> list[bytes]:
        first = await client.post(url, HEADERS, b"{}", 5)
        second = await client.post(url, HEADERS, b"{}", 5)
        return [first.body, second.body]

    assert run(handler, body) == [b"ok", b"ok"]
    assert connections == 2


def test_unreachable_upstream_is_502() -> None:
    async def body(client: UpstreamClient, url: str) -> Any:
        return await client.post("http://127.0.0.1:1/v1/x", HEADERS, b"{}", 5)

    with pytest.raises(GatewayError) as info:
        run(answer(b""), body)
    assert info.value.status == 502 and "unreachable" in info.value.message


def test_silent_upstream_is_504_after_the_timeout() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    with pytest.raises(GatewayError) as info:
        run(hang, lambda c, u: c.post(u, HEADERS, b"{}", 0.2))
    assert info.value.status == 504 and "timed out after 0.2 s" in info.value.message


def test_garbage_answer_is_502() -> None:
    with pytest.raises(GatewayError) as info:
        run(answer(b"NOT HTTP AT ALL\r\n\r\n"), lambda c, u: c.post(u, HEADERS, b"{}", 5))
    assert info.value.status == 502


def test_stream_delivers_what_arrived_before_the_connection_broke() -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk(b"data: one\n\n")
        + chunk(b"data: two\n\n")
    )

    async def body(client: UpstreamClient, url: str) -> tuple[list[bytes], Any]:
        stream = await client.post_stream(url, HEADERS, b"{}", 5)
        got: list[bytes] = []
        try:
            async for chunk in stream.chunks():
                got.append(chunk)
        except GatewayError as exc:
            return got, exc
        return got, None

    got, error = run(answer(raw, keep_open=False), body)
    assert b"".join(got) == b"data: one\n\ndata: two\n\n"
    assert error is not None and error.status == 502


def test_stream_reads_until_the_end_and_goes_back_to_the_pool() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
    raw += b"0\r\n\r\n"

    async def body(client: UpstreamClient, url: str) -> list[bytes]:
        out = []
        for _ in range(2):
            stream = await client.post_stream(url, HEADERS, b"{}", 5)
            out.append(b"".join([c async for c in stream.chunks()]))
            stream.close()
            stream.close()  # closing twice must not put the connection in the pool twice
        return out

    assert run(answer(raw, requests=2), body) == [b"data: one\n\n"] * 2


class SlowOk:
    """A server that answers every request on a connection `ok` after `delay_s`, and counts
    the connections open at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.open_now = self.peak = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(self.delay_s)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        finally:
            self.open_now -= 1


def test_pool_limit_queues_requests_instead_of_failing() -> None:
    async def body(client: UpstreamClient, url: str) -> list[Any]:
        return await asyncio.gather(*(client.post(url, HEADERS, b"{}", 5) for _ in range(6)))

    server = SlowOk(0.01)
    answers = run(server, body, max_connections=2)
    assert [a.body for a in answers] == [b"ok"] * 6
    assert server.peak == 2


def closed_when_cancelled(
    reply: bytes, start: Callable[[UpstreamClient, str], Awaitable[Awaitable[Any]]]
) -> bool:
    """`start` gets the client as far as it should go and returns what to cancel; the server
    answers `reply` (if any), then waits. True once it sees the connection closed."""
    closed: asyncio.Future[bool] | None = None

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if reply:
            writer.write(reply)
            await writer.drain()
        await reader.read()  # returns at EOF: the client closed the connection
        assert closed is not None
        closed.set_result(True)

    async def body(client: UpstreamClient, url: str) -> bool:
        nonlocal closed
        closed = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(await start(client, url))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await asyncio.wait_for(closed, 2)

    return bool(run(handler, body))


def test_cancelled_request_closes_its_connection() -> None:
    async def start(client: UpstreamClient, url: str) -> Awaitable[Any]:
        return client.post(url, HEADERS, b"{}", 5)

    assert closed_when_cancelled(b"", start) is True


def test_cancelled_read_of_an_error_body_closes_its_connection() -> None:
    """The client leaves while the upstream's error answer is still arriving: the connection
    must be dropped, not left open and counted against the pool."""

    async def start(client: UpstreamClient, url: str) -> Awaitable[Any]:
        upstream = await client.post_stream(url, HEADERS, b"{}", 30)
        assert upstream.status == 500
        return upstream.read()

    half_error = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100\r\n\r\n{"
    assert closed_when_cancelled(half_error, start) is True


def test_a_woken_pool_waiter_that_is_cancelled_passes_the_connection_on() -> None:
    """Two requests wait for the one connection; the first to be woken is cancelled (its
    client left) before it runs: the other must get the connection, not wait out its timeout."""

    async def body(client: UpstreamClient, url: str) -> bytes:
        first = asyncio.create_task(client.post(url, HEADERS, b"{}", 3))
        await asyncio.sleep(0.05)
        woken = asyncio.create_task(client.post(url, HEADERS, b"{}", 3))
        await asyncio.sleep(0.01)
        other = asyncio.create_task(client.post(url, HEADERS, b"{}", 3))
        await asyncio.sleep(0.01)
        wake_one = client._wake_one

        def wake_then_cancel() -> None:
            wake_one()
            woken.cancel()  # in the same loop turn, before the woken request runs

        client._wake_one = wake_then_cancel  # type: ignore[method-assign]
        assert (await first).status == 200
        client._wake_one = wake_one  # type: ignore[method-assign]
        with pytest.raises(asyncio.CancelledError):
            await woken
        return (await other).body

    assert run(SlowOk(0.1), body, max_connections=1) == b"ok"


# -- TLS (every hosted provider is https) --------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"]
    command += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


def run_tls(
    certificate: tuple[Path, Path], body: Callable[[UpstreamClient, str], Awaitable[Any]]
) -> Any:
    cert, key = certificate

    async def main() -> Any:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        raw = b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"tls":true}'
        server = await asyncio.start_server(answer(raw, requests=2), "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(max_connections=4, connect_timeout_s=2)
        await client.start()
        try:
            return await body(client, f"https://localhost:{port}/v1/chat/completions")
        finally:
            await client.close()
            server.close()

    return asyncio.run(main())


def test_https_upstream_is_verified_and_answers(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test's own CA

    async def body(client: UpstreamClient, url: str) -> list[bytes]:
        return [(await client.post(url, HEADERS, b"{}", 5)).body for _ in range(2)]

    assert run_tls(certificate, body) == [b'{"tls":true}'] * 2


def test_https_upstream_with_an_untrusted_certificate_is_502(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(GatewayError) as info:
        run_tls(certificate, lambda c, u: c.post(u, HEADERS, b"{}", 5))
    assert info.value.status == 502 and "certificate verify failed" in info.value.message


def test_gzip_stream_is_decompressed_as_it_arrives() -> None:
    packed = gzip.compress(b"data: one\n\n" + b"data: two\n\n")
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += chunk(packed[:10]) + chunk(packed[10:]) + b"0\r\n\r\n"

    async def body(client: UpstreamClient, url: str) -> bytes:
        stream = await client.post_stream(url, HEADERS, b"{}", 5)
        return b"".join([c async for c in stream.chunks()])

    assert run(answer(raw), body) == b"data: one\n\ndata: two\n\n"


BOMB = gzip.compress(b"a" * (8 << 20))  # 8 MiB of answer in a few KiB


@pytest.mark.parametrize("streamed", [False, True])
def test_an_answer_over_max_response_bytes_after_decompression_is_502(streamed: bool) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    raw = head % len(BOMB) + BOMB

    async def body(client: UpstreamClient, url: str) -> Any:
        if not streamed:
            return await client.post(url, HEADERS, b"{}", 5)
        stream = await client.post_stream(url, HEADERS, b"{}", 5)
        return b"".join([c async for c in stream.chunks()])

    with pytest.raises(GatewayError) as err:
        run(answer(raw), body, max_response_bytes=1 << 20)
    assert err.value.status == 502
    assert "larger than 1048576 bytes (max_response_bytes)" in err.value.message


def test_an_uncompressed_answer_over_max_response_bytes_is_502() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n" + b"a" * 3_000_000

    async def body(client: UpstreamClient, url: str) -> Any:
        return await client.post(url, HEADERS, b"{}", 5)

    with pytest.raises(GatewayError) as err:
        run(answer(raw), body, max_response_bytes=1 << 20)
    assert err.value.status == 502 and "max_response_bytes" in err.value.message


def drip(byte_every_s: float, count: int) -> Handler:
    """A stream that sends one byte at a time and never completes an event."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(count):
                writer.write(chunk(b"d"))
                await writer.drain()
                await asyncio.sleep(byte_every_s)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    return handler


def test_stream_silence_counts_from_the_last_whole_event_not_the_last_byte() -> None:
    async def body(client: UpstreamClient, url: str) -> Any:
        stream = await client.post_stream(url, HEADERS, b"{}", 0.5)
        started = asyncio.get_running_loop().time()
        received = 0
        with pytest.raises(GatewayError) as err:
            async for data in stream.chunks():
                received += len(data)
        return err.value, received, asyncio.get_running_loop().time() - started

    error, received, took = run(drip(0.1, 100), body)
    assert error.status == 504
    assert received >= 3  # bytes kept coming, yet no event completed within 0.5 s
    assert took < 1.5


def test_a_stream_whose_events_keep_arriving_does_not_time_out() -> None:
    async def body(client: UpstreamClient, url: str) -> Any:
        stream = await client.post_stream(url, HEADERS, b"{}", 0.3)
        received = 0
        async for data in stream.chunks():
            received += len(data)
            stream.event_arrived()  # as the relay says for every whole event
        return received

    assert run(drip(0.1, 12), body) == 12


def test_idle_kept_alive_connections_are_closed_after_the_keepalive_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from llm_proxy.upstream import client as client_module

    monkeypatch.setattr(client_module, "KEEPALIVE_S", 0.2)
    closed = asyncio.Event

    async def body(client: UpstreamClient, url: str) -> Any:
        done = closed()
        server_side: list[asyncio.StreamReader] = []

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            server_side.append(reader)
            await reader.read()  # returns when the client closes the connection
            done.set()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            resp = await client.post(f"http://127.0.0.1:{port}/v1/x", HEADERS, b"{}", 5)
            assert resp.status == 200
            await asyncio.wait_for(done.wait(), 2)
            return True
        finally:
            server.close()

    assert run(answer(b""), body)
