"""The audit bulk paths against the code they replaced, kept here as references.

Verification and export build each entry's bytes, check canonical JSON and parse ``data``
millions of times, so those steps were rewritten for speed (``encode_basestring`` instead of
five ``json.dumps``, a type-dispatched domain check, the decoder's C scanner). The bytes, the
values and the exceptions (type and message) must stay exactly those of the previous code,
which is copied below verbatim and compared on arbitrary input, including everything the fast
paths hand back to the slow ones (quotes, controls, lone surrogates, astral keys, floats, big
integers, deep nesting, subclasses, whitespace and garbage around JSON).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vault.audit.chain import ChainWalker, Head, check_entry, link
from vault.audit.entry import (
    ENTRY_MEMBERS,
    Draft,
    Entry,
    entry_bytes,
    entry_from_dict,
    entry_from_row,
    entry_line,
    entry_row_from_dict,
)
from vault.clock import parse_ts
from vault.crypto import canonical
from vault.crypto.canonical import (
    MAX_SAFE_INTEGER,
    NotCanonicalizable,
    canonical_text,
    parse_unique_json,
    unique_members,
)
from vault.errors import ChainBroken

# --- the previous implementations (reference) ------------------------------------------------


def ref_json(value: str | int | None) -> str:
    return json.dumps(value, ensure_ascii=False)


def ref_entry_bytes(
    *,
    seq: int,
    ts: str,
    type: str,
    actor: str | None,
    subject: str | None,
    data_json: str,
    prev: str,
) -> bytes:
    return (
        f'{{"actor":{ref_json(actor)},"data":{data_json},"prev":{ref_json(prev)},"seq":{seq},'
        f'"subject":{ref_json(subject)},"ts":{ref_json(ts)},"type":{ref_json(type)}}}'
    ).encode()


def ref_to_line(e: Entry) -> str:
    return (
        f'{{"actor":{ref_json(e.actor)},"data":{e.data_json},"hash":{ref_json(e.hash)},'
        f'"prev":{ref_json(e.prev)},"seq":{e.seq},"subject":{ref_json(e.subject)},'
        f'"ts":{ref_json(e.ts)},"type":{ref_json(e.type)}}}'
    )


def ref_check(value: Any, depth: int = 0) -> None:
    if depth > 64:
        raise NotCanonicalizable("nested too deeply")
    if value is None or isinstance(value, bool | str):
        if isinstance(value, str):
            ref_check_text(value)
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise NotCanonicalizable("integer outside ±(2**53-1)")
        return
    if isinstance(value, float):
        raise NotCanonicalizable("floats are not allowed")
    if isinstance(value, list | tuple):
        for item in value:
            ref_check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotCanonicalizable("object keys must be strings")
            ref_check_text(key)
            if any(ord(c) > 0xFFFF for c in key):
                raise NotCanonicalizable("object keys above U+FFFF are not supported")
            ref_check(item, depth + 1)
        return
    raise NotCanonicalizable(f"unsupported type {type(value).__name__}")


def ref_check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotCanonicalizable("string holds a lone surrogate") from None


def outcome(call: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What a call did: ("ok", value) or ("raised", (exception type, message))."""
    try:
        return "ok", call(*args, **kwargs)
    except Exception as exc:  # comparing whatever either side raises
        return "raised", (type(exc), str(exc))


# --- strategies -------------------------------------------------------------------------------

# Every code point, lone surrogates included: both sides must fail alike on those.
any_text = st.text(alphabet=st.characters(), max_size=20)
# Text made mostly of what needs escaping or care in JSON.
tricky_text = st.text(
    alphabet=st.sampled_from(
        ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "\u2028", "é", "\ud800", "a"]
    ),
    max_size=8,
)
texts = any_text | tricky_text
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


class Text(str):
    pass


class Number(int):
    pass


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 2**53, -(2**53)])
    | st.floats(allow_nan=False)
    | texts
    | texts.map(Text)
    | st.integers(min_value=-5, max_value=5).map(Number)
)
keys = texts | st.integers(min_value=0, max_value=3) | st.just("\U0001f600")


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # A named function, not a lambda: hypothesis reads the source of ``extend`` to check that
    # it recurses, and cannot always find a lambda's.
    return (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=3).map(tuple)
        | st.dictionaries(keys, children, max_size=4)
        | st.dictionaries(texts, children, max_size=3).map(OrderedDict)
    )


values = st.recursive(scalars, containers, max_leaves=16)


