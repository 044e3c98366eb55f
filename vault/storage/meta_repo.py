"""Small facts about this vault (initialized when, the master-key check value, the state stamp)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlmodel import Session

from vault.storage.engine import Tx, execute_many, fetch_first
from vault.storage.tables import MetaRow

INITIALIZED_AT = "initialized_at"
MASTER_KEY_CHECK = "master_key_check"


def get_meta(session: Session, key: str) -> str | None:
    row = session.get(MetaRow, key)
    return None if row is None else row.value


def set_meta(session: Session, key: str, value: str) -> None:
    session.merge(MetaRow(key=key, value=value))
    session.flush()


# A random value replaced by every batch that runs a job which is not read-only (the appender),
# that is, by every transaction that may change what the read-only jobs read: a batch of those
# prepared outside the chain lock is committed as prepared only if the stamp it read first is
# still the stamp under the lock. Migration 0002 adds its row, so that a process of an earlier
# release, which would change state without replacing it, refuses the database.
STATE_STAMP = "state_stamp"
_READ_STAMP = "SELECT value FROM vault_meta WHERE key = ?"
# The same read with no parameter, for ``Database.write_driver``'s opening reads.
STAMP_SQL = f"SELECT value FROM vault_meta WHERE key = '{STATE_STAMP}'"  # noqa: S608 (a constant)
_NEW_STAMP = (
    "INSERT INTO vault_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def state_stamp(tx: Tx) -> str | None:
    return stamp_of(fetch_first(tx, _READ_STAMP, (STATE_STAMP,)))


def stamp_of(row: Any) -> str | None:
    """The state stamp in the row ``STAMP_SQL`` read."""
    return None if row is None else str(row[0])


def restamp(tx: Tx) -> None:
    execute_many(tx, _NEW_STAMP, [(STATE_STAMP, secrets.token_hex(16))])
