"""A lean Redis connection for the limits hot path: commands pipelined on one socket, replies
parsed by hiredis (redis-py's own C parser).

redis-py's asyncio client spends tens of microseconds of CPU per command on its pool,
connection checks and response callbacks, more than the whole rest of a call; this keeps only
what a reservation needs: pack the command, write it, match the reply to the waiter in order.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis

_pack = hiredis.pack_command


def pack_command(args: tuple[Any, ...]) -> bytes:
    """One command in RESP (hiredis's stub types the tuple too narrowly)."""
    payload: bytes = _pack(args)
    return payload


class RespError(Exception):
    """Redis answered with an error (the message is Redis's)."""


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        # Commands queued in this turn of the event loop: written together at its end.
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False

    def flush(self) -> None:
        self.flush_scheduled = False
        outgoing, self.outgoing = self.outgoing, []
        if self.transport is not None and outgoing:
            self.transport.write(b"".join(outgoing) if len(outgoing) > 1 else outgoing[0])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiters = self.waiters
        while True:
            reply = reader.gets()
            if reply is False:
                return
            waiter = waiters.popleft()
            if waiter.done():
                continue  # its caller gave up (timed out); the reply still had to be read
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(RespError(str(reply)))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("the connection to Redis was closed")
        self.transport = None
        self.outgoing = []
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"redis connection lost: {self.lost}"))


class RespConnection:
    """One pipelined connection, (re)opened on first use after a failure."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"unsupported Redis URL scheme `{parts.scheme}`")
        self.url = url
        self._parts = parts
        self._timeout = connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        # Commands sent once on every new connection (AUTH, SELECT, SCRIPT LOAD).
        self.setup: list[tuple[Any, ...]] = []

    def _ready(self) -> _Protocol | None:
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            return protocol
        return None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        parts = self._parts
        if parts.scheme == "unix":
            _, protocol = await loop.create_unix_connection(_Protocol, parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            _, protocol = await loop.create_connection(
                _Protocol, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
            )
        commands: list[tuple[Any, ...]] = []
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            password = unquote(parts.password)
            commands.append(("AUTH", user, password) if user else ("AUTH", password))
        db = parts.path.strip("/") if parts.scheme != "unix" else ""
        if db and db != "0":
            commands.append(("SELECT", db))
        commands += self.setup
        try:
            waiters = [_send(protocol, pack_command(c)) for c in commands]
            for waiter in waiters:
                await waiter
        except BaseException:
            if protocol.transport is not None:
                protocol.transport.close()  # a refused AUTH or a timeout must not leak it
            raise
        return protocol

    async def protocol(self) -> _Protocol:
        protocol = self._ready()
        if protocol is not None:
            return protocol
        task = self._connecting
        if task is None:
            # One connect for every caller, which none of them can cancel by timing out.
            task = self._connecting = asyncio.ensure_future(
                asyncio.wait_for(self._connect(), self._timeout)
            )
            task.add_done_callback(self._connected)
        return await asyncio.shield(task)

    def _connected(self, task: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not task.cancelled() and task.exception() is None:
            self._protocol = task.result()

    def send_ready(self, payload: bytes) -> asyncio.Future[Any] | None:
        """Send on the open connection; None when there is none (call `send` then)."""
        protocol = self._ready()
        return _send(protocol, payload) if protocol is not None else None

    async def send(self, payload: bytes) -> Any:
        waiter = self.send_ready(payload)
        if waiter is None:
            waiter = _send(await self.protocol(), payload)
        return await waiter

    def close(self) -> None:
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()


def _send(protocol: _Protocol, payload: bytes) -> asyncio.Future[Any]:
    """Queue a command; every command queued in one turn of the loop goes in one write."""
    if protocol.transport is None:
        raise ConnectionError(f"redis connection lost: {protocol.lost}")
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()
    protocol.waiters.append(waiter)
    protocol.outgoing.append(payload)
    if not protocol.flush_scheduled:
        protocol.flush_scheduled = True
        loop.call_soon(protocol.flush)
    return waiter
