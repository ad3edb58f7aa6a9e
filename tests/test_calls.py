"""The internal Call a front door makes from an OpenAI-format body."""

from __future__ import annotations

import pytest
from llm_proxy.calls import decode_call
from llm_proxy.errors import GatewayError

CHAT = b'{"model": "m1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}'


@pytest.mark.parametrize(
    ("extra", "stream", "include_usage"),
    [
        (b"", False, False),
        (b', "stream": true', True, False),
        (b', "stream": false, "stream_options": {"include_usage": true}', False, True),
        (b', "stream": true, "stream_options": {"include_usage": true}', True, True),
    ],
)
def test_decoded_call_holds_each_part_of_the_request_in_its_field(
    extra: bytes, stream: bool, include_usage: bool
) -> None:
    body = CHAT[:-1] + extra + b"}"
    headers = {"authorization": "Bearer k"}
    call = decode_call("chat", body, door="grpc", request_id="req-1", headers=headers)
    assert (call.request_id, call.door, call.endpoint, call.model) == (
        "req-1",
        "grpc",
        "chat",
        "m1",
    )
    assert call.body is body  # kept as the client sent it, for forwarding
    assert call.prompt_json == b'[{"role": "user", "content": "hi"}]'
    assert (call.stream, call.include_usage) == (stream, include_usage)
    assert call.headers is headers
    assert call.deployment is None and call.cache_status == "off" and call.started > 0


def test_completions_and_embeddings_keep_their_prompt_and_input() -> None:
    call = decode_call(
        "completions",
        b'{"model": "m", "prompt": ["a", "b"]}',
        door="http",
        request_id="r",
        headers={},
    )
    assert (call.endpoint, call.prompt_json, call.stream) == ("completions", b'["a", "b"]', False)
    call = decode_call(
        "embeddings", b'{"model": "e", "input": "text"}', door="http", request_id="r", headers={}
    )
    assert (call.endpoint, call.prompt_json) == ("embeddings", b'"text"')


def test_a_request_without_messages_names_the_missing_field() -> None:
    with pytest.raises(GatewayError) as err:
        decode_call("chat", b'{"model": "m"}', door="http", request_id="r", headers={})
    assert err.value.status == 400 and err.value.param == "messages"
