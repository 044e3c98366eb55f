"""Small facts about this vault (initialized when, the master-key check value)."""

from __future__ import annotations

from sqlmodel import Session

from vault.storage.tables import MetaRow

INITIALIZED_AT = "initialized_at"
MASTER_KEY_CHECK = "master_key_check"


def get_meta(session: Session, key: str) -> str | None:
    row = session.get(MetaRow, key)
    return None if row is None else row.value


def set_meta(session: Session, key: str, value: str) -> None:
    session.merge(MetaRow(key=key, value=value))
    session.flush()
