"""CPU per call of the Messages (and Responses) API's translation, over a chat completions call.

A `/v1/messages` call to an OpenAI-format deployment pays, in the door: decoding the
Anthropic request and translating it to a chat body (instead of `decode_call`), then either
the whole answer back to an Anthropic message, or every chunk of the stream to Anthropic's
events. A chat completions call pays `decode_call` and forwards the answer as it is. This
times both sides in-process (the same functions the door calls) and prints the difference;
the goal is at most 30 us per call. The Responses API's stateless translation is timed the
same way.

    python -m benchmarks.scenarios.messages_translation [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
from llm_proxy import _core
from llm_proxy.calls import Usage, decode_call
from llm_proxy.http.foreign import Target
from llm_proxy.http.messages import MessagesApi
from llm_proxy.http.responses import ResponsesApi
from llm_proxy.mocktext import split_chunks
from llm_proxy.owners import MemoryOwners
from llm_proxy.translate.messages_answer import chat_to_message
from llm_proxy.translate.responses import chat_to_response
from llm_proxy.translate.responses_stream import ResponsesEvents

from tests.support.messages_stream_reference import MessagesStream as PythonMessagesStream

_encoder = msgspec.json.Encoder()
# The goal: CPU added per call over chat completions.
GOAL_US = 30.0
TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TURNS = [
    {"role": "user", "content": "What is the weather like in Paris today, and what to wear?"},
    {"role": "assistant", "content": "Let me check that for you."},
    {"role": "user", "content": "Please be brief; I am about to leave."},
]


def messages_body(stream: bool) -> bytes:
    return _encoder.encode(
        {
            "model": "gpt-4o-mini",
            "max_tokens": 512,
            "system": "You are a concise assistant.",
            "messages": TURNS,
            "tools": [TOOL],
            "temperature": 0.2,
            "stream": stream,
        }
    )


def responses_body(stream: bool) -> bytes:
    tool = {"type": "function", "name": TOOL["name"], "description": TOOL["description"]}
    tool["parameters"] = TOOL["input_schema"]
    return _encoder.encode(
        {
            "model": "gpt-4o-mini",
            "max_output_tokens": 512,
            "instructions": "You are a concise assistant.",
            "input": TURNS,
            "tools": [tool],
            "temperature": 0.2,
            "stream": stream,
        }
    )


def chat_body(stream: bool) -> bytes:
    tool = {
        "type": "function",
        "function": {
            "name": TOOL["name"],
            "description": TOOL["description"],
            "parameters": TOOL["input_schema"],
        },
    }
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "max_tokens": 512,
        "messages": [{"role": "system", "content": "You are a concise assistant."}, *TURNS],
        "tools": [tool],
        "temperature": 0.2,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return _encoder.encode(body)


ANSWER_TEXT = "Mild and sunny, around 21 C. A light jacket for the evening will do. " * 2
WHOLE_ANSWER = _encoder.encode(
    {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER_TEXT, "refusal": None},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 60, "completion_tokens": 36, "total_tokens": 96},
    }
)


def stream_items(pieces: int = 16) -> list[bytes]:
    """A chat stream as the relay hands it over: one item per upstream event, `pieces` of
    them text (as the mock upstream splits its answers)."""
    base = {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1}
    base["model"] = "gpt-4o-mini"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + _encoder.encode({**base, "choices": [choice]}) + b"\n\n"

    items = [chunk({"role": "assistant", "content": ""})]
    items += [chunk({"content": piece}) for piece in split_chunks(ANSWER_TEXT, pieces)]
    items.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 60, "completion_tokens": 36, "total_tokens": 96}
    items.append(b"data: " + _encoder.encode({**base, "choices": [], "usage": usage}) + b"\n\n")
    items.append(b"data: [DONE]\n\n")
    return items


def per_call_us(fn: Callable[[], object], seconds: float) -> float:
    """CPU microseconds per call (process time, best of 5 slices)."""
    for _ in range(200):
        fn()
    best = float("inf")
    for _ in range(5):
        n, start = 0, time.process_time()
        deadline = start + seconds / 5
        while True:
            for _ in range(100):
                fn()
            n += 100
            now = time.process_time()
            if now >= deadline:
                break
        best = min(best, (now - start) / n * 1e6)
    return best


def measure(seconds: float, chunks: int) -> dict[str, dict[str, float]]:
    """CPU us per call of chat completions and of each API, whole and streamed."""
    api = object.__new__(MessagesApi)
    api.targets = {"gpt-4o-mini": Target("gpt-4o-mini", native=False)}
    api.native_providers = frozenset()
    responses = object.__new__(ResponsesApi)
    responses.targets = api.targets
    responses.native_providers = frozenset()
    responses.owners = MemoryOwners()
    usage = Usage(60, 36, 96)
    items = stream_items(chunks)
    headers: dict[str, str] = {}
    rows: dict[str, dict[str, float]] = {}
    for kind, stream in (("whole", False), ("streamed", True)):
        m_body, c_body, r_body = messages_body(stream), chat_body(stream), responses_body(stream)

        def chat_call(c_body: bytes = c_body) -> None:
            decode_call("chat", c_body, door="http", request_id="r", headers=headers)

        calls: dict[str, Callable[[], object]] = {}
        if stream:
            for name, translator_of in (
                ("messages", _core.MessagesStream),
                ("messages (Python reference)", PythonMessagesStream),
            ):

                def messages_call(m_body: bytes = m_body, make: Any = translator_of) -> None:
                    call = api.decode(m_body, "r", headers)
                    translator = make(call.model)
                    for item in items:
                        translator.feed(item)
                    translator.finish()

                calls[name] = messages_call

            def responses_call(r_body: bytes = r_body) -> None:
                call = responses.decode(r_body, "r", headers)
                translator = ResponsesEvents(call.model)
                for item in items:
                    translator.feed(item)
                translator.finish()

        else:

            def messages_call(m_body: bytes = m_body, make: Any = None) -> None:
                call = api.decode(m_body, "r", headers)
                chat_to_message(WHOLE_ANSWER, call.model, usage)

            def responses_call(r_body: bytes = r_body) -> None:
                call = responses.decode(r_body, "r", headers)
                chat_to_response(WHOLE_ANSWER, call.model, usage)

            calls["messages"] = messages_call
        calls["responses"] = responses_call

        chat_us = per_call_us(chat_call, seconds)
        for api_name, fn in calls.items():
            us = per_call_us(fn, seconds)
            rows[f"{api_name} {kind}"] = {
                "chat_us": chat_us,
                "api_us": us,
                "added_us": us - chat_us,
            }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--chunks", type=int, default=16, help="text chunks in the stream")
    args = parser.parse_args(argv)
    rows = measure(args.seconds, args.chunks)
    print(f"| call ({args.chunks} text chunks streamed) | chat completions | this API | added |")
    print("|---|---:|---:|---:|")
    for kind, row in rows.items():
        print(
            f"| {kind} | {row['chat_us']:.1f} us | {row['api_us']:.1f} us "
            f"| {row['added_us']:.1f} us (goal <= {GOAL_US:.0f}) |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
