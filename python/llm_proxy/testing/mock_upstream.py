"""A fast mock LLM upstream (OpenAI, Azure OpenAI, Anthropic) on a raw asyncio Protocol.

Fault controls, per request header or server-wide from the command line:
x-mock-status, x-mock-delay-ms, x-mock-hang, x-mock-disconnect-after, x-mock-malformed,
x-mock-chunks, x-mock-chunk-delay-ms, x-mock-fail-ratio (that share of requests fails, with
x-mock-status or 500). `GET /_mock/last`, `GET /_mock/stats` and
`POST /_mock/reset` let tests see what arrived and how streams ended.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from typing import cast

from .. import mocktext
from .http11 import CONTINUE, LAST_CHUNK, BadRequest, Request, chunk, head, parse_request, whole
from .routing import Controls, MockSettings, MockState, MockStats
from .wire import Stream, Whole


class _Connection(asyncio.Protocol):
    """One client connection: requests are answered strictly in order (pipelining-safe)."""

    def __init__(self, state: MockState, connections: set[_Connection]) -> None:
        self._state = state
        self._connections = connections
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._continued = False
        self._closed = False
        self._writable: asyncio.Future[None] | None = None
        # The last plain request on this connection, its parsed form and its answer's bytes:
        # a load generator repeats one request, and the same bytes get the same answer.
        self._repeat: tuple[bytes, Request, bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._state.stats.open_connections += 1
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._state.stats.open_connections -= 1
        self._connections.discard(self)
        if self._task is not None:
            self._task.cancel()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._task is None:
            self._process()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _process(self) -> None:
        transport, state = self._transport, self._state
        assert transport is not None
        while not self._closed:
            repeat = self._repeat
            if repeat is not None and self._buf.startswith(repeat[0]):
                del self._buf[: len(repeat[0])]
                state.stats.requests += 1
                state.last = repeat[1]
                transport.write(repeat[2])
                continue
            try:
                req, used = parse_request(self._buf)
            except BadRequest as exc:
                transport.write(whole(400, str(exc).encode(), [], keep_alive=False))
                transport.close()
                return
            if req is None:
                return
            if used == 0:  # Expect: 100-continue, body not here yet
                if not self._continued:
                    self._continued = True
                    transport.write(CONTINUE)
                return
            self._continued = False
            # Only a plain kept-alive request can be answered again from stored bytes.
            plain = req.keep_alive and not any(k.startswith("x-mock-") for k in req.headers)
            raw = bytes(self._buf[:used]) if plain else b""
            del self._buf[:used]
            if req.path.startswith("/_mock/"):
                self._send_whole(state.control_endpoint(req), req.keep_alive)
                continue
            state.stats.requests += 1
            state.last = req
            ctl = state.controls(req.headers)
            if ctl.hang or ctl.delay_ms > 0:
                self._task = asyncio.ensure_future(self._serve_later(req, ctl))
                return
            reply = state.route(req, ctl)
            if isinstance(reply, Whole):
                answer = whole(reply.status, reply.body, reply.headers, req.keep_alive)
                if plain and reply.status == 200:
                    self._repeat = (raw, req, answer)
                self._send(answer, req.keep_alive)
            elif ctl.chunk_delay_ms > 0 or ctl.disconnect_after is not None:
                self._task = asyncio.ensure_future(self._stream(reply, ctl, req.keep_alive))
                return
            else:
                self._stream_now(reply, ctl, req.keep_alive)

    def _send_whole(self, reply: Whole, keep_alive: bool) -> None:
        self._send(whole(reply.status, reply.body, reply.headers, keep_alive), keep_alive)

    def _send(self, answer: bytes, keep_alive: bool) -> None:
        assert self._transport is not None
        self._transport.write(answer)
        if not keep_alive:
            self._transport.close()
            self._closed = True

    def _stream_now(self, reply: Stream, ctl: Controls, keep_alive: bool) -> None:
        transport, stats = self._transport, self._state.stats
        assert transport is not None
        transport.write(head(200, reply.headers, keep_alive))
        for i, event in enumerate(reply.events):
            if ctl.malformed and i == 1:
                transport.write(chunk(reply.bad_event))
            transport.write(chunk(event))
        transport.write(LAST_CHUNK)
        stats.streams_completed += 1
        if not keep_alive:
            transport.close()
            self._closed = True

    async def _serve_later(self, req: Request, ctl: Controls) -> None:
        stats = self._state.stats
        if ctl.hang:
            stats.hangs_open += 1
            try:
                await asyncio.get_running_loop().create_future()
            finally:
                stats.hangs_open -= 1
        await asyncio.sleep(ctl.delay_ms / 1000.0)
        reply = self._state.route(req, ctl)
        if isinstance(reply, Whole):
            self._send_whole(reply, req.keep_alive)
            self._resume()
        else:
            await self._stream(reply, ctl, req.keep_alive)

    async def _stream(self, reply: Stream, ctl: Controls, keep_alive: bool) -> None:
        transport, stats = self._transport, self._state.stats
        assert transport is not None
        stats.active_streams += 1
        try:
            transport.write(head(200, reply.headers, keep_alive))
            for i, event in enumerate(reply.events):
                if ctl.disconnect_after is not None and i >= ctl.disconnect_after:
                    transport.close()  # flushes what was sent, then ends mid-stream
                    self._closed = True
                    return
                if i and ctl.chunk_delay_ms > 0:
                    await asyncio.sleep(ctl.chunk_delay_ms / 1000.0)
                if self._writable is not None:
                    await self._writable
                if self._closed:
                    raise asyncio.CancelledError
                if ctl.malformed and i == 1:
                    transport.write(chunk(reply.bad_event))
                transport.write(chunk(event))
            transport.write(LAST_CHUNK)
            stats.streams_completed += 1
        except asyncio.CancelledError:
            stats.streams_aborted += 1
            raise
        finally:
            stats.active_streams -= 1
        if not keep_alive:
            transport.close()
            self._closed = True
        self._resume()

    def _resume(self) -> None:
        self._task = None
        if not self._closed and self._buf:
            self._process()


class MockUpstream:
    """A running mock upstream: `.port`, `.url`, `.stats`, and `await close()`."""

    def __init__(
        self,
        server: asyncio.Server,
        state: MockState,
        connections: set[_Connection],
        host: str,
        port: int,
    ) -> None:
        self._server = server
        self._state = state
        self._connections = connections
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats(self) -> MockStats:
        return self._state.stats

    async def close(self) -> None:
        self._server.close()
        for conn in list(self._connections):
            conn.abort()
        await self._server.wait_closed()


async def start_mock_upstream(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    delay_ms: int = 0,
    chunks: int = 8,
    chunk_delay_ms: int = 0,
) -> MockUpstream:
    """Start serving on the running loop; port 0 picks a free port."""
    mocktext.reply_text(b"")  # build the reply pool now, not on the first request
    state = MockState(MockSettings(delay_ms=delay_ms, chunks=chunks, chunk_delay_ms=chunk_delay_ms))
    loop = asyncio.get_running_loop()
    connections: set[_Connection] = set()
    server = await loop.create_server(
        lambda: _Connection(state, connections), host, port, backlog=4096
    )
    bound = server.sockets[0].getsockname()[1]
    return MockUpstream(server, state, connections, host, int(bound))


async def _serve(args: argparse.Namespace) -> None:
    upstream = await start_mock_upstream(
        args.host,
        args.port,
        delay_ms=args.delay_ms,
        chunks=args.chunks,
        chunk_delay_ms=args.chunk_delay_ms,
    )
    print(f"mock upstream listening on {upstream.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await upstream.close()


def main(argv: list[str] | None = None) -> int:
    """Run the mock upstream until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="mock-upstream", description="A mock LLM upstream for tests and benchmarks."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--delay-ms", type=int, default=0, help="wait before every answer")
    parser.add_argument("--chunks", type=int, default=8, help="content events per stream")
    parser.add_argument("--chunk-delay-ms", type=int, default=0, help="wait between events")
    args = parser.parse_args(argv)
    # The answer caches hold many small objects; frequent full collections would dominate.
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(args))
    else:
        uvloop.run(_serve(args))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
