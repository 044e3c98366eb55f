"""``ChainWalker.feed_pinned`` (and ``segments.walk_lines``, the helpers' walk of an export's
byte range): lines up to the newest anchor are taken byte for byte, without parsing. What it
says "sound" must be exactly what the walk row by row, parsing every line, says sound: a line
is either taken as the vault wrote it or handed back to that walk, which then names the fault.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_audit_export import KEY, lookup, ts_at, verify_lines
from vault.audit import segments
from vault.audit.chain import GENESIS, ChainWalker, Head, link
from vault.audit.checkpoint import Checkpoint, make_checkpoint
from vault.audit.entry import Draft, Entry, canonical_entry
from vault.audit.export import checkpoint_line
from vault.audit.verify import vouched
from vault.errors import MalformedExport
from vault.ops.verify_parallel import laid_out

N = 12
CHECKPOINTED = (4, 9)  # the newest anchor is 9: entries 10..12 are the unsigned tail
MIMIC = 6  # this entry's data holds an object that looks like the end of an entry line


def build() -> tuple[list[Entry], list[Checkpoint]]:
    """A log the vault could have written. Entry ``MIMIC``'s data holds an object with a
    member ``prev`` set to the previous entry's hash, as data may (a name and a value that some
    caller chose): the line's only other ``"prev":"`` is that of the entry itself."""
    entries: list[Entry] = []
    head = GENESIS
    for seq in range(1, N + 1):
        data: dict[str, object] = {"jti": f"j{seq}", "n": seq, "note": 'say "hi"\n'}
        if seq == MIMIC:
            data = {"z": {"a": 1, "prev": head.hash}}
        drafts = [Draft(type="t.note", actor=f"p{seq % 2}", subject=None, data=data)]
        (entry,) = link(head, drafts, ts_at(seq))
        entries.append(entry)
        head = Head(entry.seq, entry.hash)
    checkpoints = [
        make_checkpoint(Head(s, entries[s - 1].hash), ts_at(100 + s), KEY) for s in CHECKPOINTED
    ]
    return entries, checkpoints


def lines_of(entries: list[Entry], checkpoints: list[Checkpoint]) -> list[str]:
    return [e.to_line() + "\n" for e in entries] + [checkpoint_line(c) + "\n" for c in checkpoints]


def anchors_of(checkpoints: list[Checkpoint]) -> dict[int, list[str]]:
    anchors, failures = vouched(checkpoints, [], lookup)
    assert not failures
    return anchors


def pinned_walk(lines: list[str], checkpoints: list[Checkpoint]) -> tuple[int, Head] | None:
    """What a helper does with the entry lines (one range from the start), and what the
    parent then requires: the range held, and no anchor lies beyond where it ended. ``None``
    when that path does not say "sound" (a line it could not read counts as not sound)."""
    entry_lines = [line.encode("utf-8") for line in lines if '"kind"' not in line]
    anchors = anchors_of(checkpoints)
    try:
        segment = segments.walk_lines(GENESIS, iter(entry_lines), anchors)
    except (MalformedExport, UnicodeDecodeError):
        return None
    if not segment.held or any(seq > segment.end.seq for seq in anchors):
        return None
    return segment.count, segment.end


def test_a_sound_export_is_taken_to_the_newest_anchor_and_parsed_after_it() -> None:
    entries, checkpoints = build()
    lines = [line.encode("utf-8") for line in lines_of(entries, [])]
    walker = ChainWalker(anchors=anchors_of(checkpoints))
    rest = iter(lines)
    left = walker.feed_pinned(rest)
    assert walker.head == Head(9, entries[8].hash)  # the entry that looks like a line included
    assert walker.count == 9
    assert left == lines[9]  # the first line of the unsigned tail, handed back
    assert list(rest) == lines[10:]
    whole = verify_lines(lines_of(entries, checkpoints))
    assert whole.ok
    assert pinned_walk(lines_of(entries, checkpoints), checkpoints) == (N, Head(N, whole.head_hash))


