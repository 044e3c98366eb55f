"""vault.audit.entry: the entry's canonical bytes, its hash (SPEC §7), and the export line."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.audit import entry as entry_module
from vault.audit.chain import GENESIS, Head, link
from vault.audit.entry import (
    ENTRY_MEMBERS,
    GENESIS_HASH,
    Draft,
    Entry,
    data_is_canonical,
    entry_bytes,
    entry_from_dict,
    entry_hash,
)
from vault.crypto.canonical import MAX_SAFE_INTEGER, NotCanonicalizable, canonical_json

# --- strategies --------------------------------------------------------------------------------

# Any text UTF-8 can carry (no lone surrogates), astral characters and controls included.
texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=24)
# Object keys: canonical_json refuses keys above U+FFFF (their JCS order differs from Python's).
keys = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), max_codepoint=0xFFFF), max_size=12
)
safe_ints = st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
json_values = st.recursive(
    st.none() | st.booleans() | safe_ints | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
data_objects = st.dictionaries(keys, json_values, max_size=6)
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def independent_canonical(obj: Any) -> bytes:
    """SPEC §7's formula, written out here rather than imported from the code under test."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


# --- the known-answer vector -------------------------------------------------------------------

KAT_DATA: dict[str, Any] = {
    "jti": "j-0001",
    "scope": "chat models:read",
    "exp": 1795798800,
    "ttl_seconds": 300,
    "reason": 'résumé ✓ 🚀 "quoted"\\ line\nbreak',
    "client_ip": "127.0.0.1",
    "nested": {"b": [1, True, None, "x", -MAX_SAFE_INTEGER], "a": {}, "été": False},
}
KAT_MEMBERS: dict[str, Any] = {
    "seq": 7,
    "ts": "2026-11-27T17:00:00.123456Z",
    "type": "token.issued",
    "actor": "p_ålice",
    "subject": None,
    "data": KAT_DATA,
    "prev": "ab" * 32,
}
# Recorded once from the formula above with the standard library alone (json + hashlib), never
# from vault code; the test recomputes it the same way, so a drift in either side shows.
KAT_HASH = "9c1084cb236a4602de73ef5914bba9ecd42030443e39c979909a5ef0ea4668d7"


def kat_entry() -> Entry:
    members = dict(KAT_MEMBERS)
    data = members.pop("data")
    return Entry(**members, data_json=json.dumps(data), hash=KAT_HASH)


def test_known_answer_independent_sha256():
    expected = hashlib.sha256(independent_canonical(KAT_MEMBERS)).hexdigest()
    assert expected == KAT_HASH
    members = {k: v for k, v in KAT_MEMBERS.items() if k != "data"}
    data_json = Draft(type="x", actor=None, subject=None, data=KAT_DATA).data_json()
    assert entry_bytes(**members, data_json=data_json) == independent_canonical(KAT_MEMBERS)
    assert entry_hash(**members, data_json=data_json) == KAT_HASH


def test_known_answer_through_link():
    draft = Draft(
        type=KAT_MEMBERS["type"],
        actor=KAT_MEMBERS["actor"],
        subject=KAT_MEMBERS["subject"],
        data=KAT_DATA,
    )
    (entry,) = link(Head(6, KAT_MEMBERS["prev"]), [draft], KAT_MEMBERS["ts"])
    assert entry.seq == 7
    assert entry.hash == KAT_HASH
    assert entry.computed_hash() == KAT_HASH


def test_known_answer_export_line():
    """The export line is the canonical JSON of the whole entry, ``hash`` included."""
    (entry,) = link(
        Head(6, KAT_MEMBERS["prev"]),
        [Draft(type="token.issued", actor="p_ålice", subject=None, data=KAT_DATA)],
        KAT_MEMBERS["ts"],
    )
    line = entry.to_line()
    assert line.encode("utf-8") == independent_canonical({**KAT_MEMBERS, "hash": KAT_HASH})
    assert "\n" not in line  # one entry, one line: newlines inside strings are escaped


