"""vault.audit.chain: linking drafts into a gap-free chain and finding the first bad seq."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.audit.chain import (
    GENESIS,
    NOT_TEXT,
    ChainWalker,
    Head,
    check_entry,
    link,
    verify_chain,
)
from vault.audit.entry import GENESIS_HASH, Draft, Entry, EntryRow, canonical_entry, entry_hash
from vault.clock import format_ts
from vault.errors import ChainBroken, CheckpointMismatch, ForeignEntry

T0 = datetime(2026, 11, 27, 17, 0, 0, tzinfo=UTC)
N = 10


def ts_at(i: int) -> str:
    return format_ts(T0 + timedelta(seconds=i, microseconds=i))


def draft(i: int) -> Draft:
    kinds = ["token.issued", "token.used", "subject.upserted", "policy.changed"]
    return Draft(
        type=kinds[i % len(kinds)],
        actor=None if i % 3 == 0 else f"p{i}",
        subject=None if i % 2 else f"sü{i}",
        data={"i": i, "note": f"entry {i} ✓", "nested": {"list": [i, None, True]}},
    )


def make_chain(n: int = N, *, start: Head = GENESIS) -> list[Entry]:
    """Entries one batch at a time, each batch with its own ts, as the appender would."""
    entries: list[Entry] = []
    head = start
    for _ in range(n):
        (entry,) = link(head, [draft(head.seq + 1)], ts_at(head.seq + 1))
        entries.append(entry)
        head = Head(entry.seq, entry.hash)
    return entries


def rehash(entry: Entry, **changes: Any) -> Entry:
    """Change members and recompute ``hash`` as a forger with write access would."""
    changed = dataclasses.replace(entry, **changes)
    return dataclasses.replace(changed, hash=changed.computed_hash())


def rewrite_from(entries: Sequence[Entry], k: int, **changes: Any) -> list[Entry]:
    """Change entry ``k`` and recompute every later ``prev`` and ``hash``: a consistent forgery."""
    out = list(entries[: k - 1])
    prev = out[-1].hash if out else GENESIS_HASH
    for entry in entries[k - 1 :]:
        extra = changes if entry.seq == k else {}
        forged = rehash(entry, prev=prev, **extra)
        out.append(forged)
        prev = forged.hash
    return out


def broken(entries: Sequence[Entry], **kwargs: Any) -> ChainBroken:
    with pytest.raises(ChainBroken) as info:
        verify_chain(entries, **kwargs)
    return info.value


# --- link --------------------------------------------------------------------------------------


def test_genesis_head():
    assert Head(0, "0" * 64) == GENESIS


def test_link_numbers_without_gaps_and_chains():
    drafts = [draft(i) for i in range(1, 8)]
    entries = link(GENESIS, drafts, ts_at(0))
    assert [e.seq for e in entries] == list(range(1, 8))
    assert entries[0].prev == "0" * 64
    for before, after in itertools.pairwise(entries):
        assert after.prev == before.hash
    for entry, source in zip(entries, drafts, strict=True):
        assert entry.hash == entry.computed_hash()
        assert entry.ts == ts_at(0)
        assert (entry.type, entry.actor, entry.subject) == (
            source.type,
            source.actor,
            source.subject,
        )
        assert entry.data == source.data
    assert len({e.hash for e in entries}) == len(entries)


def test_link_continues_from_a_head():
    head = Head(41, "cd" * 32)
    entries = link(head, [draft(1), draft(2)], ts_at(1))
    assert [e.seq for e in entries] == [42, 43]
    assert entries[0].prev == "cd" * 32
    assert entries[1].prev == entries[0].hash


def test_link_of_nothing_is_nothing():
    assert link(Head(5, "ab" * 32), [], ts_at(0)) == []


def test_batches_chain_like_one_batch():
    drafts = [draft(i) for i in range(6)]
    whole = link(GENESIS, drafts, ts_at(0))
    first = link(GENESIS, drafts[:2], ts_at(0))
    rest = link(Head(first[-1].seq, first[-1].hash), drafts[2:], ts_at(0))
    assert first + rest == whole


# --- verify_chain: good chains -----------------------------------------------------------------


def test_verify_returns_the_head():
    entries = make_chain()
    assert verify_chain(entries) == Head(N, entries[-1].hash)


def test_verify_empty_log():
    assert verify_chain([]) == GENESIS


def test_verify_accepts_an_iterator():
    entries = make_chain()
    assert verify_chain(iter(entries)) == Head(N, entries[-1].hash)


def test_verify_a_suffix_from_a_trusted_head():
    entries = make_chain()
    start = Head(4, entries[3].hash)
    assert verify_chain(entries[4:], start=start) == Head(N, entries[-1].hash)


def test_verify_with_matching_anchors():
    entries = make_chain()
    anchors = {3: [entries[2].hash], N: [entries[-1].hash, entries[-1].hash]}
    assert verify_chain(entries, anchors=anchors) == Head(N, entries[-1].hash)


def test_walker_counts_and_returns_heads():
    entries = make_chain(3)
    walker = ChainWalker()
    heads = [walker.feed(e) for e in entries]
    assert heads == [Head(e.seq, e.hash) for e in entries]
    assert walker.count == 3
    assert walker.finish() == heads[-1]


def test_check_entry_returns_next_head():
    (entry,) = make_chain(1)
    assert check_entry(entry, GENESIS) == Head(1, entry.hash)


# --- verify_chain: tampering -------------------------------------------------------------------

POSITIONS = [1, 2, 5, N - 1, N]


@pytest.mark.parametrize("k", POSITIONS)
@pytest.mark.parametrize(
    "changes",
    [
        {"data_json": '{"i":0}'},
        {"actor": "intruder"},
        {"actor": ""},
        {"subject": "someone else"},
        {"type": "token.revoked"},
        {"ts": "2030-01-01T00:00:00.000000Z"},
        {"hash": "ab" * 32},
    ],
    ids=["data", "actor", "actor-empty", "subject", "type", "ts", "hash"],
)
def test_modified_entry_is_caught_at_its_seq(k, changes):
    entries = make_chain()
    entries[k - 1] = dataclasses.replace(entries[k - 1], **changes)
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == k
    assert "hash does not match" in exc.reason


@pytest.mark.parametrize("k", POSITIONS)
def test_modified_prev_is_caught_at_its_seq(k):
    entries = make_chain()
    entries[k - 1] = rehash(entries[k - 1], prev="ef" * 32)
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert (exc.seq, exc.reason) == (k, "prev is not the hash of the previous entry")


@pytest.mark.parametrize("k", POSITIONS[:-1])
def test_deleted_entry_is_caught_at_its_seq(k):
    entries = make_chain()
    del entries[k - 1]
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == k
    assert "missing" in exc.reason


def test_deleted_first_entry():
    exc = broken(make_chain()[1:])
    assert exc.seq == 1


@pytest.mark.parametrize("k", [1, 4, N - 1])
def test_swapped_neighbours_are_caught_at_the_first(k):
    entries = make_chain()
    entries[k - 1], entries[k] = entries[k], entries[k - 1]
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == k


def test_reversed_log_is_caught_at_one():
    assert broken(make_chain()[::-1]).seq == 1


def test_reordered_then_renumbered_is_caught_at_the_first_moved_seq():
    """Swap 4 and 5 and give each the other's seq: the prev links no longer hold."""
    entries = make_chain()
    a, b = entries[3], entries[4]
    entries[3] = dataclasses.replace(b, seq=4)
    entries[4] = dataclasses.replace(a, seq=5)
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == 4


