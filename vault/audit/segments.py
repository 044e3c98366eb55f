"""The chain checked in seq ranges, side by side, then joined (pure: no storage, no processes).

Each range is walked from the stored entry just before it, taken as it is stored. If every entry
before the range holds, a walk of the whole log reaches the range with exactly that head, so the
range's walk checks what the whole walk would check there. ``joined`` accepts the ranges only if
each one held to its end and each starts where the one before it ended; it has no opinion on a
log that fails. A caller that gets ``None`` walks the whole log once, which alone says where it
fails first and why: this path can only say "sound", and says it exactly when the whole walk
would.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vault.audit.chain import GENESIS, ChainWalker, Head
from vault.audit.entry import EntryRow
from vault.errors import ChainBroken


@dataclass(frozen=True, slots=True)
class Segment:
    """What the walk of ``lo <= seq <= hi`` found, starting from ``start``."""

    lo: int
    hi: int
    start: Head  # the stored entry before ``lo``, as stored (GENESIS before seq 1)
    count: int  # entries accepted
    end: Head  # the last entry accepted (``start`` if none)
    held: bool  # every entry of the range was accepted

    def to_dict(self) -> dict[str, object]:
        return {
            "lo": self.lo,
            "hi": self.hi,
            "start": [self.start.seq, self.start.hash],
            "count": self.count,
            "end": [self.end.seq, self.end.hash],
            "held": self.held,
        }


def segment_from_dict(obj: object) -> Segment:
    """A ``Segment`` from ``to_dict``'s JSON; ``ValueError`` for anything else."""
    if not isinstance(obj, dict) or set(obj) != _MEMBERS:
        raise ValueError("not a segment report")
    start, end = obj["start"], obj["end"]
    if not (_is_head(start) and _is_head(end)):
        raise ValueError("a segment's start and end are [seq, hash] pairs")
    lo, hi, count, held = obj["lo"], obj["hi"], obj["count"], obj["held"]
    if not all(type(value) is int for value in (lo, hi, count)) or type(held) is not bool:
        raise ValueError("a segment's lo, hi and count are integers, held a boolean")
    return Segment(lo, hi, Head(start[0], start[1]), count, Head(end[0], end[1]), held)


_MEMBERS = frozenset({"lo", "hi", "start", "count", "end", "held"})


def _is_head(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], str)
    )


def split(head_seq: int, parts: int) -> list[tuple[int, int]]:
    """``1..head_seq`` cut into at most ``parts`` contiguous ranges of near-equal size."""
    if head_seq < 1 or parts < 1:
        return []
    parts = min(parts, head_seq)
    size, extra = divmod(head_seq, parts)
    ranges = []
    lo = 1
    for index in range(parts):
        hi = lo + size - 1 + (1 if index < extra else 0)
        ranges.append((lo, hi))
        lo = hi + 1
    return ranges


def walk(
    lo: int,
    hi: int,
    start: Head,
    rows: Iterable[EntryRow],
    anchors: Mapping[int, Iterable[str]],
) -> Segment:
    """Walk the stored ``rows`` of ``lo..hi`` (in seq order) from ``start``; stop at the first
    entry the chain refuses (``held`` is then False)."""
    walker = ChainWalker(start=start, anchors=anchors)
    try:
        walker.feed_rows(rows)
    except ChainBroken:
        return Segment(lo, hi, start, walker.count, walker.head, held=False)
    return Segment(lo, hi, start, walker.count, walker.head, held=True)


def walk_open(
    start: Head, rows: Iterable[EntryRow], anchors: Mapping[int, Iterable[str]]
) -> Segment:
    """``walk`` for a range whose last seq is not known beforehand (a byte range of an export):
    it begins after ``start`` and ends at the last entry accepted."""
    walker = ChainWalker(start=start, anchors=anchors)
    try:
        walker.feed_rows(rows)
    except ChainBroken:
        return Segment(start.seq + 1, walker.head.seq, start, walker.count, walker.head, False)
    return Segment(start.seq + 1, walker.head.seq, start, walker.count, walker.head, True)


def joined(segments: Sequence[Segment], head_seq: int) -> tuple[int, Head] | None:
    """``(entries, head)`` of the whole log if ``segments`` (the ranges of ``split(head_seq,
    ...)``, in order) make one sound chain ending at ``head_seq``; else ``None``."""
    head, count, expected_lo = GENESIS, 0, 1
    for segment in segments:
        if not segment.held or segment.start != head or segment.lo != expected_lo:
            return None
        count += segment.count
        head, expected_lo = segment.end, segment.hi + 1
    if expected_lo != head_seq + 1 or head.seq != head_seq:
        return None
    return count, head
