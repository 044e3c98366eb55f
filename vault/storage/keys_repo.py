"""Signing keys at rest: public JWK in clear, private key sealed under the master key."""

from __future__ import annotations

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from vault.storage.engine import Tx, fetch_all
from vault.storage.tables import KeyRow, TokenRow

# The keys a purpose may sign with, as ``keys_for`` orders them: read under the chain lock by a
# batch about to sign, so that a rotation committed by any process is seen before the next use.
ACTIVE_ROWS_SQL = (
    "SELECT kid, purpose, public_jwk, private_sealed, created_at FROM signing_keys "
    "WHERE purpose = ? AND retired_at IS NULL ORDER BY created_at, kid"
)


def insert_key(
    session: Session,
    *,
    kid: str,
    purpose: str,
    public_jwk: str,
    private_sealed: str,
    created_at: str,
) -> None:
    session.add(
        KeyRow(
            kid=kid,
            purpose=purpose,
            public_jwk=public_jwk,
            private_sealed=private_sealed,
            created_at=created_at,
        )
    )
    session.flush()


def all_keys(session: Session) -> list[tuple[str, str]]:
    """``(kid, purpose)`` of every stored key, as stored (whatever a hand-edit left there)."""
    rows = session.execute(text("SELECT kid, purpose FROM signing_keys ORDER BY created_at"))
    return [(str(kid), str(purpose)) for kid, purpose in rows]


def keys_for(session: Session, purpose: str) -> list[KeyRow]:
    """All keys of a purpose, oldest first (a keyring: sign with the newest active one)."""
    stmt = (
        select(KeyRow)
        .where(KeyRow.purpose == purpose)
        .order_by(col(KeyRow.created_at), col(KeyRow.kid))
    )
    return list(session.exec(stmt).all())


def active_key(session: Session, purpose: str) -> KeyRow | None:
    active = [row for row in keys_for(session, purpose) if row.retired_at is None]
    return active[-1] if active else None


def active_rows(session: Tx, purpose: str) -> list[KeyRow]:
    """The active keys of ``purpose`` as this transaction sees them (its own changes included),
    oldest first."""
    return [
        KeyRow(
            kid=kid,
            purpose=kind,
            public_jwk=public_jwk,
            private_sealed=private_sealed,
            created_at=created_at,
        )
        for kid, kind, public_jwk, private_sealed, created_at in fetch_all(
            session, ACTIVE_ROWS_SQL, (purpose,)
        )
    ]


def retire_key(session: Session, kid: str, *, retired_at: str, publish_until: int) -> None:
    row = session.get(KeyRow, kid)
    if row is not None and row.retired_at is None:
        row.retired_at = retired_at
        row.publish_until = publish_until
        session.add(row)
        session.flush()


def latest_exp_signed_by(session: Session, kid: str) -> int | None:
    value = session.exec(select(func.max(TokenRow.exp)).where(TokenRow.kid == kid)).one()
    return None if value is None else int(value)
