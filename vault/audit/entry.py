"""Audit entries and their hash (SPEC §7).

``hash`` is the SHA-256 of the RFC 8785 canonical JSON of the entry without ``hash``. Entries
keep ``data`` as its canonical JSON text — exactly what the ``audit_entries.data`` column stores —
so hashing composes the canonical bytes around that text without re-encoding it. The property
tests check the composition against ``canonical_json`` of the whole object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, TypeAlias

from vault.crypto.canonical import canonical_text, is_utf8_text, parse_unique_json
from vault.errors import CorruptEntry

GENESIS_HASH = "0" * 64
ENTRY_MEMBERS = frozenset({"seq", "ts", "type", "actor", "subject", "data", "prev", "hash"})

# The types the vault writes (SPEC §7 "at least", plus none other).
PRINCIPAL_CREATED = "principal.created"
PRINCIPAL_DISABLED = "principal.disabled"
CREDENTIAL_CREATED = "credential.created"
SUBJECT_UPSERTED = "subject.upserted"
POLICY_CHANGED = "policy.changed"
KEY_CREATED = "key.created"
KEY_ROTATED = "key.rotated"
TOKEN_ISSUED = "token.issued"
TOKEN_DENIED = "token.denied"
TOKEN_USED = "token.used"
TOKEN_REJECTED = "token.rejected"
TOKEN_REVOKED = "token.revoked"
AUDIT_CHECKPOINT = "audit.checkpoint"
SCOPES_LOADED = "scopes.loaded"  # the scope table a serving vault decides with


# An entry as the table stores it, in this column order: the bulk paths (export, verification)
# pass these plain tuples along instead of building an ``Entry`` for each row.
EntryRow: TypeAlias = tuple[int, str, str, str | None, str | None, str, str, str]
ROW_MEMBERS = ("seq", "ts", "type", "actor", "subject", "data", "prev", "hash")


def _str(value: str | None) -> str:
    """A string or null as ``json.dumps(value, ensure_ascii=False)`` spells it.

    ``encode_basestring`` is the very function ``json.dumps`` calls for a ``str`` when
    ``ensure_ascii=False`` (its C version), without the encoder object built around it per call.
    """
    return "null" if value is None else encode_basestring(value)


def canonical_entry(
    seq: int,
    ts: str,
    type: str,
    actor: str | None,
    subject: str | None,
    data_json: str,
    prev: str,
) -> bytes:
    """``entry_bytes`` with positional arguments: the per-row hot path of verification, with
    ``_str`` written out (a call per member is a tenth of the time here)."""
    q = encode_basestring
    return (
        f'{{"actor":{"null" if actor is None else q(actor)},"data":{data_json},'
        f'"prev":{"null" if prev is None else q(prev)},"seq":{seq},'
        f'"subject":{"null" if subject is None else q(subject)},'
        f'"ts":{"null" if ts is None else q(ts)},"type":{"null" if type is None else q(type)}}}'
    ).encode()


def entry_bytes(
    *,
    seq: int,
    ts: str,
    type: str,
    actor: str | None,
    subject: str | None,
    data_json: str,
    prev: str,
) -> bytes:
    """Canonical JSON of the entry without ``hash``: members in JCS (sorted) order."""
    return canonical_entry(seq, ts, type, actor, subject, data_json, prev)


def entry_line(row: EntryRow) -> str:
    """One export line: the canonical JSON of the whole entry (``hash`` included), with ``data``
    exactly as stored (it is canonical JSON text already). ``CorruptEntry`` for a row holding a
    value no entry has (a number or a blob where text belongs: a hand-edited SQLite file), which
    no line could show as it is stored."""
    seq, ts, type, actor, subject, data_json, prev, digest = row
    try:
        if data_json.__class__ is not str or seq.__class__ is not int:
            raise TypeError
        return (
            f'{{"actor":{_str(actor)},"data":{data_json},"hash":{_str(digest)},'
            f'"prev":{_str(prev)},"seq":{seq},"subject":{_str(subject)},'
            f'"ts":{_str(ts)},"type":{_str(type)}}}'
        )
    except TypeError:
        raise CorruptEntry(
            seq, "it holds a value of the wrong type; the database was changed outside the vault"
        ) from None


def data_is_canonical(data_json: object) -> bool:
    """Whether a stored ``data`` is what the vault writes there: the canonical JSON text of an
    object (SPEC §7), one member name once each, values in the canonical domain. The chain's
    hash covers the stored text as it is, so a text the vault never writes (not JSON, spaces,
    members out of order, named twice) can still hash into a sound chain; the vault checks
    each entry with this before signing a checkpoint over it (``vault.audit.anchor``)."""
    if type(data_json) is not str:
        return False
    try:
        value = parse_unique_json(data_json)
        return isinstance(value, dict) and canonical_text(value) == data_json
    except (ValueError, RecursionError):  # not JSON, a member twice, not canonicalizable
        return False


def entry_hash(**members: Any) -> str:
    return hashlib.sha256(entry_bytes(**members)).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """An entry before the chain gives it a place: what happened, to whom, by whom."""

    type: str
    actor: str | None
    subject: str | None
    data: dict[str, Any]

    def data_json(self) -> str:
        return canonical_text(self.data)


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    seq: int
    ts: str
    type: str
    actor: str | None
    subject: str | None
    data_json: str
    prev: str
    hash: str

    def computed_hash(self) -> str:
        return entry_hash(
            seq=self.seq,
            ts=self.ts,
            type=self.type,
            actor=self.actor,
            subject=self.subject,
            data_json=self.data_json,
            prev=self.prev,
        )

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data_json)
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "type": self.type,
            "actor": self.actor,
            "subject": self.subject,
            "data": self.data,
            "prev": self.prev,
            "hash": self.hash,
        }

    def to_line(self) -> str:
        """One export line (``entry_line``)."""
        return entry_line(self.as_row())

    def as_row(self) -> EntryRow:
        return (
            self.seq,
            self.ts,
            self.type,
            self.actor,
            self.subject,
            self.data_json,
            self.prev,
            self.hash,
        )


def entry_from_row(row: EntryRow) -> Entry:
    seq, ts, type, actor, subject, data_json, prev, digest = row
    return Entry(
        seq=seq,
        ts=ts,
        type=type,
        actor=actor,
        subject=subject,
        data_json=data_json,
        prev=prev,
        hash=digest,
    )


def _check_members(ts: Any, kind: Any, actor: Any, subject: Any, prev: Any, digest: Any) -> None:
    for name, value in (("ts", ts), ("type", kind), ("prev", prev), ("hash", digest)):
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string")
    for name, value in (("actor", actor), ("subject", subject)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name} must be a string or null")
    for name, value in (
        ("ts", ts),
        ("type", kind),
        ("actor", actor),
        ("subject", subject),
        ("prev", prev),
        ("hash", digest),
    ):
        if isinstance(value, str) and not is_utf8_text(value):
            raise ValueError(f"{name} holds a lone surrogate (not valid Unicode)")


def entry_row_from_dict(obj: Any) -> tuple[EntryRow, dict[str, Any]]:
    """Read an entry from parsed JSON (an export line) as a row, with its ``data`` object;
    raises ``ValueError`` on a bad shape. ``data`` in the row is its canonical JSON text."""
    if not isinstance(obj, dict):
        raise ValueError("entry is not a JSON object")
    if obj.keys() != ENTRY_MEMBERS:
        members = set(obj)
        missing = sorted(ENTRY_MEMBERS - members)
        extra = sorted(members - ENTRY_MEMBERS)
        raise ValueError(f"entry members wrong (missing {missing}, unexpected {extra})")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError("seq must be a positive integer")
    ts, kind, actor, subject, prev, digest = (
        obj["ts"],
        obj["type"],
        obj["actor"],
        obj["subject"],
        obj["prev"],
        obj["hash"],
    )
    if not (
        type(ts) is str
        and type(kind) is str
        and type(prev) is str
        and type(digest) is str
        and (actor is None or type(actor) is str)
        and (subject is None or type(subject) is str)
        and ts.isascii()
        and kind.isascii()
        and prev.isascii()
        and digest.isascii()
        and (actor is None or actor.isascii())
        and (subject is None or subject.isascii())
    ):  # the usual case passes the checks below; anything else meets them in their order
        _check_members(ts, kind, actor, subject, prev, digest)
    data = obj["data"]
    if not isinstance(data, dict):
        raise ValueError("data must be an object")
    return (seq, ts, kind, actor, subject, canonical_text(data), prev, digest), data


def entry_from_dict(obj: Any) -> Entry:
    """Read an entry from parsed JSON (an export line); raises ``ValueError`` on a bad shape."""
    return entry_from_row(entry_row_from_dict(obj)[0])