def test_nothing_is_taken_without_an_anchor() -> None:
    entries, _ = build()
    lines = [line.encode("utf-8") for line in lines_of(entries, [])]
    walker = ChainWalker()
    assert walker.feed_pinned(iter(lines)) == lines[0]
    assert walker.count == 0
    assert walker.head == GENESIS


def test_a_hash_member_moved_into_data_is_handed_back() -> None:
    """Entry ``MIMIC``'s bytes without its hash member are the vault's; put back in front of
    the ``"prev":"`` inside its data (whose value is the right previous hash), they still hash
    to the member, and the line would link. It is not the vault's line: the entry has no hash
    member at its top level. The prev member that follows must be the line's last."""
    entries, checkpoints = build()
    lines = lines_of(entries, checkpoints)
    line = lines[MIMIC - 1]
    member = f',"hash":"{entries[MIMIC - 1].hash}"'
    body = line.replace(member, "", 1)
    inner = body.index(',"prev":"')
    assert inner < body.rindex(',"prev":"')
    moved = body[:inner] + member + body[inner:]
    lines[MIMIC - 1] = moved

    walker = ChainWalker(anchors=anchors_of(checkpoints))
    encoded = [text.encode("utf-8") for text in lines[:N]]
    assert walker.feed_pinned(iter(encoded)) == moved.encode("utf-8")
    assert walker.head.seq == MIMIC - 1
    assert pinned_walk(lines, checkpoints) is None
    report = verify_lines(lines)
    assert not report.ok
    assert report.first_error is not None
    assert report.first_error.seq == MIMIC


def test_a_rewrite_that_no_key_signed_stops_at_the_anchor() -> None:
    """An entry changed and every later hash recomputed over the changed bytes (spaces in the
    line, as a careless or a hostile writer might leave them): every line links, but the newest
    anchor vouches for another hash, so that line is handed back and the walk fails there."""
    entries, checkpoints = build()
    lines = lines_of(entries, checkpoints)
    forged = list(lines)
    prev = entries[1].hash
    for index in range(2, N):  # from entry 3 on
        e = entries[index]
        data = '{"jti": "forged"}' if index == 2 else e.data_json
        body = canonical_entry(e.seq, e.ts, e.type, e.actor, e.subject, data, prev)
        digest = hashlib.sha256(body).hexdigest()
        text = body.decode("utf-8")
        cut = text.rindex(',"prev":"')
        forged[index] = f'{text[:cut]},"hash":"{digest}"{text[cut:]}\n'
        prev = digest
    walker = ChainWalker(anchors=anchors_of(checkpoints))
    left = walker.feed_pinned(iter(line.encode("utf-8") for line in forged[:N]))
    assert walker.head.seq == 3  # entries 3 ... linked, and the anchor at 4 refused them
    assert left == forged[3].encode("utf-8")
    assert pinned_walk(forged, checkpoints) is None
    assert not verify_lines(forged).ok


def _flip(index: int, at: int) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        raw = bytearray(lines[index].encode("utf-8"))
        raw[at % len(raw)] ^= 0x01
        lines[index] = raw.decode("utf-8", "replace")
        return lines

    return mutate


def _edit(index: int, edit: Callable[[str], str]) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        lines[index] = edit(lines[index])
        return lines

    return mutate


def _move(index: int, to: int) -> Callable[[list[str]], list[str]]:
    def mutate(lines: list[str]) -> list[str]:
        line = lines.pop(index)
        lines.insert(to, line)
        return lines

    return mutate


