"""``dvault init | migrate | principals | subjects | keys``: direct on the database, audited.

These run the same jobs as the HTTP API, through an appender in this process; the actor is
recorded as null (an operator with the database and the master key), with the chain lock held.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from vault.cli.output import CliError, emit, emit_json, note
from vault.config import Settings
from vault.crypto.canonical import DuplicateMember, refuse_constant, unique_members
from vault.ops import principals, subjects
from vault.ops.keys import rotate_job
from vault.ops.runtime import check_configured_master_key, is_initialized, open_database, open_vault
from vault.ops.setup import init_vault
from vault.storage import migrate
from vault.storage.engine import Database


def cmd_init(settings: Settings, args: argparse.Namespace) -> int:
    result = init_vault(settings)
    if result.previous_checkpoint_log is not None:
        note(
            f"the checkpoint log {settings.checkpoint_log} held another vault's checkpoints: "
            f"moved to {result.previous_checkpoint_log}"
        )
    if args.json:
        emit_json(
            {
                "owner_id": result.owner_id,
                "credential_id": result.credential_id,
                "credential": result.credential,
                "master_key_file": None
                if result.master_key_file is None
                else str(result.master_key_file),
                "token_kid": result.token_kid,
                "audit_kid": result.audit_kid,
                "home": str(settings.home),
            }
        )
        return 0
    note(f"vault initialized in {settings.home}")
    if result.master_key_file is not None:
        note(
            f"created master key file {result.master_key_file} (mode 0600): back it up; "
            "without it the vault's keys cannot be opened"
        )
    note(f"owner principal: {result.owner_id}")
    note("owner credential (shown once, store it now):")
    emit(result.credential)
    return 0


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    db = Database(settings.database_url)
    try:
        if is_initialized(db):  # a master key at hand must be this vault's, here too
            check_configured_master_key(settings, db)
        migrate.upgrade(db)
        note(f"database at revision {migrate.current_revision(db)}")
    finally:
        db.dispose()
    return 0


def _policy(text: str | None) -> Any:
    if text is None:
        return None
    try:  # as the API reads it: a member named twice, NaN or Infinity is no policy
        value = json.loads(text, object_pairs_hook=unique_members, parse_constant=refuse_constant)
    except DuplicateMember:
        raise CliError("--policy names a member more than once", 2) from None
    except (ValueError, RecursionError):
        raise CliError("--policy must be a JSON object", 2) from None
    if not isinstance(value, dict):
        raise CliError("--policy must be a JSON object", 2)
    return value


def cmd_principals_create(settings: Settings, args: argparse.Namespace) -> int:
    vault = open_vault(settings)
    try:
        job = principals.create_job(
            name=args.name,
            roles=args.role,
            policy=_policy(args.policy),
            actor=None,
            known_scopes=vault.scopes.names,
            max_ttl=settings.max_ttl,
        )
        new = vault.appender.run(job)
    finally:
        vault.close()
    if args.json:
        emit_json(
            {
                **new.principal.to_public(),
                "credential_id": new.credential_id,
                "credential": new.credential,
            }
        )
    else:
        note(f"principal {new.principal.id} ({', '.join(new.principal.roles)})")
        note("credential (shown once, store it now):")
        emit(new.credential)
    return 0


def cmd_principals_list(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    try:
        with db.read() as session:
            found = [p.to_public() for p in principals.list_all(session)]
    finally:
        db.dispose()
    if args.json:
        emit_json({"principals": found})
        return 0
    for p in found:
        state = "disabled" if p["disabled"] else "enabled"
        emit(f"{p['id']}  {p['name']}  {','.join(p['roles'])}  {state}")
    return 0


def cmd_subjects_put(settings: Settings, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"email": args.email, "role": args.role, "active": not args.inactive}
    if args.name:
        body["name"] = args.name
    subject = subjects.parse_subject(args.id, body)
    vault = open_vault(settings)
    try:
        stored, outcome = vault.appender.run(subjects.upsert_job(subject, actor=None))
    finally:
        vault.close()
    emit_json({**stored.to_public(), "outcome": outcome})
    return 0


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    vault = open_vault(settings)
    try:
        job = rotate_job(
            vault.master_key,
            args.purpose,
            actor=None,
            max_ttl=settings.max_ttl,
            leeway=settings.leeway_seconds,
        )
        result = vault.appender.run(job)
    finally:
        vault.close()
    emit_json(result)
    return 0
