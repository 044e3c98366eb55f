"""``dvault audit verify | export | tail``: need read access to the database only."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.checkpoint import Checkpoint, checkpoint_from_dict
from vault.audit.checkpoint_log import CheckpointLog, checkpoint_lines
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Report
from vault.cli.output import CliError, emit, emit_json, note
from vault.config import Settings
from vault.crypto.keys import public_keys_from_jwks
from vault.errors import MasterKeyError
from vault.ops import audit
from vault.ops.keyring import trusted_audit_keys
from vault.ops.runtime import open_database, resolve_master_key
from vault.ops.verify_parallel import helpers_for, helpers_for_file
from vault.policy.scopes import load_table
from vault.storage import audit_repo
from vault.storage.engine import Database


def _load_json(path: Path, what: str) -> object:
    try:
        return json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise CliError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CliError(f"{what} {path} is not readable JSON: {exc}") from None


def _trusted(path: Path | None) -> list[Checkpoint]:
    """``--checkpoint FILE``: one checkpoint (the JSON of ``GET /v1/audit/checkpoint``), or JSON
    lines of them (a copy of the checkpoint log, ``VAULT_CHECKPOINT_LOG``). Every line must be
    a checkpoint: this is what the reviewer trusts."""
    if path is None:
        return []
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise CliError(f"checkpoint file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"checkpoint file {path} is not readable: {exc}") from None
    try:
        return [checkpoint_from_dict(json.loads(text))]
    except (ValueError, RecursionError):
        pass  # not one JSON document: JSON lines, each a checkpoint
    found: list[Checkpoint] = []
    for number, parsed in checkpoint_lines(text.splitlines()):
        if not isinstance(parsed, Checkpoint):
            raise CliError(f"checkpoint file {path}, line {number}: {parsed}")
        found.append(parsed)
    if not found:
        raise CliError(f"checkpoint file {path} holds no checkpoint")
    return found


def _verify_file(
    path: Path,
    jwks_path: Path | None,
    trusted: list[Checkpoint],
    semantics: SemanticChecker | None,
    jobs: int | None,
) -> Report:
    if jwks_path is None:
        raise CliError(
            "--file needs --jwks AUDIT-KEYS.json (the vault's /.well-known/audit-keys.json)", 2
        )
    keys = _audit_keys(jwks_path)
    fd = _open_export(path)
    try:
        size = os.fstat(fd).st_size
        helpers = helpers_for_file(size, jobs, semantics=semantics is not None)
        return audit.verify_export(
            fd, keys.get, trusted=trusted, semantics=semantics, helpers=helpers
        )
    finally:
        os.close(fd)


def _open_export(path: Path) -> int:
    """The export, open for reading: a regular file, checked on what was opened (a name turned
    into a FIFO meanwhile is refused, not waited on). It is read at offsets, more than once."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CliError(f"export file {path} does not exist") from None
    except OSError as exc:
        raise CliError(f"export file {path} is not readable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CliError(f"export file {path} is not a regular file; save the export to one first")
    os.set_blocking(fd, True)
    return fd


def _report_violations(report: Report) -> None:
    for violation in report.semantic_errors:
        sys.stderr.write(
            f"dvault: semantic violation at seq {violation.seq} ({violation.rule}): "
            f"{violation.reason}\n"
        )
    more = report.semantic_total - len(report.semantic_errors)
    if more > 0:
        sys.stderr.write(f"dvault: ... and {more} more semantic violation(s)\n")


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    trusted = _trusted(args.checkpoint)
    semantics = (
        None if args.no_semantics else SemanticChecker(scopes=load_table(settings.scopes_file))
    )
    if args.file is not None:
        report = _verify_file(args.file, args.jwks, trusted, semantics, args.jobs)
    else:
        db = open_database(settings)
        try:
            report = audit.verify_database(
                db,
                trusted=trusted,
                semantics=semantics,
                helpers=_helpers(db, args.jobs, semantics=semantics is not None),
                checkpoint_log=CheckpointLog(settings.checkpoint_log),
                keys=_database_keys(settings, db, args.jwks),
            )
        finally:
            db.dispose()
    if args.json:
        emit_json(report.to_dict())
    elif report.ok:
        emit(f"ok: {report.entries} entries, head seq {report.head_seq} hash {report.head_hash}")
    _report_violations(report)
    if not report.ok:
        assert report.first_error is not None
        error = report.first_error
        sys.stderr.write(f"dvault: verification failed at seq {error.seq}: {error.reason}\n")
        return 1
    return 0


def _database_keys(
    settings: Settings, db: Database, jwks_path: Path | None
) -> Callable[[str], Ed25519PublicKey | None] | None:
    """The audit keys that checkpoints in the database are checked with: the reviewer's saved
    key set (``--jwks``); else, with the master key at hand, the keys this vault made; else
    (``None``) the keys stored in the database, which its writers could have added to."""
    if jwks_path is not None:
        return _audit_keys(jwks_path).get
    try:
        master_key = resolve_master_key(settings)  # open_database checked it against the vault
    except MasterKeyError as exc:
        note(
            "dvault: note: checkpoints are checked with the audit keys stored in the database, "
            f"and so are recorded scope tables (no master key: {exc.description}); give --jwks "
            "with the vault's audit-keys.json, kept where the database's writers cannot change "
            "it, to check them against keys you trust"
        )
        return None
    return audit.reloading(lambda: trusted_audit_keys(db, master_key))


def _audit_keys(jwks_path: Path) -> dict[str, Ed25519PublicKey]:
    try:
        return public_keys_from_jwks(_load_json(jwks_path, "audit key set"))
    except ValueError as exc:
        raise CliError(f"audit key set {jwks_path}: {exc}") from None


def _helpers(db: Database, jobs: int | None, *, semantics: bool) -> int:
    with db.read() as session:
        head = audit_repo.head(session)
    return helpers_for(head.seq, jobs, semantics=semantics)


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    try:
        if args.out is None:
            for chunk in audit.export_lines(db):
                sys.stdout.write(chunk)
            sys.stdout.flush()
        else:
            _write_whole(args.out, audit.export_lines(db))
            note(f"exported to {args.out}")
    finally:
        db.dispose()
    return 0


def _write_whole(path: Path, chunks: Iterator[str]) -> None:
    """``chunks`` into ``path``, which is either the whole export or left as it was: an export
    cut short (interrupted, killed, a row it cannot show) must never be a shorter log that
    verifies as whole, since its checkpoints come last. A regular file (or a new one) is written
    beside ``path`` and renamed onto it once complete and on disk; anything else (a FIFO,
    ``/dev/stdout``) is written as it goes."""
    if path.exists() and not path.is_file():
        with path.open("w", encoding="utf-8") as stream:
            for chunk in chunks:
                stream.write(chunk)
        return
    path = path.resolve() if path.is_symlink() else path  # the link's file is the one replaced
    before = path.stat() if path.exists() else None
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with open(fd, "w", encoding="utf-8") as handle:
            if before is not None:  # a file replaced keeps its mode and, if allowed, owner
                os.fchmod(fd, stat.S_IMODE(before.st_mode))
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, before.st_uid, before.st_gid)
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)  # the new name survives a crash too
    finally:
        os.close(directory)


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    """The last N entries, then (with --follow) new ones as they are appended."""
    db = open_database(settings)
    try:
        with db.read() as session:
            head = audit_repo.head(session)
        after = max(0, head.seq - args.lines)
        while True:
            found = audit_repo.query_entries(
                db, audit_repo.EntryFilter(after_seq=after, limit=1000)
            )
            for entry in found:
                emit(entry.to_line())
                after = entry.seq
            if not args.follow:
                return 0
            if not found:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        db.dispose()
