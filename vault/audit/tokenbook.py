"""What the semantic checker must remember of every issued token, compactly (pure).

Every rule of ``vault.audit.semantics`` may need any issued token again, however old: a later
``token.issued`` with the same jti is a reissue (reported with the first issuance's seq), and an
allowed use after expiry is reported with the token's ``exp``, its revocation seq and, if the use
was also out of scope, its scope. Forgetting an expired token would lose one of these, so this
state is linear in the number of tokens (never in the number of entries). It is kept small:
one dict slot per jti pointing at a row of packed columns (8-byte ``exp`` and issue seq, 4-byte
scope id), scopes interned once, revocations in a dict of their own (they are few). That is
about 90 bytes per token besides the jti string itself, against about 160 for an object per
token.
"""

from __future__ import annotations

from array import array
from typing import NamedTuple

_INT64 = range(-(2**63), 2**63)
_OUTSIDE = -(2**63)  # stored in the columns for a value kept in ``_wide`` instead


class Token(NamedTuple):
    scope: tuple[str, ...]
    exp: int
    issued_seq: int
    revoked_seq: int | None


class TokenBook:
    """jti → ``Token``; add once, revoke once, look up many times."""

    def __init__(self) -> None:
        self._row: dict[str, int] = {}
        self._exp = array("q")
        self._issued = array("q")
        self._scope = array("L")
        self._wide: dict[int, tuple[int, int]] = {}  # row → (exp, issued_seq) beyond 64 bits
        self._revoked: dict[int, int] = {}  # row → seq of the first token.revoked
        self._scope_ids: dict[str, int] = {}
        self._scopes: list[tuple[str, ...]] = []

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, jti: str) -> bool:
        return jti in self._row

    def add(self, jti: str, *, scope: str, exp: int, issued_seq: int) -> None:
        """Remember a token (the caller keeps the first issuance of a jti)."""
        scope_id = self._scope_ids.get(scope)
        if scope_id is None:
            scope_id = self._scope_ids[scope] = len(self._scopes)
            self._scopes.append(tuple(name for name in scope.split(" ") if name))
        row = self._row[jti] = len(self._exp)
        if exp in _INT64 and issued_seq in _INT64 and exp != _OUTSIDE:
            self._exp.append(exp)
            self._issued.append(issued_seq)
        else:  # a forged log may hold any integer; keep it exactly, apart
            self._wide[row] = (exp, issued_seq)
            self._exp.append(_OUTSIDE)
            self._issued.append(_OUTSIDE)
        self._scope.append(scope_id)

    def get(self, jti: str) -> Token | None:
        row = self._row.get(jti)
        if row is None:
            return None
        exp, issued_seq = self._exp[row], self._issued[row]
        if exp == _OUTSIDE:
            exp, issued_seq = self._wide[row]
        return Token(self._scopes[self._scope[row]], exp, issued_seq, self._revoked.get(row))

    def revoke(self, jti: str, seq: int) -> None:
        """Record the first revocation of a known token (later ones change nothing)."""
        row = self._row.get(jti)
        if row is not None:
            self._revoked.setdefault(row, seq)