@pytest.mark.parametrize("k", [1, 5, N])
def test_inserted_unlinked_entry_is_caught_where_it_sits(k):
    """A made-up entry slipped in before ``k`` with that seq but no valid chaining."""
    entries = make_chain()
    forged = dataclasses.replace(entries[k - 1], data_json='{"forged":true}')
    entries.insert(k - 1, forged)
    exc = broken(entries)
    assert exc.seq == k


@pytest.mark.parametrize("k", [1, 5, N])
def test_inserted_well_linked_entry_is_caught_at_the_next_seq(k):
    """A forger who links a new entry to ``k-1`` correctly collides with the real ``k``."""
    entries = make_chain()
    prev = entries[k - 2].hash if k > 1 else GENESIS_HASH
    (forged,) = link(Head(k - 1, prev), [draft(999)], ts_at(999))
    entries.insert(k - 1, forged)
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == k + 1
    assert "appears where" in exc.reason


@pytest.mark.parametrize("k", [1, 5, N])
def test_duplicate_seq_is_caught_at_the_next_seq(k):
    entries = make_chain()
    entries.insert(k, entries[k - 1])
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == k + 1
    assert f"seq {k} appears where {k + 1} should be" in exc.reason


@pytest.mark.parametrize("keep", [0, 1, 7, N - 1])
def test_truncated_tail_is_invisible_without_an_anchor(keep):
    """Documents the limit: only a signed checkpoint can reveal a removed tail."""
    entries = make_chain()
    expected = Head(keep, entries[keep - 1].hash) if keep else GENESIS
    assert verify_chain(entries[:keep]) == expected


