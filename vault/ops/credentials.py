"""Bearer credentials ``dv_<43 base64url chars>``: 256 random bits, stored as SHA-256 only.

A SHA-256 (not a slow password hash) is right here: the secret is 256 random bits, so there is
nothing to guess; the lookup is by hash, and the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from vault.domain import Principal
from vault.errors import Unauthenticated
from vault.storage import principals_repo
from vault.storage.engine import Database

PREFIX = "dv_"
_SHAPE = re.compile(r"dv_[A-Za-z0-9_-]{43}")


def new_credential() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def secret_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


def authenticate(db: Database, credential: str | None) -> Principal:
    """The enabled principal holding ``credential``, or ``Unauthenticated`` (never says why)."""
    refused = Unauthenticated("a valid credential is required")
    if not credential or not _SHAPE.fullmatch(credential):
        raise refused
    wanted = secret_hash(credential)
    with db.read() as session:
        found = principals_repo.principal_by_secret_hash(session, wanted)
    if found is None:
        raise refused
    stored, principal = found
    if not hmac.compare_digest(stored, wanted) or principal.disabled:
        raise refused
    return principal


class CredentialCache:
    """Credentials recently authenticated, by their SHA-256, for the two hot endpoints only.

    Token exchange and introspection re-check their caller under the chain lock in the job that
    answers them, so a stale entry here never lets a disabled principal act: it only saves the
    database read (and a thread hop) that ``authenticate`` costs on every request. Entries live
    ``ttl`` seconds; ``clear()`` runs after every commit that may change principals. Only
    successes are kept, at most ``capacity``.
    """

    def __init__(self, *, ttl: float = 5.0, capacity: int = 1024) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._entries: dict[str, tuple[Principal, float]] = {}

    def get(self, credential: str | None) -> Principal | None:
        if not credential or not _SHAPE.fullmatch(credential):
            return None
        found = self._entries.get(secret_hash(credential))
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def put(self, credential: str, principal: Principal) -> None:
        if len(self._entries) >= self._capacity:
            self._entries = {}
        self._entries[secret_hash(credential)] = (principal, time.monotonic() + self._ttl)

    def clear(self) -> None:
        self._entries = {}
