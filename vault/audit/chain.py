"""Linking entries into the chain and checking a chain: pure, shared by server, CLI, reviewer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256

from vault.audit.entry import (
    GENESIS_HASH,
    Draft,
    Entry,
    EntryRow,
    canonical_entry,
    data_is_canonical,
    entry_hash,
)
from vault.clock import parse_ts
from vault.errors import ChainBroken, CheckpointMismatch, ForeignEntry

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Head:
    """The last entry of a chain: its ``seq`` (0 for an empty log) and ``hash``."""

    seq: int
    hash: str


GENESIS = Head(0, GENESIS_HASH)


def link(
    head: Head, drafts: Sequence[Draft], ts: str, *, texts: Sequence[str] | None = None
) -> list[Entry]:
    """Give ``drafts`` the next seqs after ``head``, chain them, and hash them. ``texts``, when
    given, are the drafts' ``data_json()``, already computed by the caller."""
    entries: list[Entry] = []
    seq, prev = head.seq, head.hash
    for index, draft in enumerate(drafts):
        seq += 1
        data_json = draft.data_json() if texts is None else texts[index]
        digest = entry_hash(
            seq=seq,
            ts=ts,
            type=draft.type,
            actor=draft.actor,
            subject=draft.subject,
            data_json=data_json,
            prev=prev,
        )
        entries.append(
            Entry(
                seq=seq,
                ts=ts,
                type=draft.type,
                actor=draft.actor,
                subject=draft.subject,
                data_json=data_json,
                prev=prev,
                hash=digest,
            )
        )
        prev = digest
    return entries


def check_entry(entry: Entry, head: Head) -> Head:
    """Check that ``entry`` follows ``head``; return the new head or raise ``ChainBroken``."""
    row = entry.as_row()
    _check_row(row, head.seq, head.hash, None)
    return Head(entry.seq, entry.hash)


def _check_row(row: EntryRow, head_seq: int, head_hash: str, checked_ts: str | None) -> None:
    """Raise ``ChainBroken`` unless ``row`` follows the head ``(head_seq, head_hash)``.

    ``checked_ts`` is a timestamp already found canonical (the previous entry's): entries of
    one batch share their ``ts``, so its spelling is checked once per batch, not per entry.
    The hash is computed first and the checks that explain a mismatch run only on a mismatch;
    the reasons and their order are those of the checks one by one (a hash equal to a SHA-256
    hexdigest is 64 lowercase hex digits).
    """
    seq, ts, kind, actor, subject, data_json, prev, digest = row
    expected = head_seq + 1
    if seq != expected or type(seq) is not int:
        if type(seq) is not int:  # SQLite keeps any value in any column it was given
            raise ChainBroken(expected, "seq is not an integer")
        if seq <= head_seq:
            raise ChainBroken(expected, f"seq {seq} appears where {expected} should be")
        raise ChainBroken(expected, f"entry missing: the log jumps from {head_seq} to {seq}")
    if prev != head_hash:
        raise ChainBroken(seq, "prev is not the hash of the previous entry")
    computed: str | None = None
    if data_json.__class__ is str:  # a blob or a number would be spelled as something else
        try:
            computed = sha256(
                canonical_entry(seq, ts, kind, actor, subject, data_json, prev)
            ).hexdigest()
        except (UnicodeEncodeError, TypeError):  # a lone surrogate has no UTF-8 bytes; not text
            computed = None
    if computed is None or computed != digest:
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ChainBroken(seq, "hash is not 64 lowercase hex digits")
        if not_text(row):
            raise ChainBroken(seq, NOT_TEXT)
        if computed is None:
            raise ChainBroken(seq, "entry holds text that is not valid Unicode")
        raise ChainBroken(seq, "hash does not match the entry's contents")
    if not kind:
        raise ChainBroken(seq, "type is empty")
    if ts.__class__ is not str or ts != checked_ts:
        try:
            parse_ts(ts)
        except (ValueError, TypeError):
            raise ChainBroken(seq, "ts is not a canonical UTC timestamp") from None


NOT_TEXT = "entry holds a value of the wrong type (the database was changed outside the vault)"
FOREIGN = "its data is not the canonical JSON of an object: the vault did not write this entry"


def not_text(row: EntryRow) -> bool:
    """Whether a stored row holds a value of a type no entry has: SQLite keeps a number or a
    blob in a text column if it is given one, and only a hand-edited database holds one."""
    seq, ts, kind, actor, subject, data_json, prev, digest = row
    texts = (ts, kind, data_json, prev, digest)
    return (
        type(seq) is not int
        or not all(isinstance(value, str) for value in texts)
        or not all(value is None or isinstance(value, str) for value in (actor, subject))
    )