def nested(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if kind == "dict" else [value]
    return value


# --- entry bytes and export lines ---------------------------------------------------------------


@given(
    seq=st.integers(min_value=0, max_value=2**64),
    ts=texts | st.none(),  # None: a hostile database without the NOT NULL constraints
    type_=texts | st.none(),
    actor=st.none() | texts,
    subject=st.none() | texts,
    data_json=texts,
    prev=hex64 | texts | st.none(),
    digest=hex64 | texts | st.none(),
)
@example(
    seq=1,
    ts="2026-11-27T17:00:00.000000Z",
    type_='a"b\\c\nd',
    actor=None,
    subject="\ud800",
    data_json="{}",
    prev="0" * 64,
    digest="f" * 64,
)
def test_entry_bytes_and_line_are_the_previous_bytes(
    seq: int,
    ts: Any,
    type_: Any,
    actor: str | None,
    subject: str | None,
    data_json: str,
    prev: Any,
    digest: Any,
) -> None:
    members: dict[str, Any] = {
        "seq": seq,
        "ts": ts,
        "type": type_,
        "actor": actor,
        "subject": subject,
        "data_json": data_json,
        "prev": prev,
    }
    assert outcome(entry_bytes, **members) == outcome(ref_entry_bytes, **members)
    entry = Entry(**members, hash=digest)
    assert entry_line(entry.as_row()) == ref_to_line(entry)
    assert entry.to_line() == ref_to_line(entry)
    assert entry_from_row(entry.as_row()) == entry


# --- the canonical-JSON domain check ---------------------------------------------------------


@given(value=values)
def test_domain_check_is_the_previous_check(value: Any) -> None:
    assert outcome(canonical._check, value) == outcome(ref_check, value)


@pytest.mark.parametrize("kind", ["dict", "list"])
@pytest.mark.parametrize("depth", [62, 63, 64, 65, 66])
@pytest.mark.parametrize("leaf", [1, "x", "é", None, {}, [], 1.5, 2**60, "\ud800", {"\ud800": 1}])
def test_domain_check_at_the_depth_limit(kind: str, depth: int, leaf: Any) -> None:
    value = nested(depth, leaf, kind)
    assert outcome(canonical._check, value) == outcome(ref_check, value)


def test_domain_check_names_the_first_problem_in_order() -> None:
    value = {"a": "ok", "b": 1.5, "\ud800": 1, "c": 2**60}
    assert outcome(canonical._check, value) == (
        "raised",
        (NotCanonicalizable, "floats are not allowed"),
    )
    assert outcome(canonical._check, value) == outcome(ref_check, value)


# --- parsing JSON ------------------------------------------------------------------------------

json_texts = (
    values.map(lambda v: json.dumps(v, ensure_ascii=False, default=str))
    | values.map(lambda v: json.dumps(v, default=str, indent=1))
    | any_text
)
around = st.sampled_from(["", " ", "\n", "\t", "\ufeff", "x", "]", "{}", '"', "0", "1e5"])


@given(text=json_texts, before=around, after=around)
@example(text='{"a":1}', before="", after="")
@example(text='{"a":1', before="", after="")
@example(text="NaN", before="", after="")
@example(text='{"a":"\\ud800"}', before="", after="")
@example(text='{"a":1,"a":2}', before="", after="")
@example(text='[{"a":1,"a":2}]', before=" ", after="")
def test_parse_unique_json_is_json_loads(text: str, before: str, after: str) -> None:
    source = before + text + after
    reference = functools.partial(json.loads, object_pairs_hook=unique_members)
    assert outcome(parse_unique_json, source) == outcome(reference, source)


def test_parse_unique_json_deep_nesting_raises_like_json_loads() -> None:
    source = "[" * 100_000 + "]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(source)
    with pytest.raises(RecursionError):
        parse_unique_json(source)


# --- checking one entry against the head ------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")


def ref_check_entry(entry: Entry, head: Head) -> Head:
    expected = head.seq + 1
    if entry.seq != expected:
        if entry.seq <= head.seq:
            raise ChainBroken(expected, f"seq {entry.seq} appears where {expected} should be")
        raise ChainBroken(expected, f"entry missing: the log jumps from {head.seq} to {entry.seq}")
    if entry.prev != head.hash:
        raise ChainBroken(entry.seq, "prev is not the hash of the previous entry")
    if not _HEX64.fullmatch(entry.hash):
        raise ChainBroken(entry.seq, "hash is not 64 lowercase hex digits")
    try:
        computed = hashlib.sha256(
            ref_entry_bytes(
                seq=entry.seq,
                ts=entry.ts,
                type=entry.type,
                actor=entry.actor,
                subject=entry.subject,
                data_json=entry.data_json,
                prev=entry.prev,
            )
        ).hexdigest()
    except UnicodeEncodeError:
        raise ChainBroken(entry.seq, "entry holds text that is not valid Unicode") from None
    if computed != entry.hash:
        raise ChainBroken(entry.seq, "hash does not match the entry's contents")
    if not entry.type:
        raise ChainBroken(entry.seq, "type is empty")
    try:
        parse_ts(entry.ts)
    except ValueError:
        raise ChainBroken(entry.seq, "ts is not a canonical UTC timestamp") from None
    return Head(entry.seq, entry.hash)


def chain_outcome(call: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", call(*args)
    except ChainBroken as exc:
        return "raised", (type(exc), exc.seq, exc.reason)


timestamps = st.sampled_from(
    ["2026-11-27T17:00:00.000000Z", "2026-11-27T17:00:00Z", "2026-13-27T17:00:00.000000Z", ""]
)


def rarely(draw: Callable[[st.SearchStrategy[Any]], Any]) -> bool:
    return bool(draw(st.integers(min_value=0, max_value=3)) == 0)


def spoiled_entry(draw: Callable[[st.SearchStrategy[Any]], Any], head: Head) -> Entry:
    """An entry that follows ``head``, then (maybe) spoiled in one or more members, with its
    hash recomputed (maybe) so that the later checks are reached too."""
    (entry,) = link(
        head,
        [Draft(type="token.used", actor="p1", subject=None, data={"jti": "j"})],
        "2026-11-27T17:00:00.000000Z",
    )
    changes: dict[str, Any] = {"ts": draw(timestamps)}
    if rarely(draw):
        changes["seq"] = draw(st.integers(min_value=0, max_value=8))
    if rarely(draw):
        changes["prev"] = draw(hex64 | texts)
    if draw(st.booleans()):
        changes["type"] = draw(st.sampled_from(["", "x", "\ud800"]))
    if draw(st.booleans()):
        changes["actor"] = draw(st.none() | texts)
    entry = dataclasses.replace(entry, **changes)
    rehash = draw(st.sampled_from(["keep", "recompute", "upper", "short", "garbage"]))
    if rehash != "keep":
        try:
            good = entry.computed_hash()
        except UnicodeEncodeError:
            good = "0" * 64
        spoiled = {
            "recompute": good,
            "upper": good.upper(),
            "short": good[:63],
            "garbage": "\ud800" * 64,
        }[rehash]
        entry = dataclasses.replace(entry, hash=spoiled)
    return entry


heads = st.builds(Head, st.integers(min_value=0, max_value=5), hex64)


@given(head=heads, data=st.data())
def test_check_entry_gives_the_previous_reasons(head: Head, data: st.DataObject) -> None:
    entry = spoiled_entry(data.draw, head)
    assert chain_outcome(check_entry, entry, head) == chain_outcome(ref_check_entry, entry, head)


def test_a_bad_hash_is_named_before_text_that_is_not_unicode() -> None:
    entry = Entry(
        seq=1,
        ts="2026-11-27T17:00:00.000000Z",
        type="\ud800",
        actor=None,
        subject=None,
        data_json="{}",
        prev="0" * 64,
        hash="",
    )
    for digest, reason in (
        ("X" * 64, "hash is not 64 lowercase hex digits"),
        ("0" * 64, "entry holds text that is not valid Unicode"),
    ):
        spoiled = dataclasses.replace(entry, hash=digest)
        expected = ("raised", (ChainBroken, 1, reason))
        assert chain_outcome(check_entry, spoiled, Head(0, "0" * 64)) == expected
        assert chain_outcome(ref_check_entry, spoiled, Head(0, "0" * 64)) == expected


@given(head=heads, data=st.data())
def test_the_walker_gives_the_previous_reasons_after_a_good_entry(
    head: Head, data: st.DataObject
) -> None:
    """The walker does not re-check a ``ts`` it has just accepted: a spoiled ``ts`` after a good
    entry is still caught, with the same reason as on its own."""
    (before,) = link(
        head,
        [Draft(type="x", actor=None, subject=None, data={})],
        "2026-11-27T17:00:00.000000Z",
    )
    walker = ChainWalker(start=head)
    walker.feed(before)
    entry = spoiled_entry(data.draw, walker.head)
    expected = chain_outcome(ref_check_entry, entry, walker.head)
    assert chain_outcome(walker.feed, entry) == expected


# --- reading an export line's entry; canonical text --------------------------------------------


def ref_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def ref_canonical_text(value: Any) -> str:
    ref_check(value)
    return (
        json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        .encode("utf-8")
        .decode("utf-8")
    )


def ref_entry_from_dict(obj: Any) -> Entry:
    if not isinstance(obj, dict):
        raise ValueError("entry is not a JSON object")
    members = set(obj)
    if members != ENTRY_MEMBERS:
        missing = sorted(ENTRY_MEMBERS - members)
        extra = sorted(members - ENTRY_MEMBERS)
        raise ValueError(f"entry members wrong (missing {missing}, unexpected {extra})")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("seq must be a positive integer")
    for name in ("ts", "type", "prev", "hash"):
        if not isinstance(obj[name], str):
            raise ValueError(f"{name} must be a string")
    for name in ("actor", "subject"):
        if obj[name] is not None and not isinstance(obj[name], str):
            raise ValueError(f"{name} must be a string or null")
    for name in ("ts", "type", "actor", "subject", "prev", "hash"):
        if isinstance(obj[name], str) and not ref_encodable(obj[name]):
            raise ValueError(f"{name} holds a lone surrogate (not valid Unicode)")
    if not isinstance(obj["data"], dict):
        raise ValueError("data must be an object")
    return Entry(
        seq=seq,
        ts=obj["ts"],
        type=obj["type"],
        actor=obj["actor"],
        subject=obj["subject"],
        data_json=ref_canonical_text(obj["data"]),
        prev=obj["prev"],
        hash=obj["hash"],
    )


@given(value=values)
def test_canonical_text_is_the_previous_text(value: Any) -> None:
    assert outcome(canonical_text, value) == outcome(ref_canonical_text, value)


member_values = st.none() | st.booleans() | st.integers(-2, 3) | texts | texts.map(Text)


@st.composite
def entry_dicts(draw: st.DrawFn) -> Any:
    obj: dict[Any, Any] = {name: draw(member_values) for name in sorted(ENTRY_MEMBERS)}
    for name in ("ts", "type", "prev", "hash"):
        if draw(st.integers(0, 3)):
            obj[name] = draw(texts)
    for name in ("actor", "subject"):
        if draw(st.integers(0, 3)):
            obj[name] = draw(st.none() | texts)
    if draw(st.integers(0, 3)):
        obj["seq"] = draw(st.integers(-1, 5))
    if draw(st.integers(0, 3)):
        obj["data"] = draw(st.dictionaries(texts, values, max_size=3))
    if draw(st.integers(0, 9)) == 0:
        obj.pop(draw(st.sampled_from(sorted(ENTRY_MEMBERS))))
    if draw(st.integers(0, 9)) == 0:
        obj[draw(texts)] = 1
    return draw(st.sampled_from([obj, obj, obj, [obj], None]))


GOOD_DICT: dict[str, Any] = {
    "seq": 1,
    "ts": "2026-11-27T17:00:00.000000Z",
    "type": "t",
    "actor": "a",
    "subject": "s",
    "data": {"k": "v"},
    "prev": "0" * 64,
    "hash": "1" * 64,
}


@given(obj=entry_dicts())
@example(obj=GOOD_DICT)
@example(obj={**GOOD_DICT, "ts": "\ud800"})
@example(obj={**GOOD_DICT, "type": "é\ud800"})
@example(obj={**GOOD_DICT, "actor": "\udc00"})
@example(obj={**GOOD_DICT, "subject": "\udc00"})
@example(obj={**GOOD_DICT, "prev": "\udc00"})
@example(obj={**GOOD_DICT, "hash": "\udc00"})
@example(obj={**GOOD_DICT, "hash": "\udc00", "actor": 5})
@example(obj={**GOOD_DICT, "ts": "é", "subject": "é"})
@example(obj={**GOOD_DICT, "seq": True})
def test_reading_an_entry_is_the_previous_reading(obj: Any) -> None:
    expected = outcome(ref_entry_from_dict, obj)
    assert outcome(entry_from_dict, obj) == expected
    got = outcome(entry_row_from_dict, obj)
    if expected[0] == "ok":
        assert got[0] == "ok"
        row, data = got[1]
        assert row == expected[1].as_row()
        assert data is obj["data"]
    else:
        assert got == expected