def test_data_json_is_not_recanonicalized_when_hashing():
    """``data_json`` is hashed as stored: a non-canonical spelling gives another hash."""
    entry = kat_entry()  # data_json from plain json.dumps: spaces, unsorted, \\u escapes
    assert entry.data == KAT_DATA
    assert entry.computed_hash() != KAT_HASH


# --- properties --------------------------------------------------------------------------------


@given(
    seq=st.integers(min_value=1, max_value=MAX_SAFE_INTEGER),
    ts=texts,
    type_=texts,
    actor=st.none() | texts,
    subject=st.none() | texts,
    data=data_objects,
    prev=hex64 | texts,
)
def test_entry_bytes_is_canonical_json_without_hash(seq, ts, type_, actor, subject, data, prev):
    whole = {
        "seq": seq,
        "ts": ts,
        "type": type_,
        "actor": actor,
        "subject": subject,
        "data": data,
        "prev": prev,
    }
    data_json = Draft(type=type_, actor=actor, subject=subject, data=data).data_json()
    got = entry_bytes(
        seq=seq,
        ts=ts,
        type=type_,
        actor=actor,
        subject=subject,
        data_json=data_json,
        prev=prev,
    )
    assert got == canonical_json(whole)
    assert got == independent_canonical(whole)
    assert (
        entry_hash(
            seq=seq, ts=ts, type=type_, actor=actor, subject=subject, data_json=data_json, prev=prev
        )
        == hashlib.sha256(independent_canonical(whole)).hexdigest()
    )


@given(
    type_=texts.filter(bool),
    actor=st.none() | texts,
    subject=st.none() | texts,
    data=data_objects,
    seq=st.integers(min_value=0, max_value=10**6),
    prev=hex64,
)
def test_line_round_trip(type_, actor, subject, data, seq, prev):
    (entry,) = link(
        Head(seq, prev),
        [Draft(type=type_, actor=actor, subject=subject, data=data)],
        "2026-11-27T17:00:00.000000Z",
    )
    line = entry.to_line()
    assert "\n" not in line
    parsed = json.loads(line)
    assert set(parsed) == ENTRY_MEMBERS
    assert "kind" not in parsed
    assert parsed == entry.to_dict()
    assert line.encode("utf-8") == independent_canonical(parsed)
    back = entry_from_dict(parsed)
    assert back == entry
    assert back.computed_hash() == back.hash
    assert back.data == data


# --- Draft, Entry, entry_from_dict -------------------------------------------------------------


def test_draft_data_json_is_canonical():
    draft = Draft(type="t", actor=None, subject=None, data={"b": 1, "a": ["é", None, True]})
    assert draft.data_json() == '{"a":["é",null,true],"b":1}'


@pytest.mark.parametrize(
    "data",
    [
        {"x": 1.5},
        {"x": 1.0},
        {"x": 2**53},
        {"x": -(2**53)},
        {"x": "\ud800"},
        {1: "int key"},
        {"x": {1, 2}},
    ],
    ids=["float", "integral-float", "big-int", "big-negative", "lone-surrogate", "int-key", "set"],
)
def test_draft_refuses_what_jcs_cannot_spell(data):
    draft = Draft(type="t", actor=None, subject=None, data=data)
    with pytest.raises(NotCanonicalizable):
        draft.data_json()
    with pytest.raises(NotCanonicalizable):
        link(GENESIS, [draft], "2026-11-27T17:00:00.000000Z")


def test_to_dict_members_and_data_property():
    entry = kat_entry()
    as_dict = entry.to_dict()
    assert set(as_dict) == ENTRY_MEMBERS
    assert as_dict["data"] == KAT_DATA
    assert as_dict["hash"] == KAT_HASH


def test_genesis_hash_is_64_zeros():
    assert GENESIS_HASH == "0" * 64


def test_spec_event_types_are_defined():
    spec_types = {
        "principal.created",
        "principal.disabled",
        "credential.created",
        "subject.upserted",
        "policy.changed",
        "key.created",
        "key.rotated",
        "token.issued",
        "token.denied",
        "token.used",
        "token.rejected",
        "token.revoked",
        "audit.checkpoint",
    }
    defined = {
        value
        for name, value in vars(entry_module).items()
        if name.isupper() and isinstance(value, str) and "." in value
    }
    # SPEC §7 names these at least; the vault adds the scope table it decides with.
    assert defined == spec_types | {"scopes.loaded"}