class ChainWalker:
    """Incremental chain check: ``feed`` entries in order, then ``finish``.

    ``anchors`` maps a seq to hashes that signed checkpoints vouch for at that seq; an entry whose
    hash differs raises ``CheckpointMismatch`` (this catches a rewrite that recomputed every later
    hash). An anchor beyond the end of the log is a truncated tail.

    The hash covers ``data`` as it is stored, whatever the text. Past the newest anchor, where no
    signature pins the entries, each ``data`` must also be what the vault writes there, an
    object's canonical JSON (``ForeignEntry`` otherwise): the vault's own walk before it signs
    a checkpoint (``vault.audit.anchor``, no anchors: every entry it signs over) refuses the
    rest, so the entries a checkpoint covers were checked when it was signed (by a vault that
    makes this check: older ones did not).
    """

    def __init__(
        self,
        *,
        start: Head = GENESIS,
        anchors: Mapping[int, Iterable[str]] | None = None,
        composed: Mapping[int, str] | None = None,
    ) -> None:
        self._seq, self._hash = start.seq, start.hash
        self._ts: str | None = None  # the last timestamp found canonical
        self.count = 0
        self._anchors = anchors or {}
        self._newest = max(self._anchors, default=0)  # entries after it have their data checked
        # Hashes by seq of entries the caller composed itself from data it made canonical: an
        # entry holding one is that entry (the hash covers its bytes), so its data is not
        # checked again (the vault's own walk before it signs; ``vault.audit.anchor``).
        self._composed = composed or {}

    @property
    def head(self) -> Head:
        return Head(self._seq, self._hash)

    def feed(self, entry: Entry) -> Head:
        self.feed_row(entry.as_row())
        return self.head

    def feed_row(self, row: EntryRow) -> None:
        """``feed`` for a stored row: the bulk path (no ``Entry``, no ``Head`` per entry)."""
        _check_row(row, self._seq, self._hash, self._ts)
        if (
            row[0] > self._newest
            and self._composed.get(row[0]) != row[7]
            and not data_is_canonical(row[5])
        ):
            raise ForeignEntry(row[0], FOREIGN)
        seq = self._seq = row[0]
        digest = self._hash = row[7]
        self._ts = row[1]
        self.count += 1
        for vouched in self._anchors.get(seq, ()):
            if vouched != digest:
                raise CheckpointMismatch(seq, "a signed checkpoint vouches for another hash")

    def feed_rows(self, rows: Iterable[EntryRow]) -> None:
        """``feed_row`` for each of ``rows``, in one loop: the bulk path of a walk that checks
        nothing else per row. An entry that is not plainly the next one (a seq, prev, hash or
        ts that is not the usual) goes through ``feed_row``, so every check and every reason
        is the same; only the usual case is done inline."""
        seq_, hash_, ts_ = self._seq, self._hash, self._ts
        anchors, newest, composed = self._anchors, self._newest, self._composed
        count = 0
        try:
            for row in rows:
                seq, ts, kind, actor, subject, data_json, prev, digest = row
                if (
                    seq == seq_ + 1
                    and type(seq) is int
                    and prev == hash_
                    and ts == ts_
                    and ts_ is not None
                    and kind
                    and data_json.__class__ is str
                ):
                    try:
                        computed = sha256(
                            canonical_entry(seq, ts, kind, actor, subject, data_json, prev)
                        ).hexdigest()
                    except (UnicodeEncodeError, TypeError):
                        computed = None
                    if (
                        computed is not None
                        and computed == digest
                        and (
                            seq <= newest
                            or composed.get(seq) == digest
                            or data_is_canonical(data_json)
                        )
                    ):
                        seq_, hash_ = seq, digest
                        count += 1
                        if seq in anchors:
                            self._seq, self._hash, self.count = seq_, hash_, self.count + count
                            count = 0
                            for vouched in anchors[seq]:
                                if vouched != digest:
                                    raise CheckpointMismatch(
                                        seq, "a signed checkpoint vouches for another hash"
                                    )
                        continue
                self._seq, self._hash, self._ts = seq_, hash_, ts_
                self.count += count
                count = 0
                self.feed_row(row)  # raises, or accepts it (a new ts, say)
                seq_, hash_, ts_ = self._seq, self._hash, self._ts
        finally:
            if count:
                self._seq, self._hash, self._ts = seq_, hash_, ts_
                self.count += count

    def finish(self) -> Head:
        beyond = [seq for seq in self._anchors if seq > self._seq]
        if beyond:
            raise CheckpointMismatch(
                self._seq + 1,
                f"log ends at seq {self._seq} but a signed checkpoint covers seq "
                f"{max(beyond)}: entries were removed from the tail",
            )
        return self.head


def verify_chain(
    entries: Iterable[Entry],
    *,
    start: Head = GENESIS,
    anchors: Mapping[int, Iterable[str]] | None = None,
) -> Head:
    """Walk ``entries`` in order from ``start``; return the head or raise at the first bad seq."""
    walker = ChainWalker(start=start, anchors=anchors)
    for entry in entries:
        walker.feed(entry)
    return walker.finish()
