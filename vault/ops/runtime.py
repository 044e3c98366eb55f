"""Opening a vault: master key, database (migrated), keys (decrypted: a wrong master key fails
here, loudly), scopes, the checkpoint file and the appender. Used by the server and the CLI."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.exc import DBAPIError

from vault.audit.anchor import Anchor
from vault.audit.appender import Appender
from vault.audit.checkpoint_log import CheckpointLog
from vault.clock import Clock, SystemClock
from vault.config import Settings
from vault.crypto import envelope
from vault.crypto.master import parse_master_key, read_master_key_file
from vault.errors import ConfigError, CorruptEntry, LogRewritten, MasterKeyError, NotInitialized
from vault.ops.credentials import CredentialCache
from vault.ops.keyring import KeyManager, trusted_audit_keys
from vault.ops.tokens import VerifiedSignatures
from vault.policy.scopes import ScopeTable, load_table
from vault.storage import audit_repo, meta_repo, migrate
from vault.storage.engine import Database, no_such_table

log = logging.getLogger("vault")
CHECK_PLAINTEXT = b"dvault master key check v1"
CHECK_PURPOSE = "master-key-check"
CHECK_KID = "master"


def resolve_master_key(settings: Settings) -> bytes:
    if settings.master_key:
        return parse_master_key(settings.master_key, source="VAULT_MASTER_KEY")
    return read_master_key_file(settings.master_key_file)


def check_master_key(db: Database, master_key: bytes) -> None:
    with db.read() as session:
        sealed = meta_repo.get_meta(session, meta_repo.MASTER_KEY_CHECK)
    if sealed is None:
        raise NotInitialized("this vault is not initialized: run 'dvault init'")
    try:
        envelope.open_sealed(master_key, sealed, purpose=CHECK_PURPOSE, kid=CHECK_KID)
    except MasterKeyError:
        raise MasterKeyError(
            "the master key does not match this vault (wrong VAULT_MASTER_KEY or key file)"
        ) from None


def is_initialized(db: Database) -> bool:
    """Whether ``dvault init`` has run on this database (``False`` before any schema too)."""
    try:
        with db.read() as session:
            return meta_repo.get_meta(session, meta_repo.INITIALIZED_AT) is not None
    except DBAPIError as exc:
        if no_such_table(exc):
            return False  # no schema yet
        raise  # unreachable, unreadable, not a database: that, not "run init"


def check_configured_master_key(settings: Settings, db: Database) -> bytes | None:
    """The master key, if one is at hand, checked against this initialized vault: a wrong one
    fails loudly (``MasterKeyError``), also for commands that only read. ``None`` if there is
    none (no ``VAULT_MASTER_KEY`` and no key file): a reviewer with read access needs none. A
    ``VAULT_MASTER_KEY`` that is not a key, or a key file that is not one (or that others may
    read), is an error, not "none"."""
    if not settings.master_key and not os.path.lexists(settings.master_key_file):
        return None
    master_key = resolve_master_key(settings)
    check_master_key(db, master_key)
    return master_key


def open_database(settings: Settings) -> Database:
    """The database of an initialized vault, for reading (no master key needed, nothing
    created or migrated): what a reviewer with read access uses. A master key at hand must be
    the vault's (``check_configured_master_key``)."""
    db = Database(settings.database_url, create=False)
    if not is_initialized(db):
        db.dispose()
        raise NotInitialized("this vault is not initialized: run 'dvault init'")
    try:
        check_configured_master_key(settings, db)
    except BaseException:
        db.dispose()
        raise
    return db


@dataclass
class Vault:
    settings: Settings
    db: Database
    clock: Clock
    master_key: bytes
    keys: KeyManager
    scopes: ScopeTable
    appender: Appender
    checkpoint_log: CheckpointLog
    credentials: CredentialCache
    signatures: VerifiedSignatures

    def close(self) -> None:
        self.appender.stop()
        self.db.dispose()


