"""``dvault init``: master key, schema, signing and audit keys, the first owner. Once only."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session

from vault.audit.appender import Appender, JobContext
from vault.audit.checkpoint_log import CheckpointLog
from vault.clock import Clock, SystemClock, format_ts
from vault.config import Settings, make_directory
from vault.crypto import envelope, keys
from vault.crypto.master import generate_master_key, shown_key_path, write_master_key_file
from vault.domain import OWNER
from vault.errors import AlreadyInitialized, MasterKeyError
from vault.ops import principals
from vault.ops.keys import create_key
from vault.ops.runtime import (
    CHECK_KID,
    CHECK_PLAINTEXT,
    CHECK_PURPOSE,
    check_master_key,
    open_vault,
    resolve_master_key,
)
from vault.policy.scopes import load_table
from vault.storage import audit_repo, meta_repo, migrate
from vault.storage.engine import Database

log = logging.getLogger("vault")


@dataclass(frozen=True, slots=True)
class InitResult:
    owner_id: str
    credential_id: str
    credential: str  # shown once
    master_key_file: Path | None  # set when init created it
    token_kid: str
    audit_kid: str
    previous_checkpoint_log: Path | None = None  # where another vault's checkpoint log went


def _master_key(settings: Settings) -> tuple[bytes, Path | None]:
    if settings.master_key or settings.master_key_file.exists():
        return resolve_master_key(settings), None
    shown = shown_key_path(settings.master_key_file)
    if shown != str(settings.master_key_file):  # a key put where its file is named
        raise MasterKeyError(f"VAULT_MASTER_KEY_FILE is {shown}; no key file was made")
    key = generate_master_key()
    write_master_key_file(settings.master_key_file, key)
    return key, settings.master_key_file


def _seals(db: Database, master_key: bytes) -> bool:
    """Whether the initialized vault in ``db`` is sealed with ``master_key``; also True if that
    cannot be read (a key file is never removed on a guess)."""
    try:
        check_master_key(db, master_key)
    except MasterKeyError:
        return False
    except Exception:
        log.warning("whether the vault is sealed with this home's new master key is unknown")
    return True


def init_vault(settings: Settings, *, clock: Clock | None = None) -> InitResult:
    clock = clock or SystemClock()
    make_directory(settings.home)
    db = Database(settings.database_url)
    try:
        migrate.upgrade(db)
        with db.read() as session:
            if meta_repo.get_meta(session, meta_repo.INITIALIZED_AT) is not None:
                raise AlreadyInitialized("this vault is already initialized; init runs once")
        master_key, created = _master_key(settings)
        scopes = load_table(settings.scopes_file)
        owner_job = principals.create_job(
            name="owner",
            roles=[OWNER],
            policy=None,
            actor=None,
            known_scopes=scopes.names,
            max_ttl=settings.max_ttl,
        )

        def job(session: Session, ctx: JobContext) -> tuple[principals.NewCredential, str, str]:
            # Re-checked under the chain lock: two concurrent inits cannot both succeed.
            if meta_repo.get_meta(session, meta_repo.INITIALIZED_AT) is not None:
                raise AlreadyInitialized("this vault is already initialized; init runs once")
            check = envelope.seal(master_key, CHECK_PLAINTEXT, purpose=CHECK_PURPOSE, kid=CHECK_KID)
            meta_repo.set_meta(session, meta_repo.MASTER_KEY_CHECK, check)
            meta_repo.set_meta(session, meta_repo.INITIALIZED_AT, format_ts(ctx.now))
            token_kid = create_key(session, ctx, master_key, keys.TOKEN)
            audit_kid = create_key(session, ctx, master_key, keys.AUDIT)
            return owner_job(session, ctx), token_kid, audit_kid

        appender = Appender(
            db,
            clock=clock,
            audit_key=lambda _tx: _no_checkpoint_yet(),
            checkpoint_every=2**62,
            checkpoint_log=CheckpointLog(settings.checkpoint_log),
        )
        try:
            owner, token_kid, audit_kid = appender.run(job)
        except AlreadyInitialized:
            # Another init won the race. The key file made here is removed only if the vault
            # is not sealed with it: left behind, it would make this home fail later with "the
            # master key does not match"; but an init that shared this home may have found
            # the file and won with its key.
            if created is not None and not _seals(db, master_key):
                created.unlink(missing_ok=True)
            raise
        with db.read() as session:
            head = audit_repo.head(session)
    finally:
        db.dispose()
    aside = _set_aside(settings.checkpoint_log, clock)
    if head.seq >= settings.checkpoint_every:
        _sign_init(settings, clock)
    return InitResult(
        owner_id=owner.principal.id,
        credential_id=owner.credential_id,
        credential=owner.credential,
        master_key_file=created,
        token_kid=token_kid,
        audit_kid=audit_kid,
        previous_checkpoint_log=aside,
    )


def _sign_init(settings: Settings, clock: Clock) -> None:
    """init's entries passed a multiple of VAULT_CHECKPOINT_EVERY, which init could not sign
    (the audit key is made in its own transaction, and another vault's checkpoint log had to be
    set aside first): signed now, so that no entry waits longer than that. The vault is made by
    then and its owner credential not yet shown: a failure here is a warning, never a failed
    init (the next checkpoint, made or asked for, covers these entries)."""
    try:
        vault = open_vault(settings, clock=clock)
        try:
            vault.appender.checkpoint_now()
        finally:
            vault.close()
    except Exception as exc:
        log.warning("init's entries are not signed by a checkpoint yet: %s", exc)


def _set_aside(path: Path, clock: Clock) -> Path | None:
    """A checkpoint log that holds lines when a new vault is initialized is another vault's (a
    database replaced, or moved from SQLite to PostgreSQL, under the same ``VAULT_HOME``): its
    checkpoints are signed by keys this vault does not have, and verification reads that file.
    It is renamed, never deleted; the new name is returned."""
    try:
        if path.stat().st_size == 0:
            return None
    except FileNotFoundError:
        return None
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    aside = path.with_name(f"{path.name}.{stamp}.previous")
    path.rename(aside)
    return aside


def _no_checkpoint_yet() -> keys.KeyPair:
    raise RuntimeError("init makes no checkpoint")
