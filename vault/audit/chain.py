"""Linking entries into the chain and checking a chain: pure, shared by server, CLI, reviewer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vault.audit.entry import GENESIS_HASH, Draft, Entry, entry_hash
from vault.clock import parse_ts
from vault.errors import ChainBroken, CheckpointMismatch

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
    expected = head.seq + 1
    if entry.seq != expected:
        if entry.seq <= head.seq:
            raise ChainBroken(expected, f"seq {entry.seq} appears where {expected} should be")
        raise ChainBroken(expected, f"entry missing: the log jumps from {head.seq} to {entry.seq}")
    if entry.prev != head.hash:
        raise ChainBroken(entry.seq, "prev is not the hash of the previous entry")
    if not _HEX64.fullmatch(entry.hash):
        raise ChainBroken(entry.seq, "hash is not 64 lowercase hex digits")
    try:
        computed = entry.computed_hash()
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 bytes, so no hash
        raise ChainBroken(entry.seq, "entry holds text that is not valid Unicode") from None
    if computed != entry.hash:
        raise ChainBroken(entry.seq, "hash does not match the entry's contents")
    if not entry.type:
        raise ChainBroken(entry.seq, "type is empty")
    try:
        parse_ts(entry.ts)
    except ValueError:
        raise ChainBroken(entry.seq, "ts is not a canonical UTC timestamp") from None
    return Head(entry.seq, entry.hash)


class ChainWalker:
    """Incremental chain check: ``feed`` entries in order, then ``finish``.

    ``anchors`` maps a seq to hashes that signed checkpoints vouch for at that seq; an entry whose
    hash differs raises ``CheckpointMismatch`` (this catches a rewrite that recomputed every later
    hash). An anchor beyond the end of the log is a truncated tail.
    """

    def __init__(
        self, *, start: Head = GENESIS, anchors: Mapping[int, Iterable[str]] | None = None
    ) -> None:
        self.head = start
        self.count = 0
        self._anchors = anchors or {}

    def feed(self, entry: Entry) -> Head:
        self.head = check_entry(entry, self.head)
        self.count += 1
        for vouched in self._anchors.get(self.head.seq, ()):
            if vouched != self.head.hash:
                raise CheckpointMismatch(
                    self.head.seq, "a signed checkpoint vouches for another hash"
                )
        return self.head

    def finish(self) -> Head:
        beyond = [seq for seq in self._anchors if seq > self.head.seq]
        if beyond:
            raise CheckpointMismatch(
                self.head.seq + 1,
                f"log ends at seq {self.head.seq} but a signed checkpoint covers seq "
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
