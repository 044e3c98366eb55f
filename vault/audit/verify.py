"""Whole-log verification: the chain, the signed checkpoints, and a reviewer's saved checkpoint.

The same function serves ``GET /v1/audit/verify``, ``dvault audit verify`` on the database, and
``dvault audit verify --file`` on an export; it streams the entries (memory stays flat) and stops
at the first bad seq. Given a ``SemanticChecker``, the same pass also checks what the log means
(``vault.audit.semantics``): a log whose hashes hold but whose story is impossible fails too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.chain import ChainWalker, Head
from vault.audit.checkpoint import Checkpoint, verify_checkpoint
from vault.audit.entry import Entry, EntryRow
from vault.audit.semantics import SemanticChecker, Violation
from vault.errors import AuditError, ChainBroken, CheckpointSignatureInvalid, MalformedExport


@dataclass(frozen=True, slots=True)
class Failure:
    seq: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    checkpoints_ok: bool
    first_error: Failure | None
    # The first violations of the log's meaning (seq order) and how many there were in all.
    semantic_errors: tuple[Violation, ...] = ()
    semantic_total: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The pinned shape (SPEC §6); ``semantic_errors`` (and ``semantic_errors_total``) are
        added only when the log's meaning is broken, so a sound log's report stays as pinned."""
        report: dict[str, Any] = {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "checkpoints_ok": self.checkpoints_ok,
            "first_error": self.first_error.to_dict() if self.first_error else None,
        }
        if self.semantic_errors:
            report["semantic_errors"] = [v.to_dict() for v in self.semantic_errors]
            report["semantic_errors_total"] = self.semantic_total
        return report


# A row, and its ``data`` already parsed when the reader had to parse it anyway (else ``None``).
ParsedRow: TypeAlias = tuple[EntryRow, Any]


def semantic_failure(violation: Violation) -> Failure:
    return Failure(violation.seq, f"log meaning broken ({violation.rule}): {violation.reason}")


def verify_log(
    entries: Iterable[Entry],
    checkpoints: Iterable[Checkpoint],
    lookup: Callable[[str], Ed25519PublicKey | None],
    *,
    trusted: Iterable[Checkpoint] = (),
    semantics: SemanticChecker | None = None,
) -> Report:
    """``verify_rows`` over ``Entry`` objects."""
    return verify_rows(
        ((entry.as_row(), None) for entry in entries),
        checkpoints,
        lookup,
        trusted=trusted,
        semantics=semantics,
    )


def verify_rows(
    rows: Iterable[ParsedRow],
    checkpoints: Iterable[Checkpoint],
    lookup: Callable[[str], Ed25519PublicKey | None],
    *,
    trusted: Iterable[Checkpoint] = (),
    semantics: SemanticChecker | None = None,
) -> Report:
    """Verify everything; never raises for a bad log (the report says what is wrong).

    ``rows`` are ``(row, data)`` pairs in log order: ``data`` is the row's data member parsed,
    or ``None`` to let the semantic checker parse it when it needs it.

    With ``semantics`` (a fresh checker), each entry the chain accepts is also checked for
    meaning. A violation makes the report not ok; ``first_error`` names the chain's or a
    checkpoint's failure when there is one, else the first violation (smallest seq).
    """
    anchors, failures = vouched(checkpoints, trusted, lookup)
    checkpoints_ok = not failures
    walker = ChainWalker(anchors=anchors)
    try:
        if semantics is None:
            walker.feed_rows(row for row, _ in rows)
        else:
            walker.feed_rows(_meant(rows, semantics.feed_row))
        walker.finish()
    except ChainBroken as exc:
        failures.append(Failure(exc.seq, exc.reason))
        if exc.code == "checkpoint_mismatch":
            checkpoints_ok = False
    except MalformedExport as exc:
        failures.append(Failure(walker.head.seq + 1, str(exc)))
    except AuditError as exc:  # any other audit refusal still names where the walk stopped
        failures.append(Failure(walker.head.seq + 1, exc.description))

    return report(walker.count, walker.head, failures, checkpoints_ok, semantics)


def _meant(
    rows: Iterable[ParsedRow], meaning: Callable[[EntryRow, Any], None]
) -> Iterator[EntryRow]:
    """The rows for the chain walker; each is checked for meaning once the walker has accepted
    it, that is, when the walker asks for the next one (or for the end). A row the walker
    refuses is never asked past, so its meaning is not checked, as in a walk row by row."""
    for row, data in rows:
        yield row
        meaning(row, data)


def vouched(
    checkpoints: Iterable[Checkpoint],
    trusted: Iterable[Checkpoint],
    lookup: Callable[[str], Ed25519PublicKey | None],
) -> tuple[dict[int, list[str]], list[Failure]]:
    """The hashes that checkpoints with a valid signature vouch for, by seq, and a failure for
    each checkpoint whose signature does not verify."""
    failures: list[Failure] = []
    anchors: dict[int, list[str]] = defaultdict(list)
    for checkpoint in [*checkpoints, *trusted]:
        try:
            verify_checkpoint(checkpoint, lookup)
        except CheckpointSignatureInvalid as exc:
            failures.append(Failure(exc.seq, str(exc)))
            continue
        anchors[checkpoint.seq].append(checkpoint.hash)
    return dict(anchors), failures


def report(
    entries: int,
    head: Head,
    failures: list[Failure],
    checkpoints_ok: bool,
    semantics: SemanticChecker | None,
) -> Report:
    """The report of a walk that accepted ``entries`` up to ``head`` and found ``failures``."""
    violations = semantics.finish() if semantics is not None else []
    first = min(failures, key=lambda failure: failure.seq) if failures else None
    if first is None and violations:
        first = semantic_failure(violations[0])
    return Report(
        ok=first is None,
        entries=entries,
        head_seq=head.seq,
        head_hash=head.hash,
        checkpoints_ok=checkpoints_ok,
        first_error=first,
        semantic_errors=tuple(violations),
        semantic_total=semantics.total if semantics is not None else 0,
    )
