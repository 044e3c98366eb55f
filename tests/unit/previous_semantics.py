"""The semantic checker as it was before the bulk-path rewrite (commit f465e16), kept verbatim
below this note as the oracle of tests/unit/test_semantics_reference.py. Do not edit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from vault.audit.entry import PRINCIPAL_DISABLED, TOKEN_ISSUED, TOKEN_REVOKED, TOKEN_USED, Entry
from vault.clock import parse_ts
from vault.policy.scopes import ScopeTable, default_table

DEFAULT_LEEWAY_SECONDS = 30
DEFAULT_LIMIT = 100

# Rule names: stable, for reports and tests.
UNKNOWN_TOKEN = "unknown_token"
REISSUED_TOKEN = "reissued_token"
USED_AFTER_EXPIRY = "used_after_expiry"
USED_AFTER_REVOCATION = "used_after_revocation"
USED_OUTSIDE_SCOPE = "used_outside_scope"
ISSUED_BY_DISABLED = "issued_by_disabled_principal"
MALFORMED = "malformed_entry"

ALLOWED = "allowed"
OUTCOMES = frozenset({ALLOWED, "denied_scope"})


@dataclass(frozen=True, slots=True)
class Violation:
    seq: int
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "rule": self.rule, "reason": self.reason}


@dataclass(slots=True)
class _Token:
    scope: tuple[str, ...]
    exp: int
    issued_seq: int
    revoked_seq: int | None = None


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


class SemanticChecker:
    """Feed entries in seq order, then ``finish()`` for the violations found (seq order)."""

    def __init__(
        self,
        *,
        scopes: ScopeTable | None = None,
        leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        if not _int(leeway_seconds) or leeway_seconds < 0:
            raise ValueError("leeway_seconds must be a non-negative integer")
        if not _int(limit) or limit < 1:
            raise ValueError("limit must be a positive integer")
        self._scopes = scopes if scopes is not None else default_table()
        self._leeway = leeway_seconds
        self._limit = limit
        self._tokens: dict[str, _Token] = {}
        self._scope_cache: dict[str, tuple[str, ...]] = {}
        self._disabled: dict[str, int] = {}  # principal id -> seq of its principal.disabled
        self._found: list[Violation] = []
        self.total = 0  # every violation, including those beyond ``limit``

    @property
    def known_tokens(self) -> int:
        """How many tokens the checker remembers: its memory grows with this, not the log."""
        return len(self._tokens)

    # --- reporting ------------------------------------------------------------------------

    def _flag(self, seq: int, rule: str, reason: str) -> None:
        self.total += 1
        if len(self._found) < self._limit:
            self._found.append(Violation(seq, rule, reason))

    def finish(self) -> list[Violation]:
        return list(self._found)

    # --- the walk -------------------------------------------------------------------------

    def feed(self, entry: Entry) -> None:
        if entry.type not in (TOKEN_ISSUED, TOKEN_USED, TOKEN_REVOKED, PRINCIPAL_DISABLED):
            return
        try:
            data = entry.data
        except (ValueError, RecursionError):
            self._flag(entry.seq, MALFORMED, f"{entry.type} data is not JSON")
            return
        if not isinstance(data, dict):
            self._flag(entry.seq, MALFORMED, f"{entry.type} data is not an object")
            return
        if entry.type == TOKEN_ISSUED:
            self._issued(entry, data)
        elif entry.type == TOKEN_USED:
            self._used(entry, data)
        elif entry.type == TOKEN_REVOKED:
            self._revoked(entry, data)
        else:
            self._principal_disabled(entry, data)

    def _issued(self, entry: Entry, data: dict[str, Any]) -> None:
        jti, exp, scope = data.get("jti"), data.get("exp"), data.get("scope")
        if not _text(jti) or not _int(exp) or not isinstance(scope, str):
            self._flag(entry.seq, MALFORMED, "token.issued needs a string jti and scope, int exp")
            return
        if entry.actor is not None and entry.actor in self._disabled:
            self._flag(
                entry.seq,
                ISSUED_BY_DISABLED,
                f"token {jti} issued by principal {entry.actor}, disabled at seq "
                f"{self._disabled[entry.actor]}",
            )
        if jti in self._tokens:
            self._flag(
                entry.seq,
                REISSUED_TOKEN,
                f"jti {jti} was already issued at seq {self._tokens[jti].issued_seq}",
            )
            return  # the first issuance stands
        names = self._scope_cache.get(scope)
        if names is None:
            names = self._scope_cache[scope] = tuple(n for n in scope.split(" ") if n)
        self._tokens[jti] = _Token(scope=names, exp=exp, issued_seq=entry.seq)

    def _known(self, entry: Entry, data: dict[str, Any]) -> _Token | None:
        jti = data.get("jti")
        if not _text(jti):
            self._flag(entry.seq, MALFORMED, f"{entry.type} has no jti")
            return None
        token = self._tokens.get(jti)
        if token is None:
            self._flag(
                entry.seq, UNKNOWN_TOKEN, f"{entry.type} for jti {jti} that no token.issued issued"
            )
        return token

    def _used(self, entry: Entry, data: dict[str, Any]) -> None:
        token = self._known(entry, data)
        outcome = data.get("outcome")
        if outcome not in OUTCOMES:
            self._flag(entry.seq, MALFORMED, f"token.used outcome {outcome!r} is not one we write")
            return
        if token is None or outcome != ALLOWED:
            return
        jti = data["jti"]
        try:
            at = parse_ts(entry.ts)
        except ValueError:
            self._flag(entry.seq, MALFORMED, "ts is not a canonical UTC timestamp")
            return
        deadline = datetime.fromtimestamp(token.exp + self._leeway, UTC)
        if at > deadline:
            self._flag(
                entry.seq,
                USED_AFTER_EXPIRY,
                f"token {jti} allowed at {entry.ts}, after its exp {token.exp} plus "
                f"{self._leeway} s leeway",
            )
        if token.revoked_seq is not None:
            self._flag(
                entry.seq,
                USED_AFTER_REVOCATION,
                f"token {jti} allowed after its revocation at seq {token.revoked_seq}",
            )
        method, path = data.get("method"), data.get("path")
        if method is None or path is None:
            return
        if not isinstance(method, str) or not isinstance(path, str):
            self._flag(entry.seq, MALFORMED, "token.used method and path must be strings or null")
            return
        if not self._scopes.allows(token.scope, method, path):
            self._flag(
                entry.seq,
                USED_OUTSIDE_SCOPE,
                f"token {jti} allowed for {method} {path}, which its scope "
                f"{' '.join(token.scope)!r} does not allow",
            )

    def _revoked(self, entry: Entry, data: dict[str, Any]) -> None:
        token = self._known(entry, data)
        if token is not None and token.revoked_seq is None:
            token.revoked_seq = entry.seq

    def _principal_disabled(self, entry: Entry, data: dict[str, Any]) -> None:
        principal_id = data.get("principal_id")
        if not _text(principal_id):
            self._flag(entry.seq, MALFORMED, "principal.disabled has no principal_id")
            return
        self._disabled.setdefault(principal_id, entry.seq)
