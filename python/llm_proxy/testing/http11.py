"""Just enough HTTP/1.1 for the mock upstream: request parsing and response framing."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

MAX_HEAD = 64 * 1024

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[529] = "Overloaded"


class BadRequest(Exception):
    """The bytes on the wire are not an HTTP/1.1 request we can read."""


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool
    expects_continue: bool = False


def parse_request(buf: bytearray) -> tuple[Request | None, int]:
    """Parse one request from the front of buf: (request, bytes consumed) or (None, 0)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest("request head too large")
        return None, 0
    lines = buf[:end].decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest("malformed request line") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest("malformed header line")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    start = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        decoded = _dechunk(buf, start)
        if decoded is None:
            return _maybe_continue(method, path, query, headers, keep_alive)
        body, consumed = decoded
    else:
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise BadRequest("bad content-length") from None
        if len(buf) - start < length:
            return _maybe_continue(method, path, query, headers, keep_alive)
        body, consumed = bytes(buf[start : start + length]), start + length
    return Request(method, path, query, headers, body, keep_alive), consumed


def _maybe_continue(
    method: str, path: str, query: str, headers: dict[str, str], keep_alive: bool
) -> tuple[Request | None, int]:
    if headers.get("expect", "").lower() == "100-continue":
        return Request(method, path, query, headers, b"", keep_alive, expects_continue=True), 0
    return None, 0


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
        except ValueError:
            raise BadRequest("bad chunk size") from None
        pos = eol + 2
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", pos - 2)
            return (bytes(body), trailer_end + 4) if trailer_end >= 0 else None
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2


def head(status: int, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if not keep_alive:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def whole(
    status: int, body: bytes, headers: list[tuple[str, str]], keep_alive: bool = True
) -> bytes:
    """A complete response with a Content-Length body."""
    return head(status, [*headers, ("content-length", str(len(body)))], keep_alive) + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
