"""Issued delegation tokens (their jti, never the token), for revocation and introspection."""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlmodel import Session, col, select

from vault.storage.engine import Tx, fetch_all, fetch_first
from vault.storage.tables import TokenRow
from vault.tokens.claims import Claims

UNKNOWN = "unknown"
LIVE = "live"
REVOKED = "revoked"


def token_row(claims: Claims, *, kid: str, subject_role: str) -> dict[str, Any]:
    """The ``tokens`` row of a token being issued (for a subject of ``subject_role``), as an
    insert's values."""
    return {
        "jti": claims.jti,
        "kid": kid,
        "subject_id": claims.sub,
        "actor_id": claims.actor,
        "scope": claims.scope_text,
        "iat": claims.iat,
        "exp": claims.exp,
        "revoked_at": None,
        "subject_role": subject_role,
    }


def get_token(session: Session, jti: str) -> TokenRow | None:
    return session.get(TokenRow, jti)


class TokenState(NamedTuple):
    """What the vault recorded of a jti: ``live``, ``revoked`` or ``unknown`` (never issued
    here), and what it was issued as (``issued_as``), to compare with what a token claims."""

    state: str
    issued: tuple[str, str, str, int, int] | None = None  # subject, actor, scope, iat, exp
    subject_role: str | None = None  # the subject's role at issuance (None before 0003)


NEVER_ISSUED = TokenState(UNKNOWN)
_STATE_COLUMNS = "jti, revoked_at, subject_id, actor_id, scope, iat, exp, subject_role"


def issued_as(claims: Claims) -> tuple[str, str, str, int, int]:
    """What a ``tokens`` row records of a token with these claims (``token_row``)."""
    return (claims.sub, claims.actor, claims.scope_text, claims.iat, claims.exp)


def _state(row: Any) -> TokenState:
    return TokenState(LIVE if row[1] is None else REVOKED, tuple(row[2:7]), row[7])


def token_state(session: Tx, jti: str) -> TokenState:
    """The ``TokenState`` of ``jti``: one indexed read, no ORM."""
    sql = f"SELECT {_STATE_COLUMNS} FROM tokens WHERE jti = ?"  # noqa: S608 (constants)
    found = fetch_first(session, sql, (jti,))
    return NEVER_ISSUED if found is None else _state(found)


def token_states(session: Tx, jtis: list[str]) -> dict[str, TokenState]:
    """``token_state`` of each of ``jtis``, in one read (a batch's introspections)."""
    states = dict.fromkeys(jtis, NEVER_ISSUED)
    marks = ", ".join("?" * len(states))
    sql = f"SELECT {_STATE_COLUMNS} FROM tokens WHERE jti IN ({marks})"  # noqa: S608 (only ?s)
    for row in fetch_all(session, sql, tuple(states)):
        states[row[0]] = _state(row)
    return states


def live_tokens(
    session: Session,
    *,
    now: int,
    jti: str | None = None,
    subject_id: str | None = None,
    actor_id: str | None = None,
) -> list[TokenRow]:
    """Unexpired, unrevoked tokens matching every given filter."""
    stmt = select(TokenRow).where(col(TokenRow.revoked_at).is_(None), col(TokenRow.exp) > now)
    if jti is not None:
        stmt = stmt.where(TokenRow.jti == jti)
    if subject_id is not None:
        stmt = stmt.where(TokenRow.subject_id == subject_id)
    if actor_id is not None:
        stmt = stmt.where(TokenRow.actor_id == actor_id)
    return list(session.exec(stmt.order_by(col(TokenRow.iat), col(TokenRow.jti))).all())


def mark_revoked(session: Session, rows: list[TokenRow], *, revoked_at: str) -> None:
    for row in rows:
        row.revoked_at = revoked_at
        session.add(row)
    session.flush()
