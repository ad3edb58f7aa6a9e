"""What the mock upstream answers: routing, provider checks, fault controls and counters."""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from urllib.parse import parse_qs

from . import anthropic_wire, openai_wire
from .http11 import Request
from .responses_wire import ResponsesStore
from .wire import Options, Reply, Whole, decode, encode

_AZURE = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|completions|embeddings)$")
_MALFORMED = b'{"id": "mock-broken", "choices": [{"index": 0, "message": {"role": "assis'


@dataclass(slots=True)
class MockStats:
    """Counters tests read through `GET /_mock/stats`."""

    requests: int = 0
    open_connections: int = 0
    active_streams: int = 0
    streams_completed: int = 0
    streams_aborted: int = 0
    hangs_open: int = 0


@dataclass(slots=True, frozen=True)
class MockSettings:
    """Server-wide defaults for the fault controls; request headers override them."""

    delay_ms: int = 0
    chunks: int = 8
    chunk_delay_ms: int = 0


@dataclass(slots=True)
class Controls:
    status: int = 0
    delay_ms: int = 0
    hang: bool = False
    disconnect_after: int | None = None
    malformed: bool = False
    chunks: int = 8
    chunk_delay_ms: int = 0
    # Share of requests that fail (with x-mock-status, or 500): a flaky deployment.
    fail_ratio: float = 0.0


def _ratio(raw: str | None) -> float:
    try:
        return min(1.0, max(0.0, float(raw))) if raw else 0.0
    except ValueError:
        return 0.0


def _int(headers: dict[str, str], name: str, default: int) -> int:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return default


class MockState:
    """Settings, counters, the last request and the answer cache of one mock server."""

    def __init__(self, settings: MockSettings) -> None:
        self.settings = settings
        self.stats = MockStats()
        self.last: Request | None = None
        # Whole answers by request: same request, same bytes, and no JSON work on a repeat.
        self._answers: dict[tuple[str, bytes], Whole] = {}
        self.responses = ResponsesStore()

    def controls(self, headers: dict[str, str]) -> Controls:
        s = self.settings
        if not any(k.startswith("x-mock-") for k in headers):
            return Controls(delay_ms=s.delay_ms, chunks=s.chunks, chunk_delay_ms=s.chunk_delay_ms)
        after = headers.get("x-mock-disconnect-after")
        return Controls(
            status=_int(headers, "x-mock-status", 0),
            delay_ms=_int(headers, "x-mock-delay-ms", s.delay_ms),
            hang=headers.get("x-mock-hang", "0") not in ("", "0", "false"),
            disconnect_after=_int(headers, "x-mock-disconnect-after", 0) if after else None,
            malformed=headers.get("x-mock-malformed", "0") not in ("", "0", "false"),
            chunks=max(1, _int(headers, "x-mock-chunks", s.chunks)),
            chunk_delay_ms=_int(headers, "x-mock-chunk-delay-ms", s.chunk_delay_ms),
            fail_ratio=_ratio(headers.get("x-mock-fail-ratio")),
        )

    def control_endpoint(self, req: Request) -> Whole:
        if req.path == "/_mock/stats":
            return Whole(200, encode(asdict(self.stats)))
        if req.path == "/_mock/last":
            last = self.last
            if last is None:
                return Whole(200, b"null")
            try:
                body = decode(last.body) if last.body else None
            except ValueError:
                body = None
            shown = {
                "method": last.method,
                "path": last.path,
                "query": last.query,
                "headers": last.headers,
                "body": body,
            }
            return Whole(200, encode(shown))
        if req.path == "/_mock/reset" and req.method == "POST":
            self.stats.requests = self.stats.streams_completed = self.stats.streams_aborted = 0
            self.last = None
            return Whole(200, b'{"ok":true}')
        return openai_wire.error(404, f"Unknown mock control {req.path}")

    def route(self, req: Request, ctl: Controls) -> Reply:
        """The reply for one provider request, faults applied."""
        path = req.path
        anthropic = path.startswith("/v1/messages")
        azure = _AZURE.match(path)
        if azure:
            if not req.headers.get("api-key"):
                return openai_wire.azure_error(
                    401,
                    "Access denied due to invalid subscription key or wrong API endpoint. "
                    "Make sure to provide a valid key for an active subscription.",
                )
            if "api-version" not in parse_qs(req.query):
                return openai_wire.azure_error(404, "Resource not found")
        elif anthropic:
            refused = anthropic_wire.check_headers(req.headers)
            if refused:
                return refused
        status = ctl.status
        if ctl.fail_ratio:
            status = (status if status >= 300 else 500) if random.random() < ctl.fail_ratio else 0
        if status >= 300:
            if anthropic:
                return anthropic_wire.error(status)
            if req.headers.get("x-mock-echo-key"):
                # As OpenAI does for a wrong key: the error quotes the key it was sent.
                sent = req.headers.get("authorization", "").split()[-1:] or [""]
                return openai_wire.error(status, f"Incorrect API key provided: {sent[0]}.")
            return openai_wire.error(status)
        if path.startswith("/v1/responses/") and req.method in ("GET", "DELETE"):
            response_id = path[len("/v1/responses/") :]
            if req.method == "GET":
                return self.responses.retrieve(response_id)
            return self.responses.delete(response_id)
        if req.method == "GET":
            if path == "/v1/models":
                return openai_wire.models()
            if path.startswith("/v1/models/"):
                return openai_wire.model(path[len("/v1/models/") :])
        if req.method != "POST":
            known = anthropic or azure or path.startswith("/v1/")
            return openai_wire.error(405 if known else 404, f"{req.method} {path} is not served")
        if ctl.malformed:
            return self._answer(req, ctl, anthropic, azure)
        if path == "/v1/responses":  # stateful: every create is a new stored response
            return self._answer(req, ctl, anthropic, azure)
        key = (path, req.body)
        cached = self._answers.get(key)
        if cached is not None:
            return cached
        reply = self._answer(req, ctl, anthropic, azure)
        if isinstance(reply, Whole) and reply.status == 200:
            if len(self._answers) >= 4096:
                self._answers.clear()
            self._answers[key] = reply
        return reply

    def _answer(
        self, req: Request, ctl: Controls, anthropic: bool, azure: re.Match[str] | None
    ) -> Reply:
        path = req.path
        try:
            body = decode(req.body)
        except ValueError:
            return (
                anthropic_wire.error(400, "There was an error parsing the body as JSON")
                if anthropic
                else openai_wire.error(400, "We could not parse the JSON body of your request.")
            )
        if not isinstance(body, dict):
            return openai_wire.error(400, "The request body must be a JSON object.")
        if ctl.malformed and not body.get("stream"):
            return Whole(200, _MALFORMED)
        opts = Options(chunks=ctl.chunks, malformed=ctl.malformed)
        if azure:
            deployment, kind = azure.group(1), azure.group(2)
            path = "/v1/" + kind
            body["model"] = deployment
        model = body.get("model")
        if path == "/v1/messages":
            return anthropic_wire.messages(body, opts)
        if path == "/v1/messages/count_tokens":
            return anthropic_wire.count_tokens(body)
        if path == "/v1/responses":
            return self.responses.create(body, opts)
        if path not in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
            return openai_wire.error(404, f"Unknown path {path}")
        if not isinstance(model, str) or not model:
            return openai_wire.error(400, "you must provide a model parameter", "model")
        if path == "/v1/chat/completions":
            return openai_wire.chat(body, model, opts)
        if path == "/v1/completions":
            return openai_wire.completions(body, model, opts)
        return openai_wire.embeddings(body, model)
