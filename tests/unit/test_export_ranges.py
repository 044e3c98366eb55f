"""vault.ops.export_ranges: where an export's entry lines end, and cutting them into ranges.

Real files in a temporary folder; the exports are those of ``test_audit_export`` (fixed keys).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_audit_export import build_log, export_lines
from vault.audit.chain import GENESIS, Head, link
from vault.audit.entry import Draft
from vault.ops import export_ranges
from vault.ops.export_ranges import Layout, Range

_OPEN: list[int] = []


@pytest.fixture(autouse=True)
def _close_opened() -> Iterator[None]:
    yield
    while _OPEN:
        os.close(_OPEN.pop())


def opened(path: Path) -> int:
    """``path`` open for reading (``export_ranges`` reads open files), closed after the test."""
    _OPEN.append(os.open(path, os.O_RDONLY))
    return _OPEN[-1]


def write(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(lines).encode("utf-8"))
    return path


def size_of(lines: list[str]) -> int:
    return len("".join(lines).encode("utf-8"))


def laid_out(path: Path) -> Layout:
    found = export_ranges.layout(opened(path))
    assert found is not None
    return found


def test_layout_finds_the_checkpoints_after_the_entries(tmp_path: Path) -> None:
    entries, checkpoints = build_log(40)
    lines = export_lines(entries, checkpoints)
    path = write(tmp_path / "x.jsonl", lines)
    found = laid_out(path)
    assert found.checkpoints == checkpoints
    assert found.entries_end == size_of(lines[:40])
    assert found.stamp == export_ranges.stamp(opened(path))


def test_layout_reads_back_beyond_its_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a block smaller than the checkpoint lines, the window doubles until it sees the
    entry line before them."""
    entries, checkpoints = build_log(40)
    lines = export_lines(entries, checkpoints)
    path = write(tmp_path / "x.jsonl", lines)
    monkeypatch.setattr(export_ranges, "TAIL_BLOCK", 7)
    found = laid_out(path)
    assert found.checkpoints == checkpoints
    assert found.entries_end == size_of(lines[:40])


def test_layout_of_files_without_checkpoints_or_entries(tmp_path: Path) -> None:
    entries, checkpoints = build_log(5)
    only_entries = export_lines(entries, [])
    found = laid_out(write(tmp_path / "a", only_entries))
    assert (found.entries_end, found.checkpoints) == (size_of(only_entries), [])
    found = laid_out(write(tmp_path / "b", export_lines([], checkpoints)))
    assert (found.entries_end, found.checkpoints) == (0, checkpoints)
    found = laid_out(write(tmp_path / "c", []))
    assert (found.entries_end, found.checkpoints) == (0, [])


def test_layout_of_a_last_line_without_its_newline(tmp_path: Path) -> None:
    entries, checkpoints = build_log(5)
    lines = export_lines(entries, checkpoints)
    path = write(tmp_path / "x", [*lines[:-1], lines[-1].rstrip("\n")])
    found = laid_out(path)
    assert found.checkpoints == checkpoints
    assert found.entries_end == size_of(lines[:5])
    bare = export_lines(entries, [])
    path = write(tmp_path / "y", [*bare[:-1], bare[-1].rstrip("\n")])
    assert laid_out(path).entries_end == path.stat().st_size


@pytest.mark.parametrize(
    "tail",
    ["garbage\n", "\n", '{"kind":"note"}\n', '{"kind":"checkpoint","seq":1}\n', "\xff\n"],
    ids=["garbage", "empty-line", "unknown-kind", "bad-checkpoint", "not-utf8"],
)
def test_a_tail_that_is_not_plainly_checkpoints_is_left_to_the_one_pass(
    tmp_path: Path, tail: str
) -> None:
    entries, checkpoints = build_log(5)
    path = tmp_path / "x"
    data = "".join(export_lines(entries, checkpoints)).encode("utf-8")
    path.write_bytes(data + (b"\xff\n" if tail == "\xff\n" else tail.encode("utf-8")))
    assert export_ranges.layout(opened(path)) is None


