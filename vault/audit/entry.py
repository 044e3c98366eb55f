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
from typing import Any

from vault.crypto.canonical import canonical_text

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


def _json(value: str | int | None) -> str:
    return json.dumps(value, ensure_ascii=False)


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
    return (
        f'{{"actor":{_json(actor)},"data":{data_json},"prev":{_json(prev)},"seq":{seq},'
        f'"subject":{_json(subject)},"ts":{_json(ts)},"type":{_json(type)}}}'
    ).encode()


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
        """One export line: the canonical JSON of the whole entry (``hash`` included), with
        ``data`` exactly as stored (it is canonical JSON text already)."""
        return (
            f'{{"actor":{_json(self.actor)},"data":{self.data_json},"hash":{_json(self.hash)},'
            f'"prev":{_json(self.prev)},"seq":{self.seq},"subject":{_json(self.subject)},'
            f'"ts":{_json(self.ts)},"type":{_json(self.type)}}}'
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def entry_from_dict(obj: Any) -> Entry:
    """Read an entry from parsed JSON (an export line); raises ``ValueError`` on a bad shape."""
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
        if isinstance(obj[name], str) and not _encodable(obj[name]):
            raise ValueError(f"{name} holds a lone surrogate (not valid Unicode)")
    if not isinstance(obj["data"], dict):
        raise ValueError("data must be an object")
    return Entry(
        seq=seq,
        ts=obj["ts"],
        type=obj["type"],
        actor=obj["actor"],
        subject=obj["subject"],
        data_json=canonical_text(obj["data"]),
        prev=obj["prev"],
        hash=obj["hash"],
    )
