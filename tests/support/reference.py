"""Pure-Python references of the Rust core: cache key, token counts, SSE relay.

Slow and plain on purpose: tests/rust holds `llm_proxy._core` against them, and the hot-path
benchmark (benchmarks/scenarios/hotpath.py) measures the core against the same code.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public
import xxhash
from llm_proxy import _core

ROOT = Path(__file__).resolve().parents[2]

# -- tokens: Python tiktoken built from the very rank files compiled into the Rust core ------


@functools.cache
def tiktoken_rs_assets() -> Path:
    """The assets dir of the tiktoken-rs crate the extension was built with."""
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--offline"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    )
    (package,) = [p for p in meta["packages"] if p["name"] == "tiktoken-rs"]
    return Path(package["manifest_path"]).parent / "assets"


@functools.cache
def python_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own constructor arguments for `name`, with the ranks read from local files."""
    path = tiktoken_rs_assets() / f"{name}.tiktoken"

    def local_ranks(*_args: Any, **_kwargs: Any) -> dict[bytes, int]:
        return tiktoken.load.load_tiktoken_bpe(str(path))

    with mock.patch.object(openai_public, "load_tiktoken_bpe", local_ranks):
        spec = getattr(openai_public, name)()
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )


def reference_chat_tokens(messages: list[dict[str, Any]], encoding: str) -> int:
    """OpenAI cookbook num_tokens_from_messages, extended to parts and tool calls."""
    enc = python_encoding(encoding)

    def n(s: str) -> int:
        return len(enc.encode_ordinary(s))

    def function_tokens(f: Any) -> int:
        if not isinstance(f, dict):
            return 0
        return sum(n(f[k]) for k in ("name", "arguments") if isinstance(f.get(k), str))

    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            if isinstance(value, str):
                total += n(value) + (1 if key == "name" else 0)
            elif key == "content" and isinstance(value, list):
                for part in value:
                    if (
                        isinstance(part, dict)
                        and part.get("type") == "text"
                        and isinstance(part.get("text"), str)
                    ):
                        total += n(part["text"])
            elif key == "tool_calls" and isinstance(value, list):
                total += sum(
                    function_tokens(c.get("function")) for c in value if isinstance(c, dict)
                )
            elif key == "function_call":
                total += function_tokens(value)
    return total


# -- cache key: the canonical form, by json.loads with numbers kept as literals -------------

IGNORED = ("stream", "stream_options", "user", "metadata")
PLAIN_DIGITS = 40


class Num(str):
    """A JSON number kept as its literal."""


def canonical_number(literal: str) -> str:
    negative = literal.startswith("-")
    mantissa, _, exp = literal.lstrip("-").lower().partition("e")
    int_part, _, frac = mantissa.partition(".")
    digits = (int_part + frac).lstrip("0")
    e = int(exp or 0) - len(frac)
    stripped = digits.rstrip("0")
    e += len(digits) - len(stripped)
    digits = stripped
    if not digits:
        return "0"
    sign = "-" if negative else ""
    n = len(digits)
    if e >= 0 and n + e <= PLAIN_DIGITS:
        return sign + digits + "0" * e
    if e < 0 and -e <= PLAIN_DIGITS:
        d = -e
        if n > d:
            return f"{sign}{digits[: n - d]}.{digits[n - d :]}"
        return f"{sign}0.{'0' * (d - n)}{digits}"
    return f"{sign}{digits}e{e}"


def canonical_string(s: str) -> str:
    text = json.dumps(s, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text)


def write(value: Any) -> str:
    if isinstance(value, Num):
        return canonical_number(value)
    if isinstance(value, str):
        return canonical_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(write(v) for v in value) + "]"
    items = sorted(value.items())
    return "{" + ",".join(f"{canonical_string(k)}:{write(v)}" for k, v in items) + "}"


