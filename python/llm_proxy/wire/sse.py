"""Server-Sent Events framing: the one place that reads `data:` lines and writes events."""

from __future__ import annotations

import re

DONE_EVENT = b"data: [DONE]\n\n"

_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)|(?<=\r\r)")


def event_data(event: bytes) -> bytes | None:
    """The data of one SSE event, LF or CRLF (None for comments and keep-alives)."""
    if event.startswith(b"data: ") and event.find(b"\n") == len(event) - 2:
        return event[6:-2]
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            parts.append(value[1:] if value.startswith(b" ") else value)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else b"\n".join(parts)


def split_events(blob: bytes) -> list[bytes]:
    """The SSE events in `blob` (a relay hands over the events of one upstream read together)."""
    parts = _EVENT_END.split(blob)
    return [p for p in parts if p] if len(parts) > 1 else [blob]


def data_event(payload: bytes) -> bytes:
    """One `data:` event carrying `payload` (JSON on one line)."""
    return b"data: " + payload + b"\n\n"
