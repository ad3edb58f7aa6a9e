"""How an HTTP exchange can end early, shared by every API the door serves."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..calls import SHUTDOWN_MESSAGE
from ..errors import GatewayError

if TYPE_CHECKING:
    from ..pipeline import PipelineStream
    from .watch import RequestWatch

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


JSON = "application/json"


def json_headers(request_id: str, overhead_ms: float) -> list[tuple[str, str]]:
    """The headers every JSON answer of the HTTP door starts with (callers add their own)."""
    return [
        ("content-type", JSON),
        ("x-request-id", request_id),
        ("x-llm-proxy-overhead-ms", f"{overhead_ms:.3f}"),
    ]


def shutting_down() -> GatewayError:
    return GatewayError(503, SHUTDOWN_MESSAGE, code="shutdown")


def stream_failed(request_id: str) -> GatewayError:
    """A stream broken by a bug: logged with its traceback (call inside the `except`), answered
    as a 502 (an HTTP error before the first event, an SSE error event after it)."""
    log.exception("stream %s failed", request_id)
    return GatewayError(502, "stream failed")


async def stream_cancelled(
    watch: RequestWatch,
    task: Any,
    stream: PipelineStream | None,
    answer_shutdown: Callable[[], Awaitable[None]],
) -> bool:
    """After a streaming handler's CancelledError: True when the gateway's shutdown or the
    client's leaving caused it (the stream closed and recorded, a shutdown answered through
    `answer_shutdown`); False when the cancellation must go on."""
    if watch.cut_by_shutdown(task):
        # Cut before the worker's grace ran out: the client gets the error (an event once the
        # stream started) and the call its record (503), not a dead socket.
        task.uncancel()
        if stream is not None:
            await stream.aclose()
        await answer_shutdown()
        return True
    if not watch.client_left(task):
        return False
    # The call is logged as the client's (499); nobody is left to read an answer. A started
    # stream has already ended (the cancellation ran through it); `aclose` records one that
    # never started.
    task.uncancel()
    if stream is not None:
        await stream.aclose()
    return True
