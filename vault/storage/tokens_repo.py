"""Issued delegation tokens (their jti, never the token), for revocation and introspection."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from vault.storage.engine import Tx, fetch_all, fetch_first
from vault.storage.tables import TokenRow
from vault.tokens.claims import Claims

UNKNOWN = "unknown"
LIVE = "live"
REVOKED = "revoked"


def token_row(claims: Claims, *, kid: str) -> dict[str, Any]:
    """The ``tokens`` row of a token being issued, as an insert's values."""
    return {
        "jti": claims.jti,
        "kid": kid,
        "subject_id": claims.sub,
        "actor_id": claims.actor,
        "scope": claims.scope_text,
        "iat": claims.iat,
        "exp": claims.exp,
        "revoked_at": None,
    }


def get_token(session: Session, jti: str) -> TokenRow | None:
    return session.get(TokenRow, jti)


def token_state(session: Tx, jti: str) -> str:
    """``live``, ``revoked`` or ``unknown`` (never issued here): one indexed read, no ORM."""
    found = fetch_first(session, "SELECT revoked_at FROM tokens WHERE jti = ?", (jti,))
    if found is None:
        return UNKNOWN
    return LIVE if found[0] is None else REVOKED


def token_states(session: Tx, jtis: list[str]) -> dict[str, str]:
    """``token_state`` of each of ``jtis``, in one read (a batch's introspections)."""
    states = dict.fromkeys(jtis, UNKNOWN)
    marks = ", ".join("?" * len(states))
    sql = f"SELECT jti, revoked_at FROM tokens WHERE jti IN ({marks})"  # noqa: S608 (only ?s)
    for jti, revoked_at in fetch_all(session, sql, tuple(states)):
        states[jti] = LIVE if revoked_at is None else REVOKED
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