def _anchored(db: Database, master_key: bytes, checkpoint_log: CheckpointLog) -> Anchor:
    """The checkpoint log caught up with the database's checkpoints, and the newest checkpoint
    the vault trusts as it opens (``vault.audit.anchor``): the newest in the checkpoint log
    that the vault signed, found before the catch-up (which copies only checkpoints the vault
    signed), or the database's if newer; and whether the log extends it. A log that does not
    is logged (critical) and refused every append, but the vault opens: its log can still be
    read, exported and verified."""
    anchor = Anchor(_trusted_keys(db, master_key))
    try:
        found, _other = checkpoint_log.read()
        anchor.trust_newest(found)
        with db.read() as session:
            stored = audit_repo.checkpoints_after(session, found[-1].seq if found else 0)
        copied, left_out = checkpoint_log.catch_up(stored, anchor.trusts)
        if left_out:
            log.error(
                "%d checkpoint(s) in the database no audit key of the vault signed: not "
                "copied to the checkpoint log",
                left_out,
            )
        if copied:
            log.warning("checkpoint log caught up with %d checkpoint(s)", copied)
    except OSError as exc:  # a directory, say: name the setting, not only the path
        raise ConfigError(
            f"VAULT_CHECKPOINT_LOG {checkpoint_log.path}: {exc.strerror or exc}"
        ) from None
    # refused: kept in ``anchor.refused``; a head that is no entry fails each batch as before
    with db.read() as session, contextlib.suppress(LogRewritten, CorruptEntry):
        anchor.check(session)
    anchor.adopted()  # the catch-up copied the database's checkpoints to the file already
    return anchor


def _trusted_keys(db: Database, master_key: bytes) -> Callable[[str], Ed25519PublicKey | None]:
    """The audit keys the vault made, by kid, loaded again once for each kid not known yet (a
    key rotated in by another process): the anchor's checks must never fail for want of one."""
    found = trusted_audit_keys(db, master_key)
    missed: set[str] = set()

    def lookup(kid: str) -> Ed25519PublicKey | None:
        if kid not in found and kid not in missed:
            found.update(trusted_audit_keys(db, master_key))
            if kid not in found and len(missed) < 10_000:
                missed.add(kid)
        return found.get(kid)

    return lookup


def open_vault(
    settings: Settings, *, clock: Clock | None = None, background: bool = False
) -> Vault:
    """Open an initialized vault. ``background`` starts the group-commit thread (the server)."""
    clock = clock or SystemClock()
    scopes = load_table(settings.scopes_file)
    master_key = resolve_master_key(settings)
    db = Database(settings.database_url)
    try:
        initialized = is_initialized(db)
        if initialized:  # a wrong key changes nothing, not even the schema
            check_master_key(db, master_key)
        migrate.upgrade(db)
        if not initialized:
            check_master_key(db, master_key)  # NotInitialized, unless init ran meanwhile
        keys = KeyManager(db, master_key, clock, refresh_seconds=settings.key_refresh_seconds)
        keys.reload()
        checkpoint_log = CheckpointLog(settings.checkpoint_log)
        anchor = _anchored(db, master_key, checkpoint_log)
    except BaseException:
        db.dispose()
        raise
    credentials = CredentialCache()
    appender = Appender(
        db,
        clock=clock,
        audit_key=keys.audit_now,
        checkpoint_every=settings.checkpoint_every,
        checkpoint_log=checkpoint_log,
        batch_max=settings.commit_batch_max,
        after_change=credentials.clear,
        anchor=anchor,
    )
    if background:
        appender.start()
    return Vault(
        settings=settings,
        db=db,
        clock=clock,
        master_key=master_key,
        keys=keys,
        scopes=scopes,
        appender=appender,
        checkpoint_log=checkpoint_log,
        credentials=credentials,
        signatures=VerifiedSignatures(),
    )