def reference_canonical(body: bytes) -> bytes:
    """The canonical form, by json.loads with numbers kept as literals."""
    value = json.loads(body, parse_int=Num, parse_float=Num)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    kept = {k: v for k, v in value.items() if k not in IGNORED and not k.startswith("x_llm_proxy")}
    return write(kept).encode("utf-8", "surrogatepass")


def reference_cache_key(body: bytes, namespace: str = "") -> str:
    """xxh3-128 of the length-prefixed namespace and the canonical form, as `cache_key` hashes."""
    ns = namespace.encode()
    return xxhash.xxh3_128_hexdigest(len(ns).to_bytes(8, "little") + ns + reference_canonical(body))


# -- SSE relay: split on blank lines, json.loads each data payload, accumulate ---------------

LINE = re.compile(rb"\r\n|\r|\n")


def reference_events(stream: bytes) -> list[bytes]:
    """Whole stream at once: each event with its terminators, comments dropped."""
    events, start, pos = [], 0, 0
    lines = LINE.split(stream)
    ends = [m.end() for m in LINE.finditer(stream)]
    for line, end in zip(lines, ends, strict=False):
        if line == b"":
            event = stream[start:end]
            if any(not ln.startswith(b":") for ln in LINE.split(event) if ln):
                events.append(event)
            start = end
        pos = end
    assert pos == len(stream)
    return events


def reference_summary(dialect: str, events: list[bytes], model: str = "") -> dict[str, Any]:
    """What the relay accumulates from `events`, as `summary_dict` of a StreamSummary gives it."""
    text, tools, finish, prompt, completion, done, count = "", {}, None, None, None, False, 0
    for event in events:
        data = "\n".join(
            ln[5:].removeprefix(b" ").decode()
            for ln in LINE.split(event)
            if ln.startswith(b"data:")
        )
        if not data:
            continue
        count += 1
        if data == "[DONE]":
            done = True
            continue
        obj = json.loads(data)
        if dialect == "openai":
            for choice in obj.get("choices") or []:
                delta = choice.get("delta") or {}
                text += delta.get("content") or ""
                for call in delta.get("tool_calls") or []:
                    tool = tools.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
                    tool["id"] = call.get("id") or tool["id"]
                    fn = call.get("function") or {}
                    tool["name"] += fn.get("name") or ""
                    tool["arguments"] += fn.get("arguments") or ""
                finish = choice.get("finish_reason") or finish
            if obj.get("usage"):
                prompt, completion = (
                    obj["usage"]["prompt_tokens"],
                    obj["usage"]["completion_tokens"],
                )
        else:
            kind = obj["type"]
            if kind == "message_start":
                usage = obj["message"]["usage"]
                prompt = usage["input_tokens"] + usage.get("cache_read_input_tokens", 0)
                completion = usage["output_tokens"]
            elif kind == "content_block_start" and obj["content_block"]["type"] == "tool_use":
                block = obj["content_block"]
                tools[obj["index"]] = {"id": block["id"], "name": block["name"], "arguments": ""}
            elif kind == "content_block_delta":
                delta = obj["delta"]
                if delta["type"] == "text_delta":
                    text += delta["text"]
                elif delta["type"] == "input_json_delta":
                    tools[obj["index"]]["arguments"] += delta["partial_json"]
            elif kind == "message_delta":
                finish = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls"}[
                    obj["delta"]["stop_reason"]
                ]
                completion = obj["usage"]["output_tokens"]
            elif kind == "message_stop":
                done = True
    if prompt is None and completion is None:
        # No usage from upstream: completion counted from text + arguments, prompt unknown (0).
        enc = python_encoding(_core.encoding_for_model(model))
        prompt = 0
        completion = len(enc.encode_ordinary(text)) + sum(
            len(enc.encode_ordinary(t["arguments"])) for t in tools.values()
        )
    calls = [
        {
            "id": t["id"],
            "type": "function",
            "function": {"name": t["name"], "arguments": t["arguments"]},
        }
        for _, t in sorted(tools.items())
    ]
    return {
        "text": text,
        "tool_calls": calls,
        "finish_reason": finish,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "events": count,
        "done": done,
    }
