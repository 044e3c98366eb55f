"""Bearer credentials ``dv_<43 base64url chars>``: 256 random bits, stored as SHA-256 only.

A SHA-256 (not a slow password hash) is right here: the secret is 256 random bits, so there is
nothing to guess; the lookup is by hash, and the final comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

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
