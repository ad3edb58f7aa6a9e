"""How an HTTP exchange can end early, shared by every API the door serves."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from ..calls import SHUTDOWN_MESSAGE
from ..errors import GatewayError

log = logging.getLogger("llm_proxy.http")


class ClientGone(Exception):
    """The client went away (or broke the connection) before its body arrived whole."""


async def first_event(events: AsyncGenerator[bytes, None], request_id: str) -> bytes | None:
    """The stream's first event (None if it has none); its failure is the response's error."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None
    except GatewayError:
        raise
    except Exception:
        raise stream_failed(request_id) from None


def shutting_down() -> GatewayError:
    return GatewayError(503, SHUTDOWN_MESSAGE, code="shutdown")


def stream_failed(request_id: str) -> GatewayError:
    """A stream broken by a bug: logged with its traceback (call inside the `except`), answered
    as a 502 (an HTTP error before the first event, an SSE error event after it)."""
    log.exception("stream %s failed", request_id)
    return GatewayError(502, "stream failed")
