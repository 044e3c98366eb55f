"""vault.audit.segments: the chain walked in ranges and joined says "sound" exactly when one walk
of the whole log does, and then reports the same count and head."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.audit import segments
from vault.audit.chain import GENESIS, ChainWalker, Head, link
from vault.audit.entry import Draft, EntryRow
from vault.errors import ChainBroken

TS = "2026-11-27T17:00:00.000001Z"


def chain(n: int) -> list[EntryRow]:
    drafts = [
        Draft(type="t.note", actor=f"p{i % 3}", subject=None, data={"i": i}) for i in range(n)
    ]
    return [entry.as_row() for entry in link(GENESIS, drafts, TS)]


def whole(rows: list[EntryRow], anchors: dict[int, list[str]]) -> tuple[int, Head] | None:
    walker = ChainWalker(anchors=anchors)
    try:
        for row in rows:
            walker.feed_row(row)
    except ChainBroken:
        return None
    return walker.count, walker.head


def in_ranges(
    rows: list[EntryRow], parts: int, anchors: dict[int, list[str]]
) -> tuple[int, Head] | None:
    """What the helpers do, range by range, on stored ``rows`` (unique seqs, in order)."""
    head_seq = max((row[0] for row in rows), default=0)
    found = []
    for lo, hi in segments.split(head_seq, parts):
        before = [row for row in rows if row[0] < lo]
        start = Head(before[-1][0], before[-1][7]) if lo > 1 and before else GENESIS
        mine = [row for row in rows if lo <= row[0] <= hi]
        found.append(segments.walk(lo, hi, start, mine, anchors))
    return segments.joined(found, head_seq)


def changed(row: EntryRow, index: int, value: Any) -> EntryRow:
    values = list(row)
    values[index] = value
    return tuple(values)  # type: ignore[return-value]


TAMPERS = ["none", "data", "prev", "hash", "delete", "swap", "rehash-from", "duplicate-prev"]


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=40),
    parts=st.integers(min_value=1, max_value=9),
    tamper=st.sampled_from(TAMPERS),
    at=st.integers(min_value=0, max_value=1000),
    anchored=st.booleans(),
)
def test_ranges_join_exactly_when_the_whole_walk_holds(
    n: int, parts: int, tamper: str, at: int, anchored: bool
) -> None:
    rows = chain(n)
    k = at % n
    anchors = {rows[-1][0]: [rows[-1][7]]} if anchored else {}
    if tamper == "data":
        rows[k] = changed(rows[k], 5, '{"i":-1}')
    elif tamper == "prev":
        rows[k] = changed(rows[k], 6, "ab" * 32)
    elif tamper == "hash":
        rows[k] = changed(rows[k], 7, "cd" * 32)
    elif tamper == "delete" and n > 1:
        del rows[k]
    elif tamper == "swap" and k + 1 < n:  # contents swapped, seqs kept in place
        rows[k], rows[k + 1] = (
            (rows[k][0], *rows[k + 1][1:]),
            (rows[k + 1][0], *rows[k][1:]),
        )
    elif tamper == "rehash-from":  # a careful forger: every later prev and hash recomputed
        drafts = [Draft(type=r[2], actor=r[3], subject=r[4], data={"forged": r[0]}) for r in rows]
        start = GENESIS if k == 0 else Head(rows[k - 1][0], rows[k - 1][7])
        rows[k:] = [e.as_row() for e in link(start, drafts[k:], TS)]
    elif tamper == "duplicate-prev" and k > 0:  # an entry claiming the same predecessor twice
        rows[k] = changed(rows[k], 6, rows[k - 1][6])
    expected = whole(rows, anchors)
    assert in_ranges(rows, parts, anchors) == expected
    if tamper == "none":
        assert expected == (n, Head(n, chain(n)[-1][7]))


@pytest.mark.parametrize(("n", "parts"), [(1, 1), (1, 4), (10, 3), (11, 3), (1000, 7), (5, 5)])
def test_split_covers_every_seq_once_in_near_equal_ranges(n: int, parts: int) -> None:
    ranges = segments.split(n, parts)
    assert len(ranges) == min(n, parts)
    assert [seq for lo, hi in ranges for seq in range(lo, hi + 1)] == list(range(1, n + 1))
    sizes = {hi - lo + 1 for lo, hi in ranges}
    assert max(sizes) - min(sizes) <= 1


def test_split_of_nothing_is_nothing() -> None:
    assert segments.split(0, 4) == []
    assert segments.split(10, 0) == []


def test_ranges_must_cover_the_log_to_the_head() -> None:
    rows = chain(10)
    pieces = [
        segments.walk(
            lo, hi, GENESIS if lo == 1 else Head(lo - 1, rows[lo - 2][7]), rows[lo - 1 : hi], {}
        )
        for lo, hi in segments.split(10, 2)
    ]
    assert segments.joined(pieces, 10) == (10, Head(10, rows[-1][7]))
    assert segments.joined(pieces[:1], 10) is None  # a range missing at the end
    assert segments.joined(pieces[1:], 10) is None  # ... or at the start
    assert segments.joined(pieces[::-1], 10) is None  # out of order
    assert segments.joined(pieces, 11) is None  # short of the head


def test_a_segment_survives_its_json_and_nothing_else_passes() -> None:
    rows = chain(4)
    found = segments.walk(1, 4, GENESIS, rows, {})
    assert segments.segment_from_dict(found.to_dict()) == found
    good = found.to_dict()
    for bad in [
        None,
        [],
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "held"},
        {**good, "held": 1},
        {**good, "count": "4"},
        {**good, "lo": True},
        {**good, "start": [0]},
        {**good, "end": [4, 5]},
        {**good, "end": ["4", rows[-1][7]]},
    ]:
        with pytest.raises(ValueError, match="segment"):
            segments.segment_from_dict(bad)


def test_a_range_stops_at_its_first_bad_entry() -> None:
    rows = chain(6)
    del rows[3]  # seq 4
    found = segments.walk(1, 6, GENESIS, rows, {})
    assert not found.held
    assert (found.count, found.end) == (3, Head(3, rows[2][7]))
