"""Reading the audit log: streaming export and whole-log verification.

These need only read access to the database and the public audit keys stored there: a reviewer
without the master key can run them (``dvault audit export``, ``dvault audit verify``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.chain import Head
from vault.audit.checkpoint import Checkpoint
from vault.audit.checkpoint_log import CheckpointLog
from vault.audit.entry import entry_line
from vault.audit.export import checkpoint_line, read_checkpoints, read_rows
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Failure, Report, semantic_failure, verify_rows
from vault.crypto.keys import AUDIT, public_key_from_jwk
from vault.ops import export_ranges
from vault.ops.verify_parallel import verify_file_in_ranges, verify_in_ranges
from vault.storage import audit_repo, keys_repo
from vault.storage.engine import Database

log = logging.getLogger("vault.audit")
MAX_RELOADS = 16  # loads of the audit keys for unknown kids, per verification


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Checkpoints read *before* the head: each is at or below the head unless entries were
    removed from the tail (which verification reports), and a growing log is read to a fixed
    end."""

    checkpoints: list[Checkpoint]
    head_seq: int
    head_hash: str


def snapshot(db: Database) -> Snapshot:
    with db.read() as session:
        stored = audit_repo.checkpoints(session)
    with db.read() as session:
        head = audit_repo.head(session)
    return Snapshot(stored, head.seq, head.hash)


def export_lines(db: Database, *, chunk: int = 1000) -> Iterator[str]:
    """NDJSON: every entry in order, then the checkpoints; yields ~``chunk`` lines at a time."""
    snap = snapshot(db)
    lines: list[str] = []
    for row in audit_repo.stream_rows(db, upto_seq=snap.head_seq):
        lines.append(entry_line(row))
        if len(lines) >= chunk:
            yield "\n".join(lines) + "\n"
            lines.clear()
    lines.extend(checkpoint_line(cp) for cp in snap.checkpoints)
    if lines:
        yield "\n".join(lines) + "\n"


def audit_public_keys(db: Database) -> Callable[[str], Ed25519PublicKey | None]:
    """The audit keys as the database holds them, unvetted: what a reviewer without the master
    key has (``keyring.trusted_audit_keys`` is what the vault made; ``--jwks``, what the
    reviewer saved). A row that is not a public key at all is left out, with a warning."""
    return reloading(lambda: _stored_audit_keys(db))


def reloading(
    load: Callable[[], dict[str, Ed25519PublicKey]],
) -> Callable[[str], Ed25519PublicKey | None]:
    """A lookup of ``load()``'s keys that loads them again, once per kid, for a kid it does not
    know: an audit key rotated in (and a checkpoint signed with it) after the first load. At
    most ``MAX_RELOADS`` times: a log full of made-up kids must not reload the keys at each."""
    found = load()
    missed: set[str] = set()

    def lookup(kid: str) -> Ed25519PublicKey | None:
        if kid not in found and kid not in missed and len(missed) < MAX_RELOADS:
            missed.add(kid)
            found.update(load())
        return found.get(kid)

    return lookup


def _stored_audit_keys(db: Database) -> dict[str, Ed25519PublicKey]:
    with db.read() as session:
        rows = keys_repo.keys_for(session, AUDIT)
    found: dict[str, Ed25519PublicKey] = {}
    for row in rows:
        try:
            kid, public_key = public_key_from_jwk(json.loads(row.public_jwk))
        except (ValueError, TypeError, RecursionError) as exc:
            log.warning("stored audit key %.60r left out: %s", row.kid, exc)
            continue
        found[kid] = public_key
    return found


def verify_database(
    db: Database,
    *,
    trusted: list[Checkpoint] | None = None,
    semantics: SemanticChecker | None = None,
    helpers: int = 0,
    checkpoint_log: CheckpointLog | None = None,
    keys: Callable[[str], Ed25519PublicKey | None] | None = None,
) -> Report:
    """Verify the stored log; with ``semantics`` (a fresh checker) its meaning too. With
    ``helpers`` > 0, a sound log's chain is walked by that many processes side by side
    (``verify_parallel``) while this one checks the meaning; the report is the same.

    Checkpoints are believed if signed by one of ``keys``: the audit keys the caller trusts
    (the vault's own, vetted with the master key; or a reviewer's saved ``audit-keys.json``).
    Without them, the keys stored in the database are used, which whoever can write the
    database could have added to.

    With ``checkpoint_log`` (the file outside the database), its checkpoints count as
    ``trusted`` ones too: entries removed from the tail together with the checkpoint rows that
    covered them are still caught by the file's copy. The file is read before the log, so every
    checkpoint in it was committed before the head that is read.

    The stored signing keys are checked against the log too: each must have the ``key.created``
    entry that recorded it. A key added to the database by hand, or a log emptied or cut back
    before the keys' creation, fails."""
    logged = _logged(checkpoint_log)
    with db.read() as session:  # before the head: each key's key.created entry is below it
        stored_keys = keys_repo.all_keys(session)
    snap = snapshot(db)
    stored = set(snap.checkpoints)
    trusted = [*(trusted or []), *(cp for cp in logged if cp not in stored)]
    lookup = keys if keys is not None else audit_public_keys(db)
    checker = None if semantics is None else semantics.keyed(lookup)
    report = _walked(db, snap, trusted, checker, helpers, lookup)
    # Rows the walk never read: the log is not what the walk saw. That is the chain's failure,
    # ahead of any semantic one.
    stray = audit_repo.stray_row(db, snap.head_seq)
    if stray is not None:
        value, reason = stray
        report = _failed(report, value if type(value) is int else snap.head_seq + 1, reason)
    unrecorded = _unrecorded_key(db, stored_keys, snap.head_seq)
    if unrecorded is not None:
        report = _failed(report, snap.head_seq + 1, unrecorded)
    return report