def _good_dict() -> dict[str, Any]:
    (entry,) = link(
        GENESIS,
        [Draft(type="token.used", actor="p1", subject="s1", data={"jti": "j"})],
        "2026-11-27T17:00:00.000000Z",
    )
    return entry.to_dict()


def test_entry_from_dict_accepts_a_good_dict():
    good = _good_dict()
    assert entry_from_dict(good).to_dict() == good


def _with(**changes: Any) -> dict[str, Any]:
    return {**_good_dict(), **changes}


def _without(name: str) -> dict[str, Any]:
    obj = _good_dict()
    del obj[name]
    return obj


BAD_ENTRY_DICTS: dict[str, Any] = {
    "list": [1, 2],
    "string": "entry",
    "null": None,
    "missing-hash": _without("hash"),
    "missing-data": _without("data"),
    "missing-actor": _without("actor"),
    "extra-member": _with(extra=1),
    "kind-member": _with(kind="entry"),
    "seq-zero": _with(seq=0),
    "seq-negative": _with(seq=-1),
    "seq-bool": _with(seq=True),
    "seq-string": _with(seq="1"),
    "seq-float": _with(seq=1.0),
    "ts-int": _with(ts=1),
    "type-null": _with(type=None),
    "prev-int": _with(prev=0),
    "hash-null": _with(hash=None),
    "actor-int": _with(actor=5),
    "subject-list": _with(subject=["s"]),
    "data-list": _with(data=[1]),
    "data-string": _with(data="{}"),
    "data-null": _with(data=None),
    "data-float": _with(data={"x": 0.5}),
    "data-big-int": _with(data={"x": 2**60}),
    "actor-lone-surrogate": _with(actor="\udc00"),
    "subject-lone-surrogate": _with(subject="a\ud800"),
    "type-lone-surrogate": _with(type="\ud800"),
    "ts-lone-surrogate": _with(ts="\ud800"),
}


@pytest.mark.parametrize("obj", BAD_ENTRY_DICTS.values(), ids=BAD_ENTRY_DICTS.keys())
def test_entry_from_dict_refuses_bad_shapes(obj):
    with pytest.raises(ValueError):  # noqa: PT011 - the documented contract is ValueError
        entry_from_dict(obj)


# --- data_is_canonical: what the vault writes in ``data``, and nothing else ---------------------


@pytest.mark.parametrize(
    "text",
    [
        "{}",
        '{"a":1,"b":[true,null,"x"]}',
        '{"reason":"café \\\\ \\"q\\" \\n"}',
        '{"n":-9007199254740991,"nested":{"k":{}}}',
    ],
)
def test_data_the_vault_writes_is_canonical(text: str) -> None:
    assert canonical_json(json.loads(text)).decode("utf-8") == text
    assert data_is_canonical(text)


@pytest.mark.parametrize(
    "value",
    [
        '{"b":1,"a":2}',  # members out of order
        '{"a": 1}',  # white space
        ' {"a":1}',
        '{"a":1}\n',
        '{"a":1,"a":1}',  # a member twice
        '{"a":1.5}',  # a float
        '{"a":9007199254740992}',  # beyond ±(2**53-1)
        '{"a":"\\u0041"}',  # an escape JCS does not use
        '{"a":NaN}',
        '{"a":"\\ud800"}',  # a lone surrogate
        "[1]",  # not an object
        '"{}"',
        "null",
        "garbage",
        "",
        None,
        5,
        b"{}",
    ],
)
def test_anything_else_in_data_is_not(value: object) -> None:
    assert not data_is_canonical(value)


@given(st.dictionaries(st.text(max_size=5), st.integers(-(2**53) + 1, 2**53 - 1), max_size=4))
def test_canonical_json_of_any_object_is_canonical_data(obj: dict[str, int]) -> None:
    try:
        text = canonical_json(obj).decode("utf-8")
    except NotCanonicalizable:
        return
    assert data_is_canonical(text)
