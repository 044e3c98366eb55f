"""Issued delegation tokens (their jti, never the token), for revocation and introspection."""

from __future__ import annotations

from sqlmodel import Session, col, select

from vault.storage.tables import TokenRow
from vault.tokens.claims import Claims


def insert_token(session: Session, claims: Claims, *, kid: str) -> None:
    session.add(
        TokenRow(
            jti=claims.jti,
            kid=kid,
            subject_id=claims.sub,
            actor_id=claims.actor,
            scope=claims.scope_text,
            iat=claims.iat,
            exp=claims.exp,
        )
    )


def get_token(session: Session, jti: str) -> TokenRow | None:
    return session.get(TokenRow, jti)


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