def _failed(report: Report, seq: int, reason: str) -> Report:
    """``report`` with a failure of the stored log at ``seq``: first if it comes first, or if
    what was first is a semantic violation (the log is not even what the walk saw)."""
    first = report.first_error
    semantic = report.semantic_errors and first == semantic_failure(report.semantic_errors[0])
    if first is None or semantic or seq <= first.seq:
        first = Failure(seq, reason)
    return dataclasses.replace(report, ok=False, first_error=first)


def _unrecorded_key(db: Database, stored: list[tuple[str, str]], head_seq: int) -> str | None:
    """What is wrong if one of the ``stored`` signing keys (read before the head: a key rotated
    in since then is not among them) has no ``key.created`` entry up to ``head_seq``."""
    recorded = audit_repo.recorded_kids(db, head_seq)
    for kid, purpose in stored:
        if kid not in recorded:
            return (
                f"signing key {kid[:60]!r} ({purpose[:20]}) is stored, but no key.created entry "
                f"up to seq {head_seq} records it: it was not made through the vault"
            )
    return None


def export_file_lines(fd: int) -> Iterator[str]:
    """The lines of an open export file, each decoded on its own: a line that is not UTF-8
    becomes one the reader reports as malformed, at its own line number (a text-mode read would
    fail at the start of the block holding it)."""
    with export_ranges.reader(fd) as handle:
        for line in handle:
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                yield "\x00 not UTF-8\n"


def verify_export(
    fd: int,
    lookup: Callable[[str], Ed25519PublicKey | None],
    *,
    trusted: list[Checkpoint],
    semantics: SemanticChecker | None = None,
    helpers: int = 0,
) -> Report:
    """Verify the export file open as ``fd`` (``dvault audit verify --file``; a regular file,
    read at offsets) with the audit keys of ``lookup``. Every pass and every helper reads that
    open file, whatever its name points to meanwhile: in two passes over its lines (checkpoints,
    then entries), or, with ``helpers`` > 0, in byte ranges side by side (``verify_parallel``),
    which gives the same report for a sound file and leaves any other to the two passes."""
    semantics = None if semantics is None else semantics.keyed(lookup)
    if helpers > 0:
        found = verify_file_in_ranges(
            fd, lookup, trusted=trusted, semantics=semantics, helpers=helpers
        )
        if found is not None:
            return found
    found = verify_rows(
        read_rows(export_file_lines(fd)),
        read_checkpoints(export_file_lines(fd)),
        lookup,
        trusted=trusted,
        semantics=semantics,
    )
    if found.ok and found.entries == 0:
        # No vault's log is empty (init writes its first entries): an empty file is a download
        # that failed, or a log cut whole, never one to call verified.
        return dataclasses.replace(found, ok=False, first_error=Failure(1, NO_ENTRIES))
    return found


NO_ENTRIES = "the export holds no entries; a vault's log starts with the entries of its init"


def _logged(checkpoint_log: CheckpointLog | None) -> list[Checkpoint]:
    """The checkpoints of the file outside the database; a line that is not one (torn by a
    crash in mid-append, or edited) is left out, and so is a file that cannot be read, with a
    warning: that file is the operator's copy, and the database's own checkpoints are verified
    whatever it holds."""
    if checkpoint_log is None:
        return []
    try:
        found, other = checkpoint_log.read()
    except OSError as exc:
        log.warning("checkpoint log %s not read: %s", checkpoint_log.path, exc.strerror or exc)
        return []
    if other:
        log.warning(
            "%d line(s) of the checkpoint log %s are not checkpoints; left out",
            other,
            checkpoint_log.path,
        )
    return found


def _walked(
    db: Database,
    snap: Snapshot,
    trusted: list[Checkpoint],
    semantics: SemanticChecker | None,
    helpers: int,
    lookup: Callable[[str], Ed25519PublicKey | None],
) -> Report:
    if helpers > 0:
        found = verify_in_ranges(
            db,
            snap.checkpoints,
            Head(snap.head_seq, snap.head_hash),
            lookup,
            trusted=trusted,
            semantics=semantics,
            helpers=helpers,
        )
        if found is not None:
            return found
    return verify_rows(
        ((row, None) for row in audit_repo.stream_rows(db, upto_seq=snap.head_seq)),
        snap.checkpoints,
        lookup,
        trusted=trusted,
        semantics=semantics,
    )
