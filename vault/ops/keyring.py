"""The process's view of the signing keys: loaded from the database, refreshed on rotation.

Sign with the newest active key; verify with any key still published. Keys rotated by another
process (``dvault keys rotate`` beside a running server) are seen within ``refresh_seconds``, and
at once when a token names a kid this process has not seen (rate-limited reload).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.clock import Clock
from vault.crypto import keys
from vault.crypto.keys import KeyPair
from vault.errors import NotInitialized
from vault.storage import keys_repo
from vault.storage.engine import Database
from vault.storage.tables import KeyRow

MIN_RELOAD_INTERVAL = 1.0  # seconds between reloads forced by unknown kids


class KeysNotHeld(Exception):
    """``token_key_held`` cannot answer without reading the database (use ``token_key``)."""


@dataclass(frozen=True, slots=True)
class KeySet:
    token_signing: KeyPair
    audit_signing: KeyPair
    token_public: dict[str, Ed25519PublicKey]
    audit_public: dict[str, Ed25519PublicKey]


def _published(rows: list[KeyRow], now: int) -> list[KeyRow]:
    return [r for r in rows if r.retired_at is None or (r.publish_until or 0) > now]


def _key_rows(db: Database) -> tuple[list[KeyRow], list[KeyRow]]:
    """The stored token keys and audit keys, oldest first."""
    with db.read() as session:
        return keys_repo.keys_for(session, keys.TOKEN), keys_repo.keys_for(session, keys.AUDIT)


def published_jwks(db: Database, now: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token and audit key sets (JWKS) as the database holds them now: public keys only,
    nothing unsealed. A key rotated in by any process is in them as soon as its rotation has
    committed, which is before any process signs with it."""
    token_rows, audit_rows = _key_rows(db)
    return (
        {"keys": [json.loads(r.public_jwk) for r in _published(token_rows, now)]},
        {"keys": [json.loads(r.public_jwk) for r in audit_rows]},
    )


def load_keyset(db: Database, master_key: bytes, now: int) -> KeySet:
    token_rows, audit_rows = _key_rows(db)
    signing: dict[str, KeyPair] = {}
    for purpose, rows in ((keys.TOKEN, token_rows), (keys.AUDIT, audit_rows)):
        active = [r for r in rows if r.retired_at is None]
        if not active:
            raise NotInitialized(f"no active {purpose} signing key: run 'dvault init'")
        newest = active[-1]
        signing[purpose] = keys.open_private(
            master_key, kid=newest.kid, purpose=purpose, sealed=newest.private_sealed
        )
    token_published = _published(token_rows, now)
    return KeySet(
        token_signing=signing[keys.TOKEN],
        audit_signing=signing[keys.AUDIT],
        token_public=dict(
            keys.public_key_from_jwk(json.loads(r.public_jwk)) for r in token_published
        ),
        audit_public=dict(keys.public_key_from_jwk(json.loads(r.public_jwk)) for r in audit_rows),
    )


class KeyManager:
    def __init__(
        self, db: Database, master_key: bytes, clock: Clock, *, refresh_seconds: float
    ) -> None:
        self._db = db
        self._master_key = master_key
        self._clock = clock
        self._refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._set: KeySet | None = None
        self._loaded_at = 0.0
        self._forced_at = 0.0

    def reload(self) -> KeySet:
        keyset = load_keyset(self._db, self._master_key, int(self._clock.now().timestamp()))
        with self._lock:
            self._set = keyset
            self._loaded_at = time.monotonic()
        return keyset

    def current(self) -> KeySet:
        keyset = self._set
        if keyset is None or time.monotonic() - self._loaded_at > self._refresh_seconds:
            return self.reload()
        return keyset

    def published(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``published_jwks`` now (the public endpoints)."""
        return published_jwks(self._db, int(self._clock.now().timestamp()))

    def token_key(self, kid: str) -> Ed25519PublicKey | None:
        found = self.current().token_public.get(kid)
        if found is None and time.monotonic() - self._forced_at > MIN_RELOAD_INTERVAL:
            self._forced_at = time.monotonic()
            found = self.reload().token_public.get(kid)
        return found

    def token_key_held(self, kid: str) -> Ed25519PublicKey:
        """``token_key`` without I/O: the key if this process holds it and its key set is fresh,
        else ``KeysNotHeld`` (then ``token_key`` decides, and may reload)."""
        keyset = self._set
        if keyset is None or time.monotonic() - self._loaded_at > self._refresh_seconds:
            raise KeysNotHeld(kid)
        found = keyset.token_public.get(kid)
        if found is None:
            raise KeysNotHeld(kid)
        return found

    def audit_key(self, kid: str) -> Ed25519PublicKey | None:
        found = self.current().audit_public.get(kid)
        if found is None and time.monotonic() - self._forced_at > MIN_RELOAD_INTERVAL:
            self._forced_at = time.monotonic()
            found = self.reload().audit_public.get(kid)
        return found

    def audit_signing(self) -> KeyPair:
        return self.current().audit_signing

    def token_signing(self) -> KeyPair:
        return self.current().token_signing