TAMPERS: dict[str, Callable[[int, int], Callable[[list[str]], list[str]]]] = {
    "flip": _flip,
    "spaces": lambda i, _: _edit(i, lambda t: t.replace('":', '": ', 1)),
    "crlf": lambda i, _: _edit(i, lambda t: t.rstrip("\n") + "\r\n"),
    "no-newline": lambda i, _: _edit(i, lambda t: t.rstrip("\n")),
    "leading-space": lambda i, _: _edit(i, lambda t: " " + t),
    "delete": lambda i, _: lambda ls: ls[:i] + ls[i + 1 :],
    "duplicate": lambda i, _: lambda ls: ls[: i + 1] + ls[i:],
    "move": lambda i, at: _move(i, at % N),
    "escape": lambda i, _: _edit(i, lambda t: t.replace('"p', '"\\u0070', 1)),
}


@settings(max_examples=400, deadline=None)
@given(
    tamper=st.sampled_from(sorted(TAMPERS)),
    index=st.integers(min_value=0, max_value=N - 1),
    at=st.integers(min_value=0, max_value=10_000),
)
def test_sound_by_the_pinned_walk_means_sound_line_by_line(
    tamper: str, index: int, at: int
) -> None:
    entries, checkpoints = build()
    lines = TAMPERS[tamper](index, at)(lines_of(entries, checkpoints))
    found = pinned_walk(lines, checkpoints)
    whole = verify_lines(lines)
    if found is not None:
        assert whole.ok, (tamper, index, whole.first_error)
        assert found == (whole.entries, Head(whole.head_seq, whole.head_hash))


@pytest.mark.parametrize("index", [0, 3, 8, 9, N - 1])
def test_a_line_with_crlf_is_read_line_by_line(index: int) -> None:
    """Such a line is handed back (its bytes hash to something else) and parsed, like any."""
    entries, checkpoints = build()
    lines = _edit(index, lambda t: t.rstrip("\n") + "\r\n")(lines_of(entries, checkpoints))
    whole = verify_lines(lines)
    assert whole.ok  # JSON allows the white space
    assert pinned_walk(lines, checkpoints) == (N, Head(N, whole.head_hash))


# --- laid_out: a pinned line's members read where entry_line put them --------------------------

# Up to U+FFFF: canonical JSON refuses member names beyond, whose JCS order differs.
TEXT = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(
    actor=st.none() | TEXT,
    subject=st.none() | TEXT,
    kind=TEXT.filter(bool),
    data=st.dictionaries(TEXT, JSON_VALUES, max_size=4),
    seq=st.integers(min_value=1, max_value=2**62),
    newline=st.booleans(),
)
def test_a_line_as_entry_line_writes_it_is_read_as_parsing_reads_it(
    actor: str | None,
    subject: str | None,
    kind: str,
    data: dict[str, object],
    seq: int,
    newline: bool,
) -> None:
    (entry,) = link(
        Head(seq - 1, "ab" * 32),
        [Draft(type=kind, actor=actor, subject=subject, data=data)],
        ts_at(seq % 1000),
    )
    line = entry.to_line() + ("\n" if newline else "")
    parsed = json.loads(line)
    assert laid_out(line) == (
        (
            parsed["seq"],
            parsed["ts"],
            parsed["type"],
            parsed["actor"],
            parsed["subject"],
            "",
            "",
            "",
        ),
        parsed["data"],
    )


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace('{"actor":', '{ "actor":', 1),
        lambda t: t.replace('"seq":', '"seq":0', 1),
        lambda t: t.replace(',"type":', ',"kind":', 1),
        lambda t: t.rstrip("\n") + " \n",
        lambda t: t.replace('"data":{', '"data":[{', 1).replace(',"hash":', '],"hash":', 1),
        lambda t: t.replace('"subject":null', '"subject":5', 1),
        lambda t: t[:-20],
    ],
)
def test_a_line_laid_out_otherwise_is_left_to_parsing(edit: Callable[[str], str]) -> None:
    entries, _ = build()
    line = entries[1].to_line() + "\n"
    assert '"subject":null' in line
    assert laid_out(edit(line)) is None