def test_cuts_partition_the_entry_lines_at_line_starts(tmp_path: Path) -> None:
    entries, checkpoints = build_log(50)
    lines = export_lines(entries, checkpoints)
    path = write(tmp_path / "x", lines)
    end = laid_out(path).entries_end
    starts = {0}
    at = 0
    for line in lines[:50]:
        at += len(line.encode("utf-8"))
        starts.add(at)
    for parts in (1, 2, 3, 7, 49, 50, 200):
        ranges = export_ranges.cuts(opened(path), end, parts)
        assert ranges is not None
        assert 1 <= len(ranges) <= min(parts, 50)
        assert ranges[0].start == 0
        assert ranges[0].head == GENESIS
        assert ranges[-1].end == end
        for before, after in itertools.pairwise(ranges):
            assert before.end == after.start
        walked: list[tuple[int, str]] = []
        for part in ranges:
            assert part.start in starts
            assert part.start < part.end
            got = list(export_ranges.lines(opened(path), part.start, part.end))
            if part.start:
                seq = walked[-1][0]
                assert part.head == Head(seq, entries[seq - 1].hash)
            walked.extend((int(line.split('"seq":')[1].split(",")[0]), line) for line in got)
        assert [line for _, line in walked] == lines[:50]


def test_cuts_of_nothing(tmp_path: Path) -> None:
    path = write(tmp_path / "x", [])
    assert export_ranges.cuts(opened(path), 0, 3) is None
    entries, _ = build_log(5)
    path = write(tmp_path / "y", export_lines(entries, []))
    assert export_ranges.cuts(opened(path), path.stat().st_size, 0) is None


def test_a_cut_after_a_line_that_is_not_an_entry_is_refused(tmp_path: Path) -> None:
    entries, _ = build_log(20)
    lines = export_lines(entries, [])
    lines[10] = "garbage\n"
    path = write(tmp_path / "x", lines)
    size = path.stat().st_size
    found = [export_ranges.cuts(opened(path), size, parts) for parts in range(2, 21)]
    assert None in found  # a cut fell after the garbage line
    assert all(ranges is None or all(isinstance(r, Range) for r in ranges) for ranges in found)


def test_lines_refuses_text_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b'{"a":1}\n\xff\xfe\n')
    with pytest.raises(UnicodeDecodeError):
        list(export_ranges.lines(opened(path), 0, path.stat().st_size))
    assert list(export_ranges.lines(opened(path), 0, 8)) == ['{"a":1}\n']


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(0, 300), min_size=1, max_size=30), parts=st.integers(1, 9))
def test_lines_of_the_cut_ranges_are_the_file_property(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], parts: int
) -> None:
    """Whatever the lines' lengths, the ranges' lines are the file's lines, once each, in
    order, and each range's head is the entry line before it."""
    drafts = [
        Draft(type="t.note", actor=None, subject=None, data={"pad": "é" * n}) for n in lengths
    ]
    entries = link(GENESIS, drafts, "2026-11-27T17:00:00.000000Z")
    lines = [entry.to_line() + "\n" for entry in entries]
    path = write(tmp_path_factory.mktemp("ranges") / "x", lines)
    ranges = export_ranges.cuts(opened(path), path.stat().st_size, parts)
    assert ranges is not None
    assert len(ranges) <= parts
    got = [line for r in ranges for line in export_ranges.lines(opened(path), r.start, r.end)]
    assert got == lines
    heads = [GENESIS]
    for r in ranges[:-1]:
        last = list(export_ranges.lines(opened(path), r.start, r.end))[-1]
        heads.append(next(Head(e.seq, e.hash) for e in entries if e.to_line() + "\n" == last))
    assert [r.head for r in ranges] == heads
