"""OpenAI's Responses API on the HTTP door: `POST /v1/responses`.

To a deployment whose provider serves the Responses API (`responses_api`) the client's body
goes through as it came (but for the model name), and the id of each answer is recorded with
the model that gave it, so a follow-up (`previous_response_id`) goes to the deployment that
holds the earlier response. Any other deployment gets a stateless chat completions call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import msgspec
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian.rsgi import Scope

from ..calls import MAX_MODEL_NAME, Call, Headers, Outcome, Reply, shown
from ..config import speaks_responses
from ..errors import GatewayError
from ..owners import ResponseOwners, build_owners
from ..providers.responses import response_head_decoder
from ..translate.responses import TranslationError, chat_to_response, responses_to_chat
from ..translate.responses_stream import ResponsesEvents
from ..wire.sse import event_data, split_events
from .foreign import ForeignApi, native_providers, targets
from .outcomes import json_headers

if TYPE_CHECKING:
    from .door import HttpDoor

_dict_decoder = msgspec.json.Decoder(dict[str, Any])
_encoder = msgspec.json.Encoder()
STORED_PREFIX = "/v1/responses/"
_RESPONSE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


class ResponsesHead(msgspec.Struct):
    model: str
    input: msgspec.Raw = msgspec.Raw(b"null")
    stream: bool | None = None
    previous_response_id: str | None = None


_head_decoder = msgspec.json.Decoder(ResponsesHead)


class _IdWatch:
    """Passes a Responses stream through unchanged, noting the response's id."""

    def __init__(self, owners: ResponseOwners, model: str) -> None:
        self._owners = owners
        self._model = model
        self._seen = False

    def feed(self, item: bytes) -> bytes:
        if not self._seen and b"response.created" in item:
            for raw in split_events(item):
                data = event_data(raw)
                if data is None or b"response.created" not in data:
                    continue
                try:
                    event = _dict_decoder.decode(data)
                    response_id = event["response"]["id"]
                except (msgspec.DecodeError, KeyError, TypeError):
                    continue
                if isinstance(response_id, str):
                    self._owners.record_soon(response_id, self._model)
                    self._seen = True
        return item

    def finish(self) -> bytes:
        return b""


