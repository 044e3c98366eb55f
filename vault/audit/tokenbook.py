"""What the semantic checker must remember of every issued token: compactly, and past a
limit on disk (its only I/O: a private temporary file).

Every rule of ``vault.audit.semantics`` may need any issued token again, however old: a later
``token.issued`` with the same jti is a reissue (reported with the first issuance's seq), and an
allowed use after expiry is reported with the token's ``exp``, its revocation seq and, if the use
was also out of scope, its scope. Forgetting an expired token would lose one of these, so this
state is linear in the number of tokens (never in the number of entries).

In memory it is kept small: one dict slot per jti pointing at a row of packed columns (8-byte
``exp`` and issue seq, 4-byte scope id), scopes interned once, revocations in a dict of their
own. That is about 90 bytes per token besides the jti string itself, against about 160 for an
object per token. And it is bounded: past ``in_memory`` tokens, the book moves every token it
holds to a private SQLite file in the temporary directory (gone when the book is closed or
collected) and starts afresh, so a verification's memory stays flat however long the log; a
jti not in memory is then looked up there (one indexed read). What the book answers is the same
either way; if the disk fails, the book raises ``Unavailable`` rather than answer without it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from array import array
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from vault.errors import Unavailable

_INT64 = range(-(2**63), 2**63)
_OUTSIDE = -(2**63)  # stored in the columns for a value kept in ``_wide`` instead
IN_MEMORY = 50_000  # tokens held in memory at most (about 10 MB with 36-character jtis)


class Token(NamedTuple):
    scope: tuple[str, ...]
    exp: int
    issued_seq: int
    revoked_seq: int | None


class TokenBook:
    """jti → ``Token``; add once, revoke once, look up many times."""

    def __init__(self, *, in_memory: int = IN_MEMORY) -> None:
        if in_memory < 1:
            raise ValueError("in_memory must be positive")
        self._in_memory = in_memory
        self._disk: _DiskBook | None = None
        self._clear()

    @property
    def in_memory(self) -> int:
        """How many tokens the book holds in memory at most."""
        return self._in_memory

    def _clear(self) -> None:
        self._row: dict[str, int] = {}
        self._exp = array("q")
        self._issued = array("q")
        self._scope = array("L")
        self._wide: dict[int, tuple[int, int]] = {}  # row → (exp, issued_seq) beyond 64 bits
        self._revoked: dict[int, int] = {}  # row → seq of the first token.revoked
        self._scope_ids: dict[str, int] = {}
        self._scopes: list[tuple[str, ...]] = []

    def __len__(self) -> int:
        return len(self._row) + (len(self._disk) if self._disk is not None else 0)

    def __contains__(self, jti: str) -> bool:
        return self.get(jti) is not None

    def add(self, jti: str, *, scope: str, exp: int, issued_seq: int) -> None:
        """Remember a token (the caller keeps the first issuance of a jti: it adds a jti once)."""
        if len(self._row) >= self._in_memory:
            self._move_to_disk()
        scope_id = self._scope_ids.get(scope)
        if scope_id is None:
            scope_id = self._scope_ids[scope] = len(self._scopes)
            self._scopes.append(tuple(name for name in scope.split(" ") if name))
        row = self._row[jti] = len(self._exp)
        if exp in _INT64 and issued_seq in _INT64 and exp != _OUTSIDE:
            self._exp.append(exp)
            self._issued.append(issued_seq)
        else:  # a forged log may hold any integer; keep it exactly, apart
            self._wide[row] = (exp, issued_seq)
            self._exp.append(_OUTSIDE)
            self._issued.append(_OUTSIDE)
        self._scope.append(scope_id)

    def get(self, jti: str) -> Token | None:
        row = self._row.get(jti)
        if row is None:
            return self._disk.get(jti) if self._disk is not None else None
        return self._token(row)

    def _token(self, row: int) -> Token:
        exp, issued_seq = self._exp[row], self._issued[row]
        if exp == _OUTSIDE:
            exp, issued_seq = self._wide[row]
        return Token(self._scopes[self._scope[row]], exp, issued_seq, self._revoked.get(row))

    def revoke(self, jti: str, seq: int) -> None:
        """Record the first revocation of a known token (later ones change nothing)."""
        row = self._row.get(jti)
        if row is not None:
            self._revoked.setdefault(row, seq)
        elif self._disk is not None:
            self._disk.revoke(jti, seq)

    def close(self) -> None:
        """Forget everything; the file on disk, if any, is gone."""
        if self._disk is not None:
            self._disk.close()
            self._disk = None
        self._clear()

    def _move_to_disk(self) -> None:
        if self._disk is None:
            self._disk = _DiskBook()
        self._disk.put((jti, self._token(row)) for jti, row in self._row.items())
        self._clear()


class _DiskBook:
    """Tokens in a private SQLite file in Python's temporary directory (``TMPDIR``), made with
    mode 0600 and unlinked as soon as it is open, so it goes when the book does; SQLite keeps
    only a small page cache of it in memory. About 60 bytes per token on disk.

    jti and scope are stored as UTF-8 bytes that keep a lone surrogate (a forged log may hold
    one: it cannot be bound as text), integers beyond SQLite's 64 bits as their decimal text (the
    columns have no type, so each value stays as given).

    A failure of the disk (full, unwritable) ends the verification with one clear error rather
    than an answer made without the tokens it could not keep; the book stays failed after it
    (with no journal, a failed write cannot be rolled back)."""

    def __init__(self) -> None:
        self._failed: Exception | None = None
        self._count = 0
        with self._guard():
            fd, path = tempfile.mkstemp(prefix="dvault-tokens-", suffix=".db")
            os.close(fd)
            try:
                # Used by one thread at a time, not always the one that filled it (a
                # verification run in a thread pool).
                self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
                self._db.executescript(
                    "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                    "PRAGMA cache_size = -2048;"
                    "CREATE TABLE book (jti PRIMARY KEY, scope NOT NULL, exp, issued, revoked)"
                    " WITHOUT ROWID;"
                )
            finally:
                os.unlink(path)  # open: the file lives on, unnamed, until the book is closed

    def __len__(self) -> int:
        return self._count

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self._failed is not None:
            raise _disk_failure(self._failed)
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            self._failed = exc
            raise _disk_failure(exc) from None

    def put(self, tokens: Iterable[tuple[str, Token]]) -> None:
        """Store ``tokens``, one row at a time (no list of them all: memory stays flat)."""

        def rows() -> Iterator[tuple[bytes, bytes, int | str, int | str, int | str | None]]:
            for jti, t in tokens:
                revoked = None if t.revoked_seq is None else _stored(t.revoked_seq)
                scope = _utf8(" ".join(t.scope))
                yield _utf8(jti), scope, _stored(t.exp), _stored(t.issued_seq), revoked
                self._count += 1

        with self._guard():
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO book VALUES (?, ?, ?, ?, ?)", rows())
            self._db.execute("COMMIT")

    def get(self, jti: str) -> Token | None:
        with self._guard():
            found = self._db.execute(
                "SELECT scope, exp, issued, revoked FROM book WHERE jti = ?", (_utf8(jti),)
            ).fetchone()
        if found is None:
            return None
        scope, exp, issued, revoked = found
        scopes = tuple(scope.decode("utf-8", "surrogatepass").split(" ")) if scope else ()
        return Token(scopes, int(exp), int(issued), None if revoked is None else int(revoked))

    def revoke(self, jti: str, seq: int) -> None:
        with self._guard():
            self._db.execute(
                "UPDATE book SET revoked = ? WHERE jti = ? AND revoked IS NULL",
                (_stored(seq), _utf8(jti)),
            )

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error, AttributeError):
            self._db.close()

    def __del__(self) -> None:
        # sqlite3's connection and its statement cache refer to each other, so without this the
        # file (and its disk space) would stay open until the cycle collector ran.
        self.close()


def _disk_failure(exc: Exception) -> Unavailable:
    return Unavailable(
        f"the verification's temporary file of tokens failed ({exc}); give it room: it is "
        f"written in {tempfile.gettempdir()} (TMPDIR chooses another)"
    )


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _stored(value: int) -> int | str:
    return value if value in _INT64 else str(value)
