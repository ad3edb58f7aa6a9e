"""The floor: a Granian RSGI app that reads the body and answers fixed bytes, no upstream call.

`make bench` runs it on the gateway's core beside the gateway: what Granian and the event loop
cost before the gateway does anything.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"object":"noop"}'
HEADERS = [("content-type", "application/json")]


class App:
    async def __call__(self, scope: Any, proto: Any) -> None:
        await proto()
        proto.response_bytes(200, HEADERS, BODY)


app = App()
