"""The vault's nouns as plain values: principals, subjects, roles. No I/O, no framework."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vault.redact import looks_secret

OWNER = "owner"
DELEGATOR = "delegator"
AUDITOR = "auditor"
VERIFIER = "verifier"
ROLES = (OWNER, DELEGATOR, AUDITOR, VERIFIER)

SUBJECT_ROLES = ("admin", "user", "pending")


MAX_SUBJECT_ID_CHARS = 320


def has_control_characters(text: str) -> bool:
    """C0 and C1 controls and DEL: a name holding one could rewrite a terminal it is shown on."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)


# In free text (a token request's reason): the C0 controls but tab, newline and carriage return,
# DEL, the C1 controls, and the line and paragraph separators. JSON (canonical, as the log is
# stored and exported) escapes the C0 ones, not the rest: NEL, U+2028 and U+2029 stay raw in an
# export line, where a reader that splits on every line break (Python's ``str.splitlines``)
# would cut it, and a terminal shows the controls.
_NOT_IN_TEXT = frozenset(
    [chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
    + [chr(c) for c in range(0x7F, 0xA0)]
    + ["\u2028", "\u2029"]
)


def has_characters_not_in_text(text: str) -> bool:
    """Whether free text holds what ``_NOT_IN_TEXT`` lists."""
    return not _NOT_IN_TEXT.isdisjoint(text)


def shown_escaped(text: str) -> str:
    """``text`` with each character ``_NOT_IN_TEXT`` lists written as ``\\uXXXX``: a refused
    value as an entry records what was sent, without the character itself."""
    if _NOT_IN_TEXT.isdisjoint(text):
        return text
    return "".join(f"\\u{ord(ch):04x}" if ch in _NOT_IN_TEXT else ch for ch in text)


def subject_id_problem(subject_id: str) -> str | None:
    """Why ``subject_id`` cannot be a subject's id (it is stored, audited and shown as written),
    or ``None``: wherever an id is written, as a subject or in a delegator's policy."""
    if not subject_id or len(subject_id) > MAX_SUBJECT_ID_CHARS:
        return f"must be 1-{MAX_SUBJECT_ID_CHARS} characters"
    if has_control_characters(subject_id):
        return "must not hold control characters"
    if subject_id in {".", ".."}:  # a path segment: clients resolve it, never send it
        return "must not be . or .."
    if looks_secret(subject_id):
        return "looks like it holds a credential or token; it was refused"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    id: str
    name: str
    roles: tuple[str, ...]
    policy: dict[str, Any]
    disabled: bool
    created_at: str

    def has(self, role: str) -> bool:
        return role in self.roles

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "roles": list(self.roles),
            "policy": self.policy,
            "disabled": self.disabled,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    id: str
    email: str
    name: str
    role: str
    active: bool

    def to_public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "active": self.active,
        }
