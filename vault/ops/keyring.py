"""The process's view of the signing keys: loaded from the database, refreshed on rotation.

Sign with the newest active key; verify with any key still published. A batch about to sign
(a token, a checkpoint) first reads which keys are active, under the chain lock
(``signing_now``): a key retired by any process (``dvault keys rotate`` beside a running server)
never signs once its rotation has committed. For verifying, keys rotated elsewhere are seen within
``refresh_seconds``, and at once when a token names a kid this process has not seen (rate-limited
reload).

Only a key the vault made is trusted: its private key, sealed under the master key, must open
and be the key its public JWK publishes (``trusted_rows``). Anyone who can write the database
but lacks the master key could otherwise add a key of their own, sign checkpoints over a log
they rewrote (or tokens), and have the vault publish and believe them. Such a row is left out of
everything, with an error in the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.clock import Clock
from vault.crypto import keys
from vault.crypto.keys import KeyPair
from vault.errors import MasterKeyError, NotInitialized
from vault.storage import keys_repo
from vault.storage.engine import Database, Tx
from vault.storage.tables import KeyRow

MIN_RELOAD_INTERVAL = 1.0  # seconds between reloads forced by unknown kids

log = logging.getLogger("vault.keys")

# A stored key row as far as trusting it goes: once vetted, the same row is not opened again.
_Mark = tuple[str, str, str, str]


class KeysNotHeld(Exception):
    """``token_key_held`` cannot answer without reading the database (use ``token_key``)."""


@dataclass(frozen=True, slots=True)
class KeySet:
    token_signing: KeyPair
    audit_signing: KeyPair
    token_public: dict[str, Ed25519PublicKey]
    audit_public: dict[str, Ed25519PublicKey]
    # The kids of the active keys of each purpose as the rows were read (trusted or not): what
    # ``signing_now`` compares with the rows a signing batch reads.
    active: dict[str, tuple[str, ...]]


def _published(rows: list[KeyRow], now: int) -> list[KeyRow]:
    return [r for r in rows if r.retired_at is None or (r.publish_until or 0) > now]


def _key_rows(db: Database) -> tuple[list[KeyRow], list[KeyRow]]:
    """The stored token keys and audit keys, oldest first."""
    with db.read() as session:
        return keys_repo.keys_for(session, keys.TOKEN), keys_repo.keys_for(session, keys.AUDIT)


def trusted_rows(
    rows: list[KeyRow], master_key: bytes, vetted: dict[_Mark, bool] | None = None
) -> list[KeyRow]:
    """``rows`` but those the vault did not make: a row is kept if its sealed private key opens
    with ``master_key`` (the seal binds the kid and the purpose) and is the key of its public
    JWK. ``vetted`` remembers rows already judged (a row is logged once)."""
    found = []
    for row in rows:
        mark = (row.kid, row.purpose, row.private_sealed, row.public_jwk)
        ok = None if vetted is None else vetted.get(mark)
        if ok is None:
            ok = _made_here(row, master_key)
            if vetted is not None:
                vetted[mark] = ok
            if not ok:
                log.error(
                    "stored %s key %s was not made by this vault (its private key does not "
                    "open with the master key as the key it publishes): not trusted",
                    str(row.purpose)[:20],
                    str(row.kid)[:60],
                )
        if ok:
            found.append(row)
    return found


def _made_here(row: KeyRow, master_key: bytes) -> bool:
    fields = (row.kid, row.purpose, row.private_sealed, row.public_jwk)
    if not all(isinstance(value, str) for value in fields):  # SQLite keeps a blob if given one
        return False
    try:
        pair = keys.open_private(
            master_key, kid=row.kid, purpose=row.purpose, sealed=row.private_sealed
        )
        kid, public = keys.public_key_from_jwk(json.loads(row.public_jwk))
    except (MasterKeyError, ValueError, TypeError, RecursionError):
        return False
    return kid == row.kid and keys.raw_public(public) == keys.raw_public(pair.public_key)


def trusted_audit_keys(db: Database, master_key: bytes) -> dict[str, Ed25519PublicKey]:
    """The audit keys this vault made, by kid (what verification may believe a checkpoint of)."""
    with db.read() as session:
        audit_rows = keys_repo.keys_for(session, keys.AUDIT)
    return _public(trusted_rows(audit_rows, master_key))


def _public(rows: list[KeyRow]) -> dict[str, Ed25519PublicKey]:
    return dict(keys.public_key_from_jwk(json.loads(r.public_jwk)) for r in rows)


def _jwks(rows: list[KeyRow]) -> dict[str, Any]:
    return {"keys": [json.loads(r.public_jwk) for r in rows]}


def load_keyset(
    db: Database, master_key: bytes, now: int, vetted: dict[_Mark, bool] | None = None
) -> KeySet:
    stored = _key_rows(db)
    active_kids = {
        purpose: tuple(str(row.kid) for row in rows if row.retired_at is None)
        for purpose, rows in zip((keys.TOKEN, keys.AUDIT), stored, strict=True)
    }
    token_rows, audit_rows = (trusted_rows(rows, master_key, vetted) for rows in stored)
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
        token_public=_public(token_published),
        audit_public=_public(audit_rows),
        active=active_kids,
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
        self._vetted: dict[_Mark, bool] = {}

    def reload(self) -> KeySet:
        now = int(self._clock.now().timestamp())
        keyset = load_keyset(self._db, self._master_key, now, self._vetted)
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
        """The token and audit key sets (JWKS) as the database holds them now, the keys this
        vault made only: public keys only. A key rotated in by any process is in them as soon
        as its rotation has committed, which is before any process signs with it."""
        token_rows, audit_rows = (
            trusted_rows(rows, self._master_key, self._vetted) for rows in _key_rows(self._db)
        )
        now = int(self._clock.now().timestamp())
        return _jwks(_published(token_rows, now)), _jwks(audit_rows)

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

    def signing_now(self, tx: Tx, purpose: str) -> KeyPair:
        """The key to sign with for ``purpose``, in a transaction holding the chain lock: the
        active keys are read there, and if they are not those this process loaded (a rotation
        committed since, by any process), the keys are loaded again first. If they still
        differ, the transaction itself changed them (a rotation earlier in the same batch, not
        committed, which a reload cannot see): the newest key it holds signs."""
        keyset = self.current()
        rows = keys_repo.active_rows(tx, purpose)
        active = tuple(str(row.kid) for row in rows)
        if active != keyset.active[purpose]:
            keyset = self.reload()
            if active != keyset.active[purpose]:
                return self._newest_of(rows, purpose)
        return keyset.token_signing if purpose == keys.TOKEN else keyset.audit_signing

    def _newest_of(self, rows: list[KeyRow], purpose: str) -> KeyPair:
        trusted = trusted_rows(rows, self._master_key, self._vetted)
        if not trusted:
            raise NotInitialized(f"no active {purpose} signing key: run 'dvault init'")
        newest = trusted[-1]
        return keys.open_private(
            self._master_key, kid=newest.kid, purpose=purpose, sealed=newest.private_sealed
        )

    def audit_now(self, tx: Tx) -> KeyPair:
        """``signing_now`` for the audit key (checkpoints, recorded scope tables)."""
        return self.signing_now(tx, keys.AUDIT)

    def audit_signing(self) -> KeyPair:
        return self.current().audit_signing

    def token_signing(self) -> KeyPair:
        return self.current().token_signing