@pytest.mark.parametrize("keep", [0, 1, 7, N - 1])
def test_truncated_tail_covered_by_an_anchor(keep):
    entries = make_chain()
    anchors = {N: [entries[-1].hash]}
    exc = broken(entries[:keep], anchors=anchors)
    assert type(exc) is CheckpointMismatch
    assert exc.seq == keep + 1
    assert f"covers seq {N}" in exc.reason


@pytest.mark.parametrize("k", [1, 3, 6])
def test_rewrite_with_recomputed_hashes_passes_the_chain_alone(k):
    entries = make_chain()
    forged = rewrite_from(entries, k, data_json='{"rewritten":true}')
    assert forged[k - 1].hash != entries[k - 1].hash
    assert verify_chain(forged) == Head(N, forged[-1].hash)


@pytest.mark.parametrize(
    ("k", "anchor_seqs", "caught_at"),
    [
        (1, [1], 1),
        (3, [6], 6),
        (3, [3, 6], 3),
        (3, [2, 8], 8),
        (6, [N], N),
        (1, [5, N], 5),
    ],
)
def test_rewrite_is_caught_at_the_first_anchor_after_it(k, anchor_seqs, caught_at):
    entries = make_chain()
    anchors = {s: [entries[s - 1].hash] for s in anchor_seqs}
    forged = rewrite_from(entries, k, data_json='{"rewritten":true}')
    exc = broken(forged, anchors=anchors)
    assert type(exc) is CheckpointMismatch
    assert exc.seq == caught_at


def test_rewrite_after_the_last_anchor_is_not_caught_by_it():
    entries = make_chain()
    forged = rewrite_from(entries, 6, actor="someone")
    assert verify_chain(forged, anchors={5: [entries[4].hash]}) == Head(N, forged[-1].hash)


def test_one_disagreeing_anchor_among_several_is_enough():
    entries = make_chain()
    anchors = {4: [entries[3].hash, "00" * 32]}
    exc = broken(entries, anchors=anchors)
    assert type(exc) is CheckpointMismatch
    assert exc.seq == 4


@pytest.mark.parametrize(
    "bad_ts",
    [
        "2026-11-27T17:00:00Z",
        "2026-11-27T17:00:00.123Z",
        "2026-11-27T17:00:00.000000+00:00",
        "2026-11-27 17:00:00.000000Z",
        "yesterday",
        "",
    ],
)
def test_bad_ts_is_caught_even_with_a_consistent_hash(bad_ts):
    entries = rewrite_from(make_chain(), 4, ts=bad_ts)
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert (exc.seq, exc.reason) == (4, "ts is not a canonical UTC timestamp")


