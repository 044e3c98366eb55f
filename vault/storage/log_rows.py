"""The audit log's stored rows by seq range, on a bare driver connection.

For the helper processes of ``dvault audit verify`` (``vault.ops.verify_helper``): they import
this module and the pure chain code only, no SQLAlchemy, so each starts in a tenth of a second.
SQLite is opened read-only; PostgreSQL through its own connection URI. Rows are the columns in
``ROW_MEMBERS`` order (``EntryRow``), read a page at a time so memory stays flat.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vault.audit.chain import GENESIS, Head
from vault.audit.entry import EntryRow

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
PAGE = 5000

_ROWS = (
    "SELECT seq, ts, type, actor, subject, data, prev, hash FROM audit_entries "
    "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
)
_RANGE = (
    "SELECT seq, ts, type, actor, subject, data, prev, hash FROM audit_entries "
    "WHERE seq > ? AND seq <= ? ORDER BY seq"
)
_BEFORE = "SELECT seq, hash FROM audit_entries WHERE seq < ? ORDER BY seq DESC LIMIT 1"


@dataclass(frozen=True, slots=True)
class RowSource:
    """Where the rows are: a SQLite file, or a PostgreSQL connection URI (which may hold a
    password: it is passed to helpers on their standard input, never on a command line)."""

    dialect: str
    address: str = field(repr=False)

    def __post_init__(self) -> None:
        if self.dialect not in (SQLITE, POSTGRESQL):
            raise ValueError(f"unknown dialect {self.dialect!r}")

    def connect(self) -> Any:
        if self.dialect == SQLITE:
            uri = Path(self.address).absolute().as_uri() + "?mode=ro"
            return sqlite3.connect(uri, uri=True, timeout=60)
        import psycopg  # only a PostgreSQL helper pays for importing it

        return psycopg.connect(self.address, autocommit=True)

    def _sql(self, sql: str) -> str:
        return sql if self.dialect == SQLITE else sql.replace("?", "%s")

    def before(self, conn: Any, seq: int) -> Head:
        """The stored entry with the largest seq below ``seq`` (its hash as stored), or GENESIS."""
        if seq <= 1:
            return GENESIS
        found = conn.execute(self._sql(_BEFORE), (seq,)).fetchone()
        return GENESIS if found is None else Head(found[0], found[1])

    def rows(self, conn: Any, lo: int, hi: int, *, page: int = PAGE) -> Iterator[EntryRow]:
        """The stored rows with ``lo <= seq <= hi``, in seq order. SQLite streams them from one
        statement (its cursor holds no more than a row); PostgreSQL's client would hold a whole
        result, so there a page at a time."""
        if self.dialect == SQLITE:
            yield from conn.execute(_RANGE, (lo - 1, hi))
            return
        sql = self._sql(_ROWS)
        after = lo - 1
        while after < hi:
            found: list[EntryRow] = conn.execute(sql, (after, hi, page)).fetchall()
            if not found:
                return
            yield from found
            after = found[-1][0]
