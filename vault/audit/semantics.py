"""What the log *means*: checks a hash chain cannot make (no database, no network; only its
token book writes, to a temporary file, past 50,000 tokens).

A correctly hash-chained log can still tell an impossible story — a use of a token nobody issued,
an allowed use after the token expired or was revoked, or outside its scope, a token issued by a
principal already disabled. The vault never writes such a story (each decision and its entry
commit together), so finding one means the log was forged by someone who could recompute hashes,
or the vault has a bug. Either way verification must fail.

``SemanticChecker`` is fed the entries in seq order, in the same single pass as the
``ChainWalker``, and never raises for a bad log: it collects ``Violation``s (the first ``limit``
of them, counting the rest). It keeps a compact record per issued token (``TokenBook``: every
rule may need any token again, however old), in memory up to ``tokens_in_memory`` tokens and
on disk beyond, and the ids of disabled principals; its caches are bounded. So its memory does
not grow with the log (only with the number of principals disabled in it).

Timestamps are compared as whole microseconds since the epoch, computed once per distinct
``ts`` (the entries of a batch share one), never through a ``datetime`` per entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeGuard

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.entry import (
    PRINCIPAL_DISABLED,
    SCOPES_LOADED,
    TOKEN_ISSUED,
    TOKEN_REVOKED,
    TOKEN_USED,
    Entry,
    EntryRow,
)
from vault.audit.recorded_scopes import recorded_table
from vault.audit.tokenbook import IN_MEMORY, Token, TokenBook
from vault.clock import parse_ts
from vault.crypto.canonical import DuplicateMember, parse_unique_json
from vault.policy.scopes import ScopeTable, any_allows, default_table
from vault.redact import PLACEHOLDER

DEFAULT_LEEWAY_SECONDS = 30
DEFAULT_LIMIT = 100

# Rule names: stable, for reports and tests.
UNKNOWN_TOKEN = "unknown_token"
REISSUED_TOKEN = "reissued_token"
USED_AFTER_EXPIRY = "used_after_expiry"
USED_AFTER_REVOCATION = "used_after_revocation"
USED_OUTSIDE_SCOPE = "used_outside_scope"
ISSUED_BY_DISABLED = "issued_by_disabled_principal"
MALFORMED = "malformed_entry"

ALLOWED = "allowed"
OUTCOMES = frozenset({ALLOWED, "denied_scope"})
READ_TYPES = frozenset({TOKEN_ISSUED, TOKEN_USED, TOKEN_REVOKED, PRINCIPAL_DISABLED, SCOPES_LOADED})
SCOPE_CACHE_SIZE = 4096  # (scope, method, path) answers kept; cleared when full
# Distinct scope tables a log may record (each of up to MAX_RULES rules), one per change of the
# scope file or of the built-in table, at most; a use is matched against the scope rules of each.
MAX_TABLES = 1000

_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def ts_micros(ts: str) -> int:
    """Microseconds since the epoch of a canonical timestamp; ``ValueError`` for any other."""
    return (parse_ts(ts).replace(tzinfo=None) - _EPOCH) // _MICROSECOND


@dataclass(frozen=True, slots=True)
class Violation:
    seq: int
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "rule": self.rule, "reason": self.reason}


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value)


def shown(text: str) -> str:
    """``text`` safe to print and to encode: a reason quotes what the log holds (a jti, a path),
    which a forger chooses. A character that is not printable (a terminal's escape sequence, a
    lone surrogate that no UTF-8 answer can carry, a bidirectional override) is written as its
    escape, ``\\x1b`` or ``\\ud800``."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