def test_empty_type_is_caught_even_with_a_consistent_hash():
    entries = rewrite_from(make_chain(), 4, type="")
    exc = broken(entries)
    assert (exc.seq, exc.reason) == (4, "type is empty")


@pytest.mark.parametrize(
    "spell",
    [str.upper, lambda h: h[:-1], lambda h: h + "0", lambda h: "g" + h[1:], lambda h: " " + h[1:]],
    ids=["uppercase", "short", "long", "non-hex", "space"],
)
@pytest.mark.parametrize("k", [1, 5, N])
def test_non_hex_hash_is_caught_at_its_seq(spell, k):
    entries = make_chain()
    entries[k - 1] = dataclasses.replace(entries[k - 1], hash=spell(entries[k - 1].hash))
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert (exc.seq, exc.reason) == (k, "hash is not 64 lowercase hex digits")


def test_lone_surrogate_is_a_broken_chain_not_a_crash():
    entries = make_chain(3)
    entries[1] = dataclasses.replace(entries[1], actor="\ud800")
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == 2


# A hand-edited SQLite file can hold a number or a blob in any column (its types are affinities):
# what the rows of such a file can hold, member by member.
WRONG_TYPES = [
    ("ts", 12345),
    ("ts", b"2026-11-27T17:00:04.000004Z"),
    ("type", b"token.used"),
    ("actor", b"p4"),
    ("actor", 4),
    ("subject", b"s"),
    ("data_json", b'{"i":4}'),
    ("data_json", 4),
    ("prev", b"00"),
    ("seq", "4"),
    ("seq", 4.0),
    ("seq", b"4"),
    ("seq", True),
]


def feed_all(walker: ChainWalker, rows: list[Any]) -> None:
    for row in rows:
        walker.feed_row(row)


@pytest.mark.parametrize(("member", "value"), WRONG_TYPES)
def test_a_stored_value_of_the_wrong_type_is_a_broken_chain_not_a_crash(member, value):
    rows = [entry.as_row() for entry in make_chain(6)]
    index = ("seq", "ts", "type", "actor", "subject", "data_json", "prev", "hash").index(member)
    row = list(rows[3])
    row[index] = value
    rows[3] = tuple(row)
    walker = ChainWalker()
    with pytest.raises(ChainBroken) as info:
        feed_all(walker, rows)
    assert info.value.seq == 4
    assert walker.count == 3
    if member not in ("seq", "prev"):  # those two fail their own checks first
        assert info.value.reason == NOT_TEXT


@pytest.mark.parametrize("value", [b"ab" * 32, 7, None])
def test_a_hash_of_the_wrong_type_is_not_a_hash(value):
    rows = [entry.as_row() for entry in make_chain(3)]
    rows[1] = (*rows[1][:7], value)
    walker = ChainWalker()
    with pytest.raises(ChainBroken) as info:
        feed_all(walker, rows)
    assert (info.value.seq, info.value.reason) == (2, "hash is not 64 lowercase hex digits")


def test_wrong_start_head_is_caught_at_the_first_entry():
    entries = make_chain()
    exc = broken(entries[4:], start=Head(4, "ab" * 32))
    assert (exc.seq, exc.reason) == (5, "prev is not the hash of the previous entry")


# --- property: any single change to any member of any entry is caught at that entry ------------

STRING_MEMBERS = ("ts", "type", "actor", "subject", "data_json", "prev", "hash")


def _mutate_text(value: str | None, position: int, replacement: str) -> str:
    if not value:
        return replacement
    i = position % len(value)
    if value[i] == replacement:
        replacement = "A" if replacement != "A" else "B"
    return value[:i] + replacement + value[i + 1 :]


