"""Canonical JSON (RFC 8785, JCS) for the values the vault signs and hashes.

The vault only ever canonicalizes strings, integers, booleans, null, lists and objects with string
keys; floats are refused, and so are integers beyond ±(2**53 - 1), whose JCS spelling differs from
Python's. Within that domain JCS is exactly ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``, because keys within the Basic Multilingual Plane sort the same by UTF-16 code
units (JCS) as by code points (Python). Keys with characters above U+FFFF are refused rather than
risk sorting them wrongly.
"""

from __future__ import annotations

import json
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1


class NotCanonicalizable(ValueError):
    """The value holds something JCS (as the vault uses it) cannot represent exactly."""


def _check(value: Any, depth: int = 0) -> None:
    """Raise ``NotCanonicalizable`` for the first value (depth first) outside the domain.

    Exact types take a fast path (ASCII text needs no encoding test, scalar members of an
    object no call of their own); anything else, subclasses included, takes ``_check_any``.
    The order of the checks, hence which problem is named, is the same on both paths.
    """
    kind = type(value)
    if kind is dict and depth < 64:
        for key, item in value.items():
            if type(key) is not str or not key.isascii():
                _check_key(key)
            member = type(item)
            if member is str:
                if not item.isascii():
                    _check_text(item)
            elif member is int:
                if abs(item) > MAX_SAFE_INTEGER:
                    raise NotCanonicalizable("integer outside ±(2**53-1)")
            elif item is not None and member is not bool:
                _check(item, depth + 1)
        return
    if kind is str and depth <= 64:
        if not value.isascii():
            _check_text(value)
        return
    _check_any(value, depth)


def _check_key(key: Any) -> None:
    if not isinstance(key, str):
        raise NotCanonicalizable("object keys must be strings")
    _check_text(key)
    if any(ord(c) > 0xFFFF for c in key):
        raise NotCanonicalizable("object keys above U+FFFF are not supported")


def _check_any(value: Any, depth: int) -> None:
    if depth > 64:
        raise NotCanonicalizable("nested too deeply")
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            _check_text(value)
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonicalizable("integer outside ±(2**53-1)")
        return
    if isinstance(value, float):
        raise NotCanonicalizable("floats are not allowed")
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_key(key)
            _check(item, depth + 1)
        return
    raise NotCanonicalizable(f"unsupported type {type(value).__name__}")


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` has UTF-8 bytes: a lone surrogate (how Python holds bytes that were not
    valid UTF-8 in argv, the environment or a lenient decode) has none."""
    if text.isascii():  # the usual case, without encoding
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str) -> None:
    # Lone surrogates cannot be encoded as UTF-8: refuse them here with a clear message.
    if not is_utf8_text(text):
        raise NotCanonicalizable("string holds a lone surrogate")


def canonical_json(value: Any) -> bytes:
    """RFC 8785 bytes of ``value``; raises ``NotCanonicalizable`` outside the supported domain."""
    _check(value)
    return canonical_json_unchecked(value)


# What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) builds on
# every call; an encoder keeps no state between calls.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json_unchecked(value: Any) -> bytes:
    """The same bytes, for values the caller has already checked (the hot path)."""
    return _ENCODER.encode(value).encode("utf-8")


def canonical_text(value: Any) -> str:
    """``canonical_json(value)`` as text (the check has refused lone surrogates, so the text
    has UTF-8 bytes)."""
    _check(value)
    return _ENCODER.encode(value)


class DuplicateMember(ValueError):
    """An object names a member twice: I-JSON (RFC 7493, which RFC 8785 builds on) forbids it,
    and which one counts would depend on the reader."""


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` refusing an object that names a member twice."""
    found = dict(pairs)
    if len(found) != len(pairs):
        raise DuplicateMember("an object names a member twice")
    return found


def refuse_constant(name: str) -> Any:
    """``parse_constant`` refusing ``NaN`` and ``Infinity``, which are not JSON (RFC 8259)."""
    raise ValueError(f"{name} is not JSON")


_unique_raw_decode = json.JSONDecoder(object_pairs_hook=unique_members).raw_decode


def parse_unique_json(text: str) -> Any:
    """``json.loads(text, object_pairs_hook=unique_members)``: the same value, or the same
    exception (``DuplicateMember`` for an object that names a member twice). For what is read
    back as evidence (an export, a stored ``data``), where a reader that keeps the first of two
    members and one that keeps the last must not see different entries.

    Faster on the usual input, one JSON value with nothing around it: that goes straight to
    the decoder's ``raw_decode`` (its C scanner), which ``json.loads`` reaches through another
    call and two whitespace matches. Anything else (leading or trailing whitespace, trailing
    data, a byte order mark, text that is not JSON) is handed to ``json.loads`` itself, for its
    value or its exact error.
    """
    try:
        value, end = _unique_raw_decode(text)
    except DuplicateMember:
        raise
    except ValueError:
        return json.loads(text, object_pairs_hook=unique_members)
    if end != len(text):
        return json.loads(text, object_pairs_hook=unique_members)
    return value