class ResponsesApi(ForeignApi):
    """`POST /v1/responses`; errors are OpenAI error objects."""

    wire = "responses"

    def __init__(self, door: HttpDoor) -> None:
        super().__init__(door)
        self.targets = targets(self.config, speaks_responses)
        self.native_providers = native_providers(self.config, speaks_responses)
        self.owners: ResponseOwners = build_owners(self.config)

    def decode(self, body: bytes, request_id: str, headers: Headers) -> Call:
        """The call, with a follow-up's owner as this process knows it."""
        head = self._head(body)
        previous = head.previous_response_id
        return self._call(head, body, request_id, headers, previous and self.owners.known(previous))

    async def decode_call(self, body: bytes, request_id: str, headers: Headers) -> Call:
        """The call, with a follow-up's owner looked up in the shared table if need be."""
        head = self._head(body)
        previous = head.previous_response_id
        owner = await self.owners.owner(previous) if previous else None
        return self._call(head, body, request_id, headers, owner)

    def _head(self, body: bytes) -> ResponsesHead:
        try:
            head = _head_decoder.decode(body)
        except msgspec.ValidationError as exc:
            if str(exc).startswith("Expected `object`"):
                raise GatewayError(400, "the request body must be a JSON object") from None
            raise GatewayError(400, f"invalid request: {exc}") from None
        except msgspec.DecodeError as exc:
            raise GatewayError(
                400, f"could not parse the JSON body of your request: {exc}"
            ) from None
        except (UnicodeDecodeError, RecursionError):
            raise GatewayError(400, "the request body is not valid UTF-8 JSON") from None
        if len(head.model) > MAX_MODEL_NAME:
            raise GatewayError(
                400, f"`model` is longer than {MAX_MODEL_NAME} characters", param="model"
            )
        return head

    def _call(
        self,
        head: ResponsesHead,
        body: bytes,
        request_id: str,
        headers: Headers,
        owner: str | None,
    ) -> Call:
        # A follow-up goes to the deployment that holds the earlier response.
        model = owner or head.model
        target = self.targets.get(model)
        passthrough = target is not None and target.native
        if passthrough:
            chat_body = body
            raw_input = bytes(head.input)
            if raw_input.startswith(b"["):
                prompt = raw_input
            else:
                prompt = _encoder.encode(
                    [{"role": "user", "content": msgspec.json.decode(raw_input)}]
                )
        else:
            try:
                chat = responses_to_chat(_dict_decoder.decode(body))
            except TranslationError as exc:
                raise GatewayError(400, str(exc), param=exc.param) from None
            except (msgspec.DecodeError, RecursionError):
                raise GatewayError(400, "the request body is nested too deeply") from None
            chat_body, prompt = _encoder.encode(chat), _encoder.encode(chat["messages"])
        stream = bool(head.stream)
        return Call(
            request_id,
            "http",
            "chat",
            chat_body,
            model,
            stream,
            stream,
            prompt,
            headers,
            wire="responses",
            client_body=body,
            passthrough=passthrough,
        )

    def native(self, call: Call) -> bool:
        deployment = call.deployment
        return deployment is not None and deployment.provider in self.native_providers

    async def native_whole(self, call: Call, reply: Reply) -> bytes:
        try:
            response_id = response_head_decoder.decode(reply.body).id
        except msgspec.DecodeError:
            return reply.body
        await self.owners.record(response_id, call.model)
        return reply.body

    def passthrough(self, call: Call) -> _IdWatch:
        return _IdWatch(self.owners, call.model)

    def whole(self, call: Call, reply: Reply) -> bytes:
        return chat_to_response(reply.body, call.model, reply.usage)

    def translator(self, call: Call) -> ResponsesEvents:
        return ResponsesEvents(call.model)

    def error_body(self, exc: GatewayError) -> bytes:
        return exc.body()

    async def stored(
        self, scope: Scope, proto: HTTPProtocol, request_id: str, started: float
    ) -> None:
        """`GET` / `DELETE /v1/responses/{id}`: asked of the deployment that gave the response."""
        try:
            method = scope.method
            if method not in ("GET", "DELETE"):
                raise GatewayError(
                    405,
                    f"method {method} not allowed on {shown(scope.path)}; use GET or DELETE",
                    headers=[("allow", "GET, DELETE")],
                )
            response_id = scope.path[len(STORED_PREFIX) :]
            model = None
            if _RESPONSE_ID.fullmatch(response_id):
                model = await self.owners.owner(response_id)
            if model is None:
                where = "gateway" if self.owners.shared else "gateway worker"
                raise GatewayError(
                    404,
                    f"Response with id '{shown(response_id, 100)}' not found: this {where} "
                    "did not pass it on (or has forgotten it)",
                    code="response_not_found",
                )
            call = Call(
                request_id,
                "http",
                "chat",
                b"",
                model,
                headers=scope.headers,
                started=started,
                wire="responses",
                passthrough=True,
            )
            try:
                provider = await self.pipeline.admit(call)
                deployment = call.deployment
                stored = getattr(provider, "stored_response", None)
                if deployment is None or stored is None or not self.native(call):
                    raise GatewayError(404, f"model `{model}` does not keep responses")
                reply: Reply = await stored(call, deployment, method, response_id)
            except BaseException as exc:
                if isinstance(exc, GatewayError):
                    self.pipeline.ended(call, Outcome(exc.status, exc.type, exc.message))
                else:
                    self.pipeline.ended(call, Outcome(500, "internal_error", type(exc).__name__))
                raise
            self.pipeline.ended(call, Outcome(200))
            if method == "DELETE":
                await self.owners.forget(response_id)
            headers = [*json_headers(request_id, call.overhead_ms()), *reply.headers]
            proto.response_bytes(200, headers, reply.body)
        except GatewayError as exc:
            self.error_response(proto, exc, request_id, started)

    def error_event(self, exc: GatewayError) -> bytes:
        error = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param}
        return b"event: error\ndata: " + _encoder.encode(error) + b"\n\n"