@given(
    n=st.integers(min_value=1, max_value=8),
    index=st.integers(min_value=0, max_value=7),
    member=st.sampled_from((*STRING_MEMBERS, "seq")),
    position=st.integers(min_value=0, max_value=400),
    replacement=st.characters(exclude_categories=("Cs",)),
    bit=st.integers(min_value=0, max_value=62),
)
def test_any_single_change_is_caught_at_its_seq(n, index, member, position, replacement, bit):
    entries = make_chain(n)
    k = index % n + 1
    original = entries[k - 1]
    if member == "seq":
        mutated = dataclasses.replace(original, seq=original.seq ^ (1 << bit))
    else:
        before = getattr(original, member)
        mutated = dataclasses.replace(
            original, **{member: _mutate_text(before, position, replacement)}
        )
        assert getattr(mutated, member) != before
    entries[k - 1] = mutated
    exc = broken(entries)
    assert type(exc) is ChainBroken
    assert exc.seq == k


@given(
    n=st.integers(min_value=1, max_value=8),
    k=st.integers(min_value=1, max_value=8),
    anchor=st.integers(min_value=1, max_value=8),
    data=st.dictionaries(
        st.text(alphabet="aé✓", max_size=3), st.integers(-(2**53) + 1, 2**53 - 1), max_size=2
    ),
)
def test_any_consistent_rewrite_is_caught_by_a_later_anchor(n, k, anchor, data):
    entries = make_chain(n)
    k, anchor = min(k, n), min(anchor, n)
    forged = rewrite_from(
        entries, k, data_json=Draft(type="t", actor=None, subject=None, data=data).data_json()
    )
    anchors = {anchor: [entries[anchor - 1].hash]}
    if forged[k - 1] == entries[k - 1]:  # the "rewrite" happened to change nothing
        assert verify_chain(forged, anchors=anchors) == Head(n, entries[-1].hash)
    elif anchor >= k:
        exc = broken(forged, anchors=anchors)
        assert type(exc) is CheckpointMismatch
        assert exc.seq == anchor
    else:
        assert verify_chain(forged, anchors=anchors) == Head(n, forged[-1].hash)


def test_entry_hash_helper_matches_entry_method():
    (entry,) = make_chain(1)
    assert (
        entry_hash(
            seq=entry.seq,
            ts=entry.ts,
            type=entry.type,
            actor=entry.actor,
            subject=entry.subject,
            data_json=entry.data_json,
            prev=entry.prev,
        )
        == entry.hash
    )


# --- feed_rows: the one-loop bulk walk is feed_row, row by row ---------------------------------


def _outcome(walk: Any, rows: list[Any], anchors: dict[int, list[str]]) -> tuple[Any, ...]:
    walker = ChainWalker(anchors=anchors)
    try:
        walk(walker, rows)
    except ChainBroken as exc:
        return (type(exc), exc.seq, exc.reason, walker.count, walker.head, walker._ts)
    return (None, walker.count, walker.head, walker._ts)


ODD_VALUES = [None, "", 4, 4.0, True, b"x", "2026-11-27T17:00:00Z", "\ud800", "ab" * 32]


@given(
    n=st.integers(min_value=1, max_value=12),
    changes=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=11),
            st.integers(min_value=0, max_value=7),
            st.sampled_from(ODD_VALUES),
        ),
        max_size=2,
    ),
    anchor_at=st.integers(min_value=0, max_value=12),
    anchor_good=st.booleans(),
    shared_ts=st.booleans(),
)
def test_feed_rows_is_feed_row_row_by_row(n, changes, anchor_at, anchor_good, shared_ts):
    """Same verdict, same reason, same count, head and last ts, whatever the rows hold."""
    drafts = [draft(i) for i in range(1, n + 1)]
    if shared_ts:  # one batch: the fast path's usual case
        rows = [e.as_row() for e in link(GENESIS, drafts, ts_at(1))]
    else:
        rows = [e.as_row() for e in make_chain(n)]
    for index, member, value in changes:
        if index < n:
            row = list(rows[index])
            row[member] = value
            rows[index] = tuple(row)
    anchors: dict[int, list[str]] = {}
    if 0 < anchor_at <= n:
        anchors[anchor_at] = [rows[anchor_at - 1][7] if anchor_good else "00" * 32]
    assert _outcome(ChainWalker.feed_rows, rows, anchors) == _outcome(feed_all, rows, anchors)


