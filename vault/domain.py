"""The vault's nouns as plain values: principals, subjects, roles. No I/O, no framework."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

OWNER = "owner"
DELEGATOR = "delegator"
AUDITOR = "auditor"
VERIFIER = "verifier"
ROLES = (OWNER, DELEGATOR, AUDITOR, VERIFIER)

SUBJECT_ROLES = ("admin", "user", "pending")


def has_control_characters(text: str) -> bool:
    """C0 and C1 controls and DEL: a name holding one could rewrite a terminal it is shown on."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in text)


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