class SemanticChecker:
    """Feed entries in seq order, then ``finish()`` for the violations found (seq order)."""

    def __init__(
        self,
        *,
        scopes: ScopeTable | None = None,
        keys: Callable[[str], Ed25519PublicKey | None] | None = None,
        leeway_seconds: int = DEFAULT_LEEWAY_SECONDS,
        limit: int = DEFAULT_LIMIT,
        tokens_in_memory: int = IN_MEMORY,
    ) -> None:
        if not _int(leeway_seconds) or leeway_seconds < 0:
            raise ValueError("leeway_seconds must be a non-negative integer")
        if not _int(limit) or limit < 1:
            raise ValueError("limit must be a positive integer")
        # The table for uses before the log's first scopes.loaded entry (logs written before
        # vaults recorded theirs); after it, a use is allowed if a table recorded before it
        # allows it: processes started at other times (a rolling restart, replicas, a worker
        # replaced after the file changed) may each decide with theirs.
        self._given = scopes if scopes is not None else default_table()
        self._keys = keys
        self._recorded: dict[str, ScopeTable] = {}
        self._leeway = leeway_seconds
        self._limit = limit
        self._tokens = TokenBook(in_memory=tokens_in_memory)
        self._allows: dict[tuple[tuple[str, ...], str, str], bool] = {}
        self._ts: tuple[str, int] | None = None  # the last valid ts and its microseconds
        self._disabled: dict[str, int] = {}  # principal id -> seq of its principal.disabled
        self._found: list[Violation] = []
        self.total = 0  # every violation, including those beyond ``limit``

    def blank(self) -> SemanticChecker:
        """A new checker with this one's settings that has seen nothing."""
        return SemanticChecker(
            scopes=self._given,
            keys=self._keys,
            leeway_seconds=self._leeway,
            limit=self._limit,
            tokens_in_memory=self._tokens.in_memory,
        )

    def keyed(self, keys: Callable[[str], Ed25519PublicKey | None]) -> SemanticChecker:
        """This checker; or, if it was given no audit keys, a blank one with ``keys``: the keys
        a verification checks checkpoints with vouch for recorded scope tables too."""
        if self._keys is not None:
            return self
        fresh = self.blank()
        fresh._keys = keys
        return fresh

    @property
    def known_tokens(self) -> int:
        """How many tokens the checker remembers (in memory up to ``tokens_in_memory``, the rest
        in its book's file on disk)."""
        return len(self._tokens)

    # --- reporting ------------------------------------------------------------------------

    def _flag(self, seq: int, rule: str, reason: str) -> None:
        self.total += 1
        if len(self._found) < self._limit:
            self._found.append(Violation(seq, rule, shown(reason)))

    def finish(self) -> list[Violation]:
        return list(self._found)

    # --- the walk -------------------------------------------------------------------------

    def feed(self, entry: Entry) -> None:
        self.feed_row(entry.as_row())

    def feed_row(self, row: EntryRow, data: Any = None) -> None:
        """``feed`` for a stored row; ``data`` is ``row``'s data already parsed, if it was."""
        kind = row[2]
        if kind not in READ_TYPES:
            return
        if data is None:
            try:
                data = parse_unique_json(row[5])
            except DuplicateMember:
                self._flag(row[0], MALFORMED, f"{kind} data names a member twice")
                return
            except (ValueError, RecursionError):
                self._flag(row[0], MALFORMED, f"{kind} data is not JSON")
                return
        if not isinstance(data, dict):
            self._flag(row[0], MALFORMED, f"{kind} data is not an object")
            return
        if kind == TOKEN_ISSUED:
            self._issued(row, data)
        elif kind == TOKEN_USED:
            self._used(row, data)
        elif kind == TOKEN_REVOKED:
            self._revoked(row, data)
        elif kind == SCOPES_LOADED:
            self._scopes_loaded(row[0], data)
        else:
            self._principal_disabled(row, data)

    def _scopes_loaded(self, seq: int, data: dict[str, Any]) -> None:
        """A table the vault decides uses with from here on (``vault.ops.scope_record``),
        believed only if one of the trusted audit keys signed it."""
        if self._keys is None:
            self._flag(seq, MALFORMED, "scopes.loaded cannot be believed: no audit keys given")
            return
        try:
            spelled, table = recorded_table(data, self._keys)
        except ValueError as exc:
            self._flag(seq, MALFORMED, f"scopes.loaded is not a table the vault signed: {exc}")
            return
        if spelled in self._recorded:
            return
        if len(self._recorded) >= MAX_TABLES:
            self._flag(seq, MALFORMED, f"more than {MAX_TABLES} scope tables recorded")
            return
        self._recorded[spelled] = table
        self._allows.clear()

    def _issued(self, row: EntryRow, data: dict[str, Any]) -> None:
        seq, actor = row[0], row[3]
        jti, exp, scope = data.get("jti"), data.get("exp"), data.get("scope")
        if not _text(jti) or not _int(exp) or not isinstance(scope, str):
            self._flag(seq, MALFORMED, "token.issued needs a string jti and scope, int exp")
            return
        if actor is not None and actor in self._disabled:
            self._flag(
                seq,
                ISSUED_BY_DISABLED,
                f"token {jti} issued by principal {actor}, disabled at seq {self._disabled[actor]}",
            )
        first = self._tokens.get(jti)
        if first is not None:
            self._flag(
                seq, REISSUED_TOKEN, f"jti {jti} was already issued at seq {first.issued_seq}"
            )
            return  # the first issuance stands
        self._tokens.add(jti, scope=scope, exp=exp, issued_seq=seq)

    def _known(self, row: EntryRow, data: dict[str, Any]) -> Token | None:
        jti = data.get("jti")
        if not _text(jti):
            self._flag(row[0], MALFORMED, f"{row[2]} has no jti")
            return None
        token = self._tokens.get(jti)
        if token is None:
            self._flag(row[0], UNKNOWN_TOKEN, f"{row[2]} for jti {jti} that no token.issued issued")
        return token

    def _micros(self, ts: str) -> int | None:
        last = self._ts
        if last is not None and last[0] == ts:
            return last[1]
        try:
            micros = ts_micros(ts)
        except ValueError:
            return None
        self._ts = (ts, micros)
        return micros

    def _allowed_by_scope(self, scope: tuple[str, ...], method: str, path: str) -> bool:
        key = (scope, method, path)
        answer = self._allows.get(key)
        if answer is None:
            if len(self._allows) >= SCOPE_CACHE_SIZE:
                self._allows.clear()
            tables = self._recorded.values() if self._recorded else (self._given,)
            answer = self._allows[key] = any_allows(tables, scope, method, path)
        return answer

    def _used(self, row: EntryRow, data: dict[str, Any]) -> None:
        token = self._known(row, data)
        seq = row[0]
        outcome = data.get("outcome")
        if outcome not in OUTCOMES:
            self._flag(seq, MALFORMED, f"token.used outcome {outcome!r} is not one we write")
            return
        if token is None or outcome != ALLOWED:
            return
        jti, ts = data["jti"], row[1]
        at = self._micros(ts)
        if at is None:
            self._flag(seq, MALFORMED, "ts is not a canonical UTC timestamp")
            return
        if at > (token.exp + self._leeway) * 1_000_000:
            self._flag(
                seq,
                USED_AFTER_EXPIRY,
                f"token {jti} allowed at {ts}, after its exp {token.exp} plus "
                f"{self._leeway} s leeway",
            )
        if token.revoked_seq is not None:
            self._flag(
                seq,
                USED_AFTER_REVOCATION,
                f"token {jti} allowed after its revocation at seq {token.revoked_seq}",
            )
        method, path = data.get("method"), data.get("path")
        if method is None or path is None:
            return
        if not isinstance(method, str) or not isinstance(path, str):
            self._flag(seq, MALFORMED, "token.used method and path must be strings or null")
            return
        if PLACEHOLDER in path or PLACEHOLDER in method:
            return  # a secret was taken out of the request: its scope cannot be checked here
        if not self._allowed_by_scope(token.scope, method, path):
            self._flag(
                seq,
                USED_OUTSIDE_SCOPE,
                f"token {jti} allowed for {method} {path}, which its scope "
                f"{' '.join(token.scope)!r} does not allow",
            )

    def _revoked(self, row: EntryRow, data: dict[str, Any]) -> None:
        if self._known(row, data) is not None:
            self._tokens.revoke(data["jti"], row[0])

    def _principal_disabled(self, row: EntryRow, data: dict[str, Any]) -> None:
        principal_id = data.get("principal_id")
        if not _text(principal_id):
            self._flag(row[0], MALFORMED, "principal.disabled has no principal_id")
            return
        self._disabled.setdefault(principal_id, row[0])
