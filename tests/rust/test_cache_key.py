"""cache_key / canonical_json against a pure-Python reference of the canonical form."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llm_proxy import _core

from tests.support.reference import reference_canonical

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
bodies = st.dictionaries(
    st.sampled_from(["model", "messages", "temperature", "n", "tools", "b", "é", "a\n"])
    | st.text(max_size=6),
    json_values,
    max_size=6,
)


def respell_number(value: int | float, rng: random.Random) -> str:
    """Another spelling of the same number."""
    text = json.dumps(value)
    if isinstance(value, int):
        # "00e-1" would not be JSON: a leading zero is only allowed alone.
        shifted = [f"{text}0e-1"] if value != 0 else []
        return rng.choice([text, f"{text}.0", f"{text}e0", *shifted, f"{text}.000E+0"])
    if "e" in text or "E" in text:
        mantissa, _, exp = text.partition("e")
        # A trailing zero only keeps the value after a decimal point ("1e-05" -> "1.0e-05").
        padded = f"{mantissa}0" if "." in mantissa else f"{mantissa}.0"
        return rng.choice([text, f"{padded}e{exp}", f"{mantissa}E{int(exp):+d}"])
    return rng.choice([text, f"{text}0", f"{text}e0", f"{text}00E-0"])


def respell(value: Any, rng: random.Random) -> str:
    """Same JSON value, new text: key order, whitespace, escapes and numbers all vary."""
    ws = rng.choice(["", " ", "\n  ", "\t"])
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return respell_number(value, rng)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=rng.random() < 0.5)
    if isinstance(value, list):
        return "[" + ws + f",{ws}".join(respell(v, rng) for v in value) + ws + "]"
    items = list(value.items())
    rng.shuffle(items)
    parts = [
        f"{json.dumps(k, ensure_ascii=rng.random() < 0.5)}{ws}:{ws}{respell(v, rng)}"
        for k, v in items
    ]
    return "{" + ws + f",{ws}".join(parts) + ws + "}"


@settings(deadline=None, max_examples=300)
@given(bodies)
def test_canonical_json_matches_the_python_reference(body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    assert _core.canonical_json(raw) == reference_canonical(raw)


@settings(deadline=None, max_examples=200)
@given(bodies, st.randoms(use_true_random=True))
def test_respelled_body_has_the_same_key(body: dict[str, Any], rng: random.Random) -> None:
    original = json.dumps(body).encode()
    respelled = respell(body, rng).encode()
    assert _core.canonical_json(respelled) == reference_canonical(respelled)
    assert _core.cache_key(respelled, "ns") == _core.cache_key(original, "ns")


@settings(deadline=None, max_examples=200)
@given(bodies, bodies)
def test_keys_are_equal_exactly_when_canonical_forms_are(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    ra, rb = json.dumps(a).encode(), json.dumps(b).encode()
    same = reference_canonical(ra) == reference_canonical(rb)
    assert (_core.cache_key(ra) == _core.cache_key(rb)) == same


@settings(deadline=None, max_examples=100)
@given(bodies, st.text(max_size=8), st.text(max_size=8))
def test_namespaces_never_share_a_key(body: dict[str, Any], ns1: str, ns2: str) -> None:
    raw = json.dumps(body).encode()
    assert (_core.cache_key(raw, ns1) == _core.cache_key(raw, ns2)) == (ns1 == ns2)


def test_namespace_boundary_cannot_be_shifted() -> None:
    assert _core.cache_key(b'{"c":1}', "ab") != _core.cache_key(b'{"c":1}', "a")
    assert _core.cache_key(b"{}", "a") != _core.cache_key(b"{}", "")


@settings(deadline=None, max_examples=100)
@given(
    st.lists(json_scalars, min_size=2, max_size=6).filter(
        lambda xs: json.dumps(xs) != json.dumps(xs[::-1])
    )
)
def test_array_order_changes_the_key(items: list[Any]) -> None:
    body = json.dumps({"messages": items}).encode()
    flipped = json.dumps({"messages": items[::-1]}).encode()
    if reference_canonical(body) != reference_canonical(flipped):
        assert _core.cache_key(body) != _core.cache_key(flipped)


def test_fields_that_do_not_change_the_answer_are_ignored() -> None:
    plain = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'
    noisy = (
        b'{"stream":true,"stream_options":{"include_usage":true},"user":"u1","metadata":{"a":1},'
        b'"x_llm_proxy_tags":["t"],"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o"}'
    )
    assert _core.cache_key(noisy) == _core.cache_key(plain)
    nested = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi","user":"x"}]}'
    assert _core.cache_key(nested) != _core.cache_key(plain)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"t":1}', b'{"t":1.0}'),
        (b'{"t":1}', b'{"t":1e0}'),
        (b'{"t":0.5}', b'{"t":5E-1}'),
        (b'{"t":-0}', b'{"t":0}'),
        (b'{"s":"\\u0041"}', b'{"s":"A"}'),
        (b'{"s":"\\ud83d\\ude00"}', '{"s":"😀"}'.encode()),
        (b'{"b":1,"a":2}', b'{ "a" : 2 ,\n "b" : 1 }'),
    ],
)
def test_equal_values_give_equal_keys(a: bytes, b: bytes) -> None:
    assert _core.cache_key(a) == _core.cache_key(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (b'{"t":9007199254740993}', b'{"t":9007199254740992}'),
        (b'{"t":18446744073709551616}', b'{"t":18446744073709551617}'),
        (b'{"t":0.1}', b'{"t":0.10000000000000001}'),
        (b'{"t":1}', b'{"t":"1"}'),
        (b'{"t":null}', b"{}"),
        (b'{"t":[1,2]}', b'{"t":[2,1]}'),
        (b'{"t":true}', b'{"t":1}'),
    ],
)
def test_different_values_give_different_keys(a: bytes, b: bytes) -> None:
    assert _core.cache_key(a) != _core.cache_key(b)


def test_key_is_32_lowercase_hex_chars() -> None:
    key = _core.cache_key(b'{"a":1}')
    assert re.fullmatch("[0-9a-f]{32}", key)


@pytest.mark.parametrize(
    "body",
    [b'{"a": }', b'{"a":1,}', b'{"a" 1}', b"{'a':1}", b'{"a":tru}', b'{"a":"x', b"", b'{"a":1}x'],
)
def test_invalid_json_names_the_byte_offset_python_reports(body: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(body)
    with pytest.raises(ValueError, match=r"^invalid JSON at byte (\d+): ") as got:
        _core.cache_key(body)
    offset = int(re.match(r"invalid JSON at byte (\d+)", str(got.value)).group(1))  # type: ignore[union-attr]
    # Python points at the start of the token it could not read; we may point inside it.
    assert expected.value.pos <= offset <= len(body)


@settings(deadline=None, max_examples=100)
@given(bodies, st.data())
def test_truncated_body_raises_value_error_not_a_crash(
    body: dict[str, Any], data: st.DataObject
) -> None:
    raw = json.dumps(body).encode()
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(ValueError, match="invalid JSON at byte"):
        _core.cache_key(raw[:cut])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[1]", "request body must be a JSON object, got an array"),
        (b'"x"', "request body must be a JSON object, got a string"),
        (b"null", "request body must be a JSON object, got null"),
        (b'{"a":"\xff"}', "invalid JSON at byte 6: invalid UTF-8 in string"),
    ],
)
def test_non_object_or_bad_utf8_body_raises_value_error(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        _core.cache_key(body)


def test_deep_nesting_is_refused_without_crashing() -> None:
    deep = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(ValueError, match="nesting deeper than 128"):
        _core.cache_key(deep)


def test_big_body_hashes_like_a_small_one() -> None:
    messages = [{"role": "user", "content": "x" * 1000 + str(i)} for i in range(100)]
    body = json.dumps({"model": "m", "messages": messages}).encode()
    assert len(body) > 64 * 1024
    assert _core.canonical_json(body) == reference_canonical(body)
