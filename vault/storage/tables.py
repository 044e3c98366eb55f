"""SQLModel tables. The schema itself is created and changed only by the Alembic migrations.

``audit_entries`` is stored exactly as it is exported (SPEC §7): one row per entry, columns named
after the members, ``data`` as its canonical JSON text. The migrations add triggers that refuse
UPDATE and DELETE on it (and on ``audit_checkpoints``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel


class AuditEntryRow(SQLModel, table=True):
    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_type", "type"),
        Index("ix_audit_entries_actor", "actor"),
        Index("ix_audit_entries_subject", "subject"),
        Index("ix_audit_entries_ts", "ts"),
    )

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    ts: str
    type: str
    actor: str | None = None
    subject: str | None = None
    data: str = Field(sa_column=Column(Text, nullable=False))
    prev: str
    hash: str


class CheckpointRow(SQLModel, table=True):
    __tablename__ = "audit_checkpoints"

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: str
    ts: str
    kid: str
    sig: str


class PrincipalRow(SQLModel, table=True):
    __tablename__ = "principals"

    id: str = Field(primary_key=True)
    name: str = Field(index=True)
    roles: str  # canonical JSON list
    policy: str = Field(sa_column=Column(Text, nullable=False))  # canonical JSON object
    disabled: bool = False
    created_at: str


class CredentialRow(SQLModel, table=True):
    __tablename__ = "credentials"

    id: str = Field(primary_key=True)
    principal_id: str = Field(foreign_key="principals.id", index=True)
    secret_hash: str = Field(unique=True)  # SHA-256 hex of the whole credential
    created_at: str


class SubjectRow(SQLModel, table=True):
    __tablename__ = "subjects"

    id: str = Field(primary_key=True)
    email: str = Field(unique=True)  # stored lower-cased
    name: str
    role: str
    active: bool = True
    updated_at: str


class KeyRow(SQLModel, table=True):
    __tablename__ = "signing_keys"

    kid: str = Field(primary_key=True)
    purpose: str = Field(index=True)  # "token" or "audit"
    public_jwk: str = Field(sa_column=Column(Text, nullable=False))
    private_sealed: str = Field(sa_column=Column(Text, nullable=False))  # AES-256-GCM envelope
    created_at: str
    retired_at: str | None = None
    # Epoch seconds until which a retired key stays published (every token it signed expired).
    publish_until: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class TokenRow(SQLModel, table=True):
    __tablename__ = "tokens"
    __table_args__ = (
        Index("ix_tokens_subject_id", "subject_id"),
        Index("ix_tokens_actor_id", "actor_id"),
        Index("ix_tokens_kid", "kid"),
    )

    jti: str = Field(primary_key=True)
    kid: str
    subject_id: str
    actor_id: str
    scope: str
    iat: int = Field(sa_column=Column(BigInteger, nullable=False))
    exp: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_at: str | None = None
    subject_role: str | None = None  # as issued (migration 0003; NULL for tokens before it)


class MetaRow(SQLModel, table=True):
    __tablename__ = "vault_meta"

    key: str = Field(primary_key=True)
    value: str = Field(sa_column=Column(Text, nullable=False))
