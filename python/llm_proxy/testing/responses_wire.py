"""OpenAI's Responses API for the mock upstream: create (whole or streamed), with the stored
responses a follow-up (`previous_response_id`) needs, as OpenAI keeps them."""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .. import mocktext
from . import openai_wire
from .wire import (
    Options,
    Reply,
    Stream,
    Whole,
    answer,
    approx_tokens,
    encode,
    int_or_none,
    seed_of,
    short_hash,
    text_of,
)

_ids = itertools.count(1)


def _event(kind: str, data: dict[str, Any], seq: int) -> bytes:
    payload = encode({"type": kind, "sequence_number": seq, **data})
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


class ResponsesStore:
    """The responses this mock has answered, by id (a follow-up to an unknown one is a 404)."""

    def __init__(self, limit: int = 10000) -> None:
        self.limit = limit
        self.stored: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def create(self, body: dict[str, Any], opts: Options) -> Reply:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return openai_wire.error(400, "Missing required parameter: 'model'.", "model")
        items = body.get("input")
        if not isinstance(items, str | list):
            return openai_wire.error(400, "Missing required parameter: 'input'.", "input")
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return openai_wire.error(
                404, f"Previous response with id '{previous}' not found.", "previous_response_id"
            )
        last = items if isinstance(items, str) else text_of(items[-1].get("content"))
        limit = int_or_none(body.get("max_output_tokens"))
        seed = seed_of(items, model, previous, body.get("instructions"))
        reply = answer(seed, limit, None, None, last)
        response_id = f"resp_mock_{short_hash(seed)}{next(_ids):06d}"
        message = {
            "type": "message",
            "id": "msg_" + response_id[5:],
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
        }
        input_tokens = approx_tokens(items)
        output_tokens = len(reply.text.split())
        response = {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": model,
            "output": [message],
            "previous_response_id": previous,
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
        if body.get("store", True):
            self.stored[response_id] = response
            if len(self.stored) > self.limit:
                self.stored.popitem(last=False)
        if body.get("stream"):
            return Stream(self._events(response, reply.text, opts.chunks))
        return Whole(200, encode(response))

    def _events(self, response: dict[str, Any], text: str, chunks: int) -> Iterator[bytes]:
        seq = itertools.count()
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        yield _event("response.created", {"response": started}, next(seq))
        message = response["output"][0]
        item = {**message, "status": "in_progress", "content": []}
        yield _event("response.output_item.added", {"output_index": 0, "item": item}, next(seq))
        where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        yield _event("response.content_part.added", {**where, "part": part}, next(seq))
        for piece in mocktext.split_chunks(text, chunks):
            yield _event("response.output_text.delta", {**where, "delta": piece}, next(seq))
        yield _event("response.output_text.done", {**where, "text": text}, next(seq))
        yield _event(
            "response.content_part.done", {**where, "part": message["content"][0]}, next(seq)
        )
        yield _event("response.output_item.done", {"output_index": 0, "item": message}, next(seq))
        yield _event("response.completed", {"response": response}, next(seq))

    def retrieve(self, response_id: str) -> Whole:
        found = self.stored.get(response_id)
        if found is None:
            return openai_wire.error(404, f"Response with id '{response_id}' not found.")
        return Whole(200, encode(found))

    def delete(self, response_id: str) -> Whole:
        if self.stored.pop(response_id, None) is None:
            return openai_wire.error(404, f"Response with id '{response_id}' not found.")
        return Whole(200, encode({"id": response_id, "object": "response", "deleted": True}))
