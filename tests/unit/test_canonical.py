"""Canonical JSON (RFC 8785, JCS) within the vault's domain: no floats, safe integers, BMP keys."""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.crypto.canonical import (
    MAX_SAFE_INTEGER,
    NotCanonicalizable,
    canonical_json,
    canonical_json_unchecked,
    canonical_text,
)

_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def jcs_reference(value: Any) -> str:
    """An independent RFC 8785 serializer for the same domain, sorting keys by UTF-16 units."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        chars = (_SHORT.get(c) or (f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in value)
        return '"' + "".join(chars) + '"'
    if isinstance(value, list):
        return "[" + ",".join(jcs_reference(v) for v in value) + "]"
    items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-16-be"))
    return "{" + ",".join(f"{jcs_reference(k)}:{jcs_reference(v)}" for k, v in items) + "}"


# --- RFC 8785 examples, minus what the vault refuses --------------------------------------------

RFC8785_STRING = "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/"  # §3.2.2 "string"


def test_rfc8785_3_2_2_literals_and_string():
    value = {"string": RFC8785_STRING, "literals": [None, True, False]}
    expected = '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonical_json(value) == expected.encode("utf-8")


def test_rfc8785_3_2_2_numbers_are_refused():
    # §3.2.2 spells these with the ECMAScript number algorithm; the vault allows no floats.
    with pytest.raises(NotCanonicalizable, match="float"):
        canonical_json({"numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 1e-27]})


RFC8785_SORTING = {
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\U0001f600": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis",
}


def test_rfc8785_3_2_3_sorting_within_the_bmp():
    value = {k: v for k, v in RFC8785_SORTING.items() if k != "\U0001f600"}
    keys = list(json.loads(canonical_json(value)))
    assert keys == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\ufb33"]  # RFC order, emoji removed


def test_rfc8785_3_2_3_non_bmp_key_is_refused():
    # UTF-16 puts U+1F600 (D83D DE00) before U+FB33; code points put it after. Refuse, never guess.
    assert sorted(RFC8785_SORTING)[-1] == "\U0001f600"
    with pytest.raises(NotCanonicalizable, match="U\\+FFFF"):
        canonical_json(RFC8785_SORTING)


# --- strings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", range(0x20))
def test_control_characters_are_escaped_as_jcs_says(code):
    expected = _SHORT.get(chr(code), f"\\u{code:04x}")  # lowercase hex, short forms where defined
    assert canonical_json(chr(code)) == f'"{expected}"'.encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"', b'"\\""'),
        ("\\", b'"\\\\"'),
        ("/", b'"/"'),
        ("\x7f", b'"\x7f"'),
        ("\u2028\u2029", '"\u2028\u2029"'.encode()),
        ("é€", '"é€"'.encode()),
        ("\U0001f600", b'"\xf0\x9f\x98\x80"'),  # non-BMP is fine in values, raw UTF-8
    ],
)
def test_strings_outside_the_control_range_are_raw_utf8(text, expected):
    assert canonical_json(text) == expected


@pytest.mark.parametrize(
    "value",
    ["\ud800", "a\udfffb", {"\ud83d": 1}, ["ok", {"k": "\udc00"}]],
    ids=["lone-high", "lone-low", "in-key", "nested"],
)
def test_lone_surrogates_are_refused(value):
    with pytest.raises(NotCanonicalizable, match="surrogate"):
        canonical_json(value)


# --- numbers and other types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
    ],
)
def test_safe_integers(value, expected):
    assert canonical_json(value) == expected


@pytest.mark.parametrize("value", [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 10**30])
def test_integers_beyond_the_safe_range_are_refused(value):
    with pytest.raises(NotCanonicalizable, match="integer"):
        canonical_json({"n": [value]})


@pytest.mark.parametrize("value", [1.0, -0.0, float("nan"), float("inf"), [{"x": 0.5}]])
def test_floats_are_refused_anywhere(value):
    with pytest.raises(NotCanonicalizable, match="float"):
        canonical_json(value)


def test_booleans_are_literals_not_integers():
    assert canonical_json([True, False, None]) == b"[true,false,null]"


@pytest.mark.parametrize(
    "value",
    [{1: "a"}, {None: "a"}, {True: "a"}, {(1,): "a"}],
    ids=["int", "none", "bool", "tuple"],
)
def test_non_string_keys_are_refused(value):
    # json.dumps would silently turn 1 into "1" and True into "true": two values, one spelling.
    with pytest.raises(NotCanonicalizable, match="keys must be strings"):
        canonical_json(value)


@pytest.mark.parametrize(
    "value",
    [b"bytes", {1, 2}, Decimal("1"), datetime(2026, 1, 1, tzinfo=UTC), object()],
    ids=["bytes", "set", "decimal", "datetime", "object"],
)
def test_unsupported_types_are_refused(value):
    with pytest.raises(NotCanonicalizable, match="unsupported type"):
        canonical_json({"v": value})


def _nest(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_nesting_is_bounded():
    assert canonical_json(_nest(64)) == b"[" * 64 + b"0" + b"]" * 64
    with pytest.raises(NotCanonicalizable, match="deeply"):
        canonical_json(_nest(65))


def test_tuples_serialize_as_arrays_and_insertion_order_does_not_matter():
    a = OrderedDict([("b", (1, 2)), ("a", {"d": None, "c": ""})])
    b = {"a": {"c": "", "d": None}, "b": [1, 2]}
    assert canonical_json(a) == canonical_json(b) == b'{"a":{"c":"","d":null},"b":[1,2]}'


def test_text_and_unchecked_variants_agree():
    value = {"z": ["é", 1, None], "a": True}
    assert canonical_text(value) == canonical_json(value).decode("utf-8")
    assert canonical_json_unchecked(value) == canonical_json(value)


# --- properties ---------------------------------------------------------------------------------

_keys = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=8)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
)
_json = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=24,
)


@given(_json)
def test_round_trip_idempotence_and_agreement_with_a_reference(value):
    encoded = canonical_json(value)
    assert json.loads(encoded) == value
    assert canonical_json(json.loads(encoded)) == encoded
    assert encoded.decode("utf-8") == jcs_reference(value)


@given(st.dictionaries(_keys, _scalars, max_size=3), st.characters(min_codepoint=0x10000))
def test_any_non_bmp_key_is_refused(value, char):
    with pytest.raises(NotCanonicalizable):
        canonical_json({**value, "k" + char: 1})
