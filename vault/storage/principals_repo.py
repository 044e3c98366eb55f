"""Principals and their credentials (stored as SHA-256 hashes only)."""

from __future__ import annotations

import json

from sqlmodel import Session, col, select

from vault.crypto.canonical import canonical_text
from vault.domain import Principal
from vault.storage.engine import Tx, fetch_first
from vault.storage.tables import CredentialRow, PrincipalRow


def _principal(row: PrincipalRow) -> Principal:
    return Principal(
        id=row.id,
        name=row.name,
        roles=tuple(json.loads(row.roles)),
        policy=json.loads(row.policy),
        disabled=row.disabled,
        created_at=row.created_at,
    )


def insert_principal(session: Session, principal: Principal) -> None:
    session.add(
        PrincipalRow(
            id=principal.id,
            name=principal.name,
            roles=canonical_text(list(principal.roles)),
            policy=canonical_text(principal.policy),
            disabled=principal.disabled,
            created_at=principal.created_at,
        )
    )
    session.flush()


def get_principal(session: Tx, principal_id: str) -> Principal | None:
    row = fetch_first(
        session,
        "SELECT id, name, roles, policy, disabled, created_at FROM principals WHERE id = ?",
        (principal_id,),
    )
    if row is None:
        return None
    return Principal(
        id=row[0],
        name=row[1],
        roles=tuple(json.loads(row[2])),
        policy=json.loads(row[3]),
        disabled=bool(row[4]),
        created_at=row[5],
    )


def list_principals(session: Session) -> list[Principal]:
    rows = session.exec(select(PrincipalRow).order_by(col(PrincipalRow.created_at))).all()
    return [_principal(row) for row in rows]


def set_policy(session: Session, principal_id: str, policy: dict[str, object]) -> None:
    row = session.get(PrincipalRow, principal_id)
    if row is not None:
        row.policy = canonical_text(policy)
        session.add(row)
        session.flush()


def set_disabled(session: Session, principal_id: str) -> None:
    row = session.get(PrincipalRow, principal_id)
    if row is not None:
        row.disabled = True
        session.add(row)
        session.flush()


def insert_credential(
    session: Session, *, credential_id: str, principal_id: str, secret_hash: str, created_at: str
) -> None:
    session.add(
        CredentialRow(
            id=credential_id,
            principal_id=principal_id,
            secret_hash=secret_hash,
            created_at=created_at,
        )
    )
    session.flush()


def principal_by_secret_hash(session: Session, secret_hash: str) -> tuple[str, Principal] | None:
    """The stored hash that matched, and its principal (disabled ones included)."""
    row = session.exec(
        select(CredentialRow, PrincipalRow)
        .join(PrincipalRow, col(PrincipalRow.id) == col(CredentialRow.principal_id))
        .where(CredentialRow.secret_hash == secret_hash)
    ).first()
    if row is None:
        return None
    credential, principal = row
    return credential.secret_hash, _principal(principal)
