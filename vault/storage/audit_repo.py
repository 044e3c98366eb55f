"""Reading and appending audit entries and checkpoints. INSERT and SELECT only, never UPDATE."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, text
from sqlmodel import Session, col, select

from vault.audit.chain import GENESIS, Head
from vault.audit.checkpoint import Checkpoint
from vault.audit.entry import Entry, EntryRow, entry_from_row
from vault.errors import CorruptEntry
from vault.storage.engine import Database, Tx, execute_many, fetch_all, fetch_first
from vault.storage.tables import AuditEntryRow, CheckpointRow

AUDIT_TABLE = "audit_entries"


def _entry(row: AuditEntryRow) -> Entry:
    return Entry(
        seq=row.seq,
        ts=row.ts,
        type=row.type,
        actor=row.actor,
        subject=row.subject,
        data_json=row.data,
        prev=row.prev,
        hash=row.hash,
    )


def _checkpoint(row: CheckpointRow) -> Checkpoint:
    return Checkpoint(seq=row.seq, hash=row.hash, ts=row.ts, kid=row.kid, sig=row.sig)


HEAD_SQL = "SELECT seq, hash FROM audit_entries ORDER BY seq DESC LIMIT 1"
_HASH_AT = "SELECT hash FROM audit_entries WHERE seq = ?"


def head(session: Tx) -> Head:
    """The stored entry with the largest seq (GENESIS for an empty log). ``CorruptEntry`` if it
    holds no integer seq or no text hash (SQLite sorts text after every number, so a hand-edited
    row can be that entry): nothing is appended after it, and nothing reads up to it."""
    return head_of(fetch_first(session, HEAD_SQL, ()))


def head_of(row: Any) -> Head:
    """``head`` of the row ``HEAD_SQL`` read."""
    if row is None:
        return GENESIS
    if type(row[0]) is not int or row[1].__class__ is not str:
        raise CorruptEntry(
            row[0], "it holds a value of the wrong type; the database was changed outside the vault"
        )
    return Head(row[0], row[1])


_LATEST_DATA = "SELECT data FROM audit_entries WHERE type = ? ORDER BY seq DESC LIMIT 1"


def latest_data(session: Tx, type: str) -> str | None:
    """The stored ``data`` text of the last entry of ``type``, if there is one."""
    row = fetch_first(session, _LATEST_DATA, (type,))
    return None if row is None else row[0]


_INSERT_ENTRY = (
    "INSERT INTO audit_entries (seq, ts, type, actor, subject, data, prev, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_entries(session: Tx, entries: Sequence[Entry]) -> None:
    execute_many(
        session,
        _INSERT_ENTRY,
        [(e.seq, e.ts, e.type, e.actor, e.subject, e.data_json, e.prev, e.hash) for e in entries],
    )


_INSERT_CHECKPOINT = (
    "INSERT INTO audit_checkpoints (seq, hash, ts, kid, sig) VALUES (?, ?, ?, ?, ?)"
)


def insert_checkpoint(session: Tx, checkpoint: Checkpoint) -> None:
    c = checkpoint
    execute_many(session, _INSERT_CHECKPOINT, [(c.seq, c.hash, c.ts, c.kid, c.sig)])


def checkpoints(session: Session) -> list[Checkpoint]:
    rows = session.exec(select(CheckpointRow).order_by(col(CheckpointRow.seq))).all()
    return [_checkpoint(row) for row in rows]


def checkpoints_after(session: Session, seq: int) -> list[Checkpoint]:
    rows = session.exec(
        select(CheckpointRow).where(col(CheckpointRow.seq) > seq).order_by(col(CheckpointRow.seq))
    ).all()
    return [_checkpoint(row) for row in rows]


def latest_checkpoint(session: Session) -> Checkpoint | None:
    row = session.exec(
        select(CheckpointRow).order_by(col(CheckpointRow.seq).desc()).limit(1)
    ).first()
    return None if row is None else _checkpoint(row)


_LATEST_CHECKPOINT = (
    "SELECT seq, hash, ts, kid, sig FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
)


def latest_checkpoint_row(tx: Tx) -> object:
    """The row of the stored checkpoint with the largest seq, as read (``None`` if none)."""
    return fetch_first(tx, _LATEST_CHECKPOINT, ())


def checkpoint_of_row(row: Any) -> Checkpoint | None:
    """A ``_LATEST_CHECKPOINT`` row as a checkpoint; ``None`` for one that holds values of
    other types (a database changed by hand)."""
    if type(row[0]) is not int or not all(isinstance(v, str) for v in row[1:]):
        return None
    return Checkpoint(seq=row[0], hash=row[1], ts=row[2], kid=row[3], sig=row[4])


def hash_at(tx: Tx, seq: int) -> object:
    """The stored hash of entry ``seq`` (``None`` if there is none)."""
    row = fetch_first(tx, _HASH_AT, (seq,))
    return None if row is None else row[0]


def rows_between(tx: Tx, after_seq: int, upto_seq: int, limit: int) -> Sequence[EntryRow]:
    """At most ``limit`` stored rows ``after_seq < seq <= upto_seq``, in order, read in ``tx``."""
    rows: Sequence[EntryRow] = fetch_all(tx, _ROWS, (after_seq, upto_seq, limit))
    return rows


def recorded_kids(db: Database, head_seq: int) -> set[str]:
    """The kids that ``key.created`` entries up to ``head_seq`` record."""
    found: set[str] = set()
    with db.read() as session:
        rows = session.execute(
            text("SELECT data FROM audit_entries WHERE type = 'key.created' AND seq <= :head"),
            {"head": head_seq},
        )
        for (data,) in rows:
            try:
                kid = json.loads(data).get("kid") if isinstance(data, str) else None
            except (ValueError, AttributeError, RecursionError):
                continue
            if isinstance(kid, str):
                found.add(kid)
    return found


def stray_row(db: Database, head_seq: int) -> tuple[object, str] | None:
    """A stored row that a walk of ``1..head_seq`` in seq order never reads, with what is wrong
    with it: a second row of one seq (only without the primary key, dropped by hand: the pages
    of ``stream_rows`` would skip it), a seq below 1, or (SQLite) a seq that is not an integer.
    ``None`` if the rows up to the head are exactly ``head_seq`` rows of integer seqs."""
    if db.is_sqlite:
        counted = "SELECT count(*) FROM audit_entries WHERE typeof(seq) != 'integer' OR seq <= ?"
    else:
        counted = "SELECT count(*) FROM audit_entries WHERE seq <= ?"
    with db.read() as session:
        (total,) = fetch_first(session, counted, (head_seq,))
        if total == head_seq:
            return None
        twice = fetch_first(
            session,
            "SELECT seq FROM audit_entries WHERE seq <= ? GROUP BY seq HAVING count(*) > 1 "
            "ORDER BY seq LIMIT 1",
            (head_seq,),
        )
        if twice is not None:
            return twice[0], f"seq {twice[0]} is stored more than once"
        if db.is_sqlite:
            odd = fetch_first(
                session,
                "SELECT seq FROM audit_entries WHERE typeof(seq) != 'integer' LIMIT 1",
                (),
            )
            if odd is not None:
                return odd[0], f"a row holds seq {str(odd[0])[:40]!r}, which is not an integer"
        low = fetch_first(session, "SELECT min(seq) FROM audit_entries WHERE seq < 1", ())
        if low is not None and low[0] is not None:
            return low[0], f"a row holds seq {low[0]}, below 1"
    return None  # rows are missing, not stray: the walk itself stops at the first gap


def count_entries(session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(AuditEntryRow)).one())


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFilter:
    after_seq: int = 0
    limit: int = 100
    type: str | None = None
    actor: str | None = None
    subject: str | None = None
    jti: str | None = None
    since: str | None = None  # canonical ts, inclusive
    until: str | None = None  # canonical ts, exclusive


def query_entries(db: Database, flt: EntryFilter) -> list[Entry]:
    stmt = select(AuditEntryRow).where(col(AuditEntryRow.seq) > flt.after_seq)
    if flt.type is not None:
        stmt = stmt.where(AuditEntryRow.type == flt.type)
    if flt.actor is not None:
        stmt = stmt.where(AuditEntryRow.actor == flt.actor)
    if flt.subject is not None:
        stmt = stmt.where(AuditEntryRow.subject == flt.subject)
    if flt.since is not None:
        stmt = stmt.where(col(AuditEntryRow.ts) >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(col(AuditEntryRow.ts) < flt.until)
    if flt.jti is not None:
        # data is canonical JSON text; both dialects read a member of it without a side column.
        member = "json_extract(data, '$.jti')" if db.is_sqlite else "CAST(data AS jsonb) ->> 'jti'"
        stmt = stmt.where(text(f"{member} = :jti")).params(jti=flt.jti)
    stmt = stmt.order_by(col(AuditEntryRow.seq)).limit(flt.limit)
    with db.read() as session:
        return [_entry(row) for row in session.exec(stmt).all()]


def stream_entries(
    db: Database, *, upto_seq: int, page: int = 1000, after_seq: int = 0
) -> Iterator[Entry]:
    """``stream_rows`` as ``Entry`` objects."""
    for row in stream_rows(db, upto_seq=upto_seq, page=page, after_seq=after_seq):
        yield entry_from_row(row)


# The columns in ``ROW_MEMBERS`` order; sqlite3's paramstyle, and psycopg's.
_ROWS = (
    "SELECT seq, ts, type, actor, subject, data, prev, hash FROM audit_entries "
    "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)


def stream_rows(
    db: Database, *, upto_seq: int, page: int = 5000, after_seq: int = 0
) -> Iterator[EntryRow]:
    """Stored rows ``after_seq < seq <= upto_seq`` in order, as plain tuples (``EntryRow``):
    the bulk path of export and verification.

    A page per short read transaction, so memory stays flat and a log that grows meanwhile
    does not make the stream chase its head. The page is read through the driver's own cursor
    (``fetch_all``): the columns are plain text and integers, and SQLAlchemy's per-row result
    processing would cost more than the fetch itself. A driver error comes out as SQLAlchemy's
    (``DBAPIError``), as from any other read.
    """
    while after_seq < upto_seq:
        with db.read() as session:
            rows: Sequence[EntryRow] = fetch_all(session, _ROWS, (after_seq, upto_seq, page))
        if not rows:
            return
        yield from rows
        after_seq = rows[-1][0]
