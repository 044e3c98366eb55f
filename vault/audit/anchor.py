"""Before a checkpoint is signed: the log still extends the newest checkpoint this process trusts.

A signed checkpoint vouches for the whole chain up to its head. Signed over a log that was
rewritten (an entry changed and every later hash recomputed, the database's own checkpoints of
the rewritten part deleted), it would vouch for the rewrite: a verification without the older
checkpoints, kept outside the database, would find nothing wrong. So before the appender signs,
under the chain lock, it walks the log from the newest checkpoint it trusts to the head it is
about to sign: the entry at that checkpoint's seq must still hold its hash, and every entry
after it must follow, with a ``data`` the vault could have written (an object's canonical JSON:
the hash covers the stored text, whatever it is, and a checkpoint vouches for entries as the
vault's own). The checkpoint trusted is the newest of: the last one this process signed; the
newest in the checkpoint log (outside the database) that the vault signed, found when the vault
opened, before the file is caught up with the database's checkpoints (only those the vault
signed are copied); and the database's newest, each only if an audit key the vault made signed
it. A newest checkpoint row in the database that no such key signed was put there by hand, and
is refused like a log that does not extend what was signed. The other processes' checkpoints a
process checked against go into its own checkpoint log too.

A log that no longer extends it is refused for good by this process (``LogRewritten``, a 503):
nothing more is appended to it, and nothing is signed over it, until an operator has looked
(``dvault audit verify``); while the checkpoint log holds the checkpoint the log contradicts,
a restart refuses it again. The walk is the entries since the trusted checkpoint (at most
``VAULT_CHECKPOINT_EVERY`` and a batch), once per checkpoint and once at each open.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.chain import GENESIS, ChainWalker, Head
from vault.audit.checkpoint import Checkpoint, verify_checkpoint
from vault.audit.entry import Entry
from vault.errors import (
    AuditError,
    ChainBroken,
    CheckpointMismatch,
    CheckpointSignatureInvalid,
    CorruptEntry,
    ForeignEntry,
    LogRewritten,
)
from vault.storage import audit_repo
from vault.storage.engine import Tx

log = logging.getLogger("vault.audit")
PAGE = 5000  # entries read at a time by the walk
KEEP = 20_000  # entries this process linked, remembered for the walk (a few checkpoints' worth)


class Anchor:
    """The newest signed checkpoint this process trusts (``trusted``), and the walk from it."""

    def __init__(self, lookup: Callable[[str], Ed25519PublicKey | None]) -> None:
        self._lookup = lookup  # the audit keys the vault made, by kid
        self.trusted: Checkpoint | None = None
        self.refused: LogRewritten | None = None  # once the log no longer extends it
        # Checkpoints of other processes trusted since the last look: for this process's
        # checkpoint log, which then vouches for them too (``adopted``).
        self._adopted: list[Checkpoint] = []
        # The entries this process linked since the checkpoint trusted (seq -> hash, at most
        # ``KEEP``): the walk need not check their data, which this process made canonical.
        self._composed: dict[int, str] = {}

    def linked(self, entries: Iterable[Entry]) -> None:
        """Entries this process composed (``chain.link`` of its own drafts). Kept even if their
        commit fails: a row holding one of these hashes can only be that very entry."""
        composed = self._composed
        for entry in entries:
            composed[entry.seq] = entry.hash
        while len(composed) > KEEP:  # another process signs every checkpoint: oldest first
            del composed[next(iter(composed))]

    def _trust(self, checkpoint: Checkpoint) -> None:
        self.trusted = checkpoint
        self._composed = {s: h for s, h in self._composed.items() if s > checkpoint.seq}

    def trusts(self, checkpoint: Checkpoint) -> bool:
        """Whether an audit key the vault made signed ``checkpoint``."""
        try:
            verify_checkpoint(checkpoint, self._lookup)
        except AuditError:
            return False
        return True

    def trust_newest(self, checkpoints: list[Checkpoint]) -> None:
        """Trust the newest of ``checkpoints`` (a checkpoint log's, in any order) that an audit
        key of the vault signed, if it is newer than the one trusted."""
        for checkpoint in sorted(checkpoints, key=lambda cp: cp.seq, reverse=True):
            if self.trusted is not None and checkpoint.seq <= self.trusted.seq:
                return
            if self.trusts(checkpoint):
                self._trust(checkpoint)
                return

    def signed(self, checkpoint: Checkpoint) -> None:
        """A checkpoint this process signed and committed."""
        if self.trusted is None or checkpoint.seq > self.trusted.seq:
            self._trust(checkpoint)

    def adopted(self) -> list[Checkpoint]:
        """The other processes' checkpoints trusted since the last call (oldest first)."""
        found, self._adopted = self._adopted, []
        return found

    def check(self, tx: Tx, head: Head | None = None) -> None:
        """Raise ``LogRewritten`` unless the log read in ``tx`` extends the trusted checkpoint,
        and the database's newest, up to ``head``: under the chain lock before signing at
        ``head``; or, without ``head``, up to the head as read now (after the newest
        checkpoint: at READ COMMITTED a head read first could be older than it)."""
        if self.refused is not None:
            raise self.refused
        stored = audit_repo.latest_checkpoint_row(tx)
        if head is None:
            head = audit_repo.head(tx)
        anchor = self.trusted
        try:
            newest = self._stored(stored)
            if newest is not None:
                anchor = newest
            walk(tx, anchor, head, self._composed)
        except (AuditError, CorruptEntry) as exc:
            self._refuse(anchor, exc)
        if anchor is not self.trusted and anchor is not None:
            self._trust(anchor)
            self._adopted.append(anchor)

    def _stored(self, row: object) -> Checkpoint | None:
        """The database's newest checkpoint, if newer than the one trusted. One that no audit
        key of the vault signed (or a row that is no checkpoint) was put there by hand:
        ``CheckpointSignatureInvalid`` (the vault's own are all signed)."""
        if row is None:
            return None
        checkpoint = audit_repo.checkpoint_of_row(row)
        if checkpoint is None:
            raise CheckpointSignatureInvalid(0, "the newest stored checkpoint is not one")
        if self.trusted is not None and checkpoint.seq <= self.trusted.seq:
            return None
        verify_checkpoint(checkpoint, self._lookup)
        return checkpoint

    def _refuse(self, anchor: Checkpoint | None, exc: Exception) -> None:
        seq = getattr(exc, "seq", None)
        if isinstance(exc, ForeignEntry):
            what = f"the audit log holds an entry the vault did not write (seq {seq})"
        else:
            what = "the audit log no longer extends its last signed checkpoint" + (
                "" if anchor is None else f" (seq {anchor.seq})"
            )
        self.refused = LogRewritten(
            f"{what}: nothing more is appended or signed; run dvault audit verify"
        )
        log.critical(
            "%s (at seq %s: %s): this process appends and signs nothing more",
            what,
            seq,
            getattr(exc, "reason", exc),
        )
        raise self.refused from None


def walk(
    tx: Tx, anchor: Checkpoint | None, head: Head, composed: Mapping[int, str] | None = None
) -> None:
    """Check, reading in ``tx``, that the log holds ``anchor`` and follows from it up to
    ``head`` (the whole log when there is no anchor), each entry's data as the vault writes it
    (but for the entries this process ``composed``, by seq); ``AuditError`` at the first bad
    seq."""
    start = GENESIS
    if anchor is not None:
        if anchor.seq > head.seq:
            raise CheckpointMismatch(
                head.seq + 1,
                f"log ends at seq {head.seq} but a signed checkpoint covers seq {anchor.seq}",
            )
        if audit_repo.hash_at(tx, anchor.seq) != anchor.hash:
            raise CheckpointMismatch(anchor.seq, "a signed checkpoint vouches for another hash")
        start = Head(anchor.seq, anchor.hash)
    walker = ChainWalker(start=start, composed=composed)
    after = start.seq
    while after < head.seq:
        rows = audit_repo.rows_between(tx, after, head.seq, PAGE)
        if not rows:
            break
        walker.feed_rows(rows)
        after = walker.head.seq
    if walker.head != head:
        raise ChainBroken(walker.head.seq + 1, f"the log's head is seq {head.seq}, not this")