def _rehash_from(rows: list[Any], k: int, **changes: Any) -> list[Any]:
    """A forger's edit of row ``k`` (0-based): members changed, then every hash from there
    recomputed over what ``canonical_entry`` makes of them (Python's spelling of a blob, say)."""
    from hashlib import sha256

    from vault.audit.entry import canonical_entry

    names = ("seq", "ts", "type", "actor", "subject", "data_json", "prev", "hash")
    out = [list(row) for row in rows]
    for name, value in changes.items():
        out[k][names.index(name)] = value
    for i in range(k, len(out)):
        if i > 0:
            out[i][6] = out[i - 1][7]
        out[i][7] = sha256(canonical_entry(*out[i][:7])).hexdigest()
    return [tuple(row) for row in out]


def _both_ways(rows: list[Any]) -> tuple[Any, ...]:
    found = _outcome(feed_all, rows, {})
    assert _outcome(ChainWalker.feed_rows, rows, {}) == found
    return found


@pytest.mark.parametrize("k", [0, 3, 5])
def test_a_null_ts_is_refused_even_with_a_hash_made_for_it(k):
    """First entry of a walk (a helper's range starts there) or in the middle: the same."""
    rows = _rehash_from([e.as_row() for e in make_chain(6)], k, ts=None)
    found = _both_ways(rows)
    assert found[:3] == (ChainBroken, k + 1, "ts is not a canonical UTC timestamp")


def test_a_blob_data_with_a_hash_made_over_its_spelling_is_refused():
    rows = _rehash_from([e.as_row() for e in make_chain(6)], 3, data_json=b'{"i":4}')
    assert _both_ways(rows)[:3] == (ChainBroken, 4, NOT_TEXT)


def test_a_null_hash_never_matches_an_entry_that_cannot_be_hashed():
    rows = [e.as_row() for e in make_chain(6)]
    rows[5] = (*rows[5][:3], b"p", *rows[5][4:7], None)
    assert _both_ways(rows)[:3] == (ChainBroken, 6, "hash is not 64 lowercase hex digits")


# --- data past the newest anchor ----------------------------------------------------------------


def _foreign_chain() -> list[EntryRow]:
    """Three entries; the second's data is no canonical JSON, and every hash is over it."""
    rows = [entry.as_row() for entry in link(GENESIS, [draft(i) for i in range(3)], ts_at(1))]
    seq, ts, kind, actor, subject, _, _, _ = rows[1]
    prev = rows[0][7]
    data = '{"b":1, "a":2}'
    digest = hashlib.sha256(canonical_entry(seq, ts, kind, actor, subject, data, prev)).hexdigest()
    rows[1] = (seq, ts, kind, actor, subject, data, prev, digest)
    third = rows[2]
    digest3 = hashlib.sha256(canonical_entry(*third[:6], digest)).hexdigest()
    rows[2] = (*third[:6], digest, digest3)
    return rows


def test_data_past_the_newest_anchor_must_be_canonical() -> None:
    rows = _foreign_chain()
    for feed in (ChainWalker.feed_rows, lambda w, rs: [w.feed_row(r) for r in rs]):
        walker = ChainWalker()
        with pytest.raises(ForeignEntry) as info:
            feed(walker, rows)
        assert info.value.seq == 2
        assert walker.head.seq == 1
    covered = ChainWalker(anchors={3: [rows[2][7]]})  # a signature pins it: not read again
    covered.feed_rows(rows)
    assert covered.finish() == Head(3, rows[2][7])


def test_an_entry_the_walker_was_told_it_composed_is_not_read_again() -> None:
    """Keyed by seq and hash: another hash at that seq is read like any entry."""
    rows = _foreign_chain()
    ChainWalker(composed={2: rows[1][7]}).feed_rows(rows)
    with pytest.raises(ForeignEntry):
        ChainWalker(composed={2: "ab" * 32}).feed_rows(rows)
    with pytest.raises(ForeignEntry):
        ChainWalker(composed={3: rows[1][7]}).feed_rows(rows)
