"""An export file read in byte ranges, for ``dvault audit verify --file`` on several cores.

A sound export is its entry lines, then its checkpoint lines (SPEC §7). ``layout`` finds where
the checkpoints begin by reading the file from its end; ``cuts`` splits the entry lines into
ranges that begin at line starts, each with the entry line just before it taken as written (its
seq and hash: the head a walk of everything before would reach, if everything before holds);
``lines`` reads one range. Nothing here decides that a file is sound: a range holding anything
but entry lines fails its walk, and then the file is verified in one pass, which alone says
where and why it fails.

Everything reads one *open* file (a file descriptor) at offsets of its own (``pread``), never a
path: the passes of this process and the helpers, which inherit the descriptor, read the same
file even if its name is made to point elsewhere meanwhile, and never move each other's offset.

The helpers of ``vault.ops.verify_helper`` import this module: it needs the standard library and
the pure audit modules only.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass

from vault.audit.chain import GENESIS, Head
from vault.audit.checkpoint import Checkpoint
from vault.audit.export import checkpoint_of, entry_head

# The end of the file is read this much at a time (doubling) until the line before the
# checkpoints is in view: checkpoint lines are ~250 bytes, one per 1,000 entries by default.
TAIL_BLOCK = 1 << 20
READ_BUFFER = 1 << 20

Stamp = tuple[int, int, int, int, int]


def stamp(fd: int) -> Stamp:
    """What changes when the open file is written: device, inode, size, mtime, and ctime (which
    a write sets too, and which, unlike mtime, only the clock can set back)."""
    found = os.fstat(fd)
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


class _At(io.RawIOBase):
    """An open file read from an offset of this reader's own (``pread``)."""

    def __init__(self, fd: int, offset: int) -> None:
        super().__init__()
        self._fd = fd
        self._at = offset

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = os.pread(self._fd, len(buffer), self._at)
        buffer[: len(data)] = data
        self._at += len(data)
        return len(data)


def reader(fd: int, offset: int = 0) -> io.BufferedReader:
    """A buffered reader of the open file ``fd`` from ``offset``; closing it leaves ``fd`` open."""
    return io.BufferedReader(_At(fd, offset), buffer_size=READ_BUFFER)


@dataclass(frozen=True, slots=True)
class Layout:
    entries_end: int  # the offset where the checkpoint lines begin (the size if there are none)
    checkpoints: list[Checkpoint]  # in file order
    stamp: Stamp  # the file when it was laid out


@dataclass(frozen=True, slots=True)
class Range:
    start: int  # offset of its first line
    end: int  # offset just past its last line
    head: Head  # the entry line before ``start`` as written (GENESIS at offset 0)


def layout(fd: int) -> Layout | None:
    """Where the entry lines end and the checkpoint lines begin; ``None`` if the file's end is
    not plainly checkpoint lines after an entry line (a file that is not sound, or not an
    export: the one pass reports it)."""
    before = stamp(fd)
    size = before[2]
    window = TAIL_BLOCK
    while True:
        start = max(0, size - window)
        tail = _read_exactly(fd, start, size - start)
        found = None if tail is None else _tail_checkpoints(tail, start)
        if found is None:
            return None
        end, checkpoints, reached = found
        if reached or start == 0:  # not reached from offset 0: no entry lines at all
            return Layout(end, checkpoints, before)
        window *= 2


def _read_exactly(fd: int, offset: int, size: int) -> bytes | None:
    """``size`` bytes at ``offset``; ``None`` if the file is shorter now (it was written to)."""
    with reader(fd, offset) as handle:
        data = handle.read(size)
    return data if len(data) == size else None


def _tail_checkpoints(tail: bytes, offset: int) -> tuple[int, list[Checkpoint], bool] | None:
    """The checkpoint lines at the end of ``tail`` (the file from ``offset`` on):
    ``(entries_end, checkpoints, reached)``, ``reached`` saying whether the entry line before
    them is in ``tail`` (else they may run on before it, and ``entries_end`` means nothing);
    ``None`` if a line there is neither an entry nor a checkpoint line."""
    spans: list[tuple[int, bytes]] = []
    at = offset
    for piece in tail.split(b"\n"):
        spans.append((at, piece))
        at += len(piece) + 1
    if spans[-1][1] == b"":
        spans.pop()  # after the newline that ends the last line
    if offset > 0 and spans:
        spans.pop(0)  # may begin before ``offset``: maybe part of a line
    checkpoints: list[Checkpoint] = []
    for at, piece in reversed(spans):
        try:
            found = checkpoint_of(piece.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        if found is None:
            checkpoints.reverse()
            return min(at + len(piece) + 1, offset + len(tail)), checkpoints, True
        checkpoints.append(found)
    checkpoints.reverse()
    return 0, checkpoints, False


def cuts(fd: int, entries_end: int, parts: int) -> list[Range] | None:
    """The entry lines ``[0, entries_end)`` in at most ``parts`` ranges of about equal size,
    each beginning at a line start; ``None`` if a line before a cut is not an entry line."""
    if entries_end <= 0 or parts < 1:
        return None
    starts, heads = [0], [GENESIS]
    for part in range(1, parts):
        offset = entries_end * part // parts
        with reader(fd, offset) as handle:
            rest = handle.readline()  # the rest of the line the offset falls in
            line = handle.readline()
        cut = offset + len(rest) + len(line)
        if not line.endswith(b"\n") or cut >= entries_end or cut <= starts[-1]:
            continue
        try:
            head = entry_head(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None
        starts.append(cut)
        heads.append(head)
    ends = [*starts[1:], entries_end]
    return [Range(s, e, h) for s, e, h in zip(starts, ends, heads, strict=True)]


def lines(fd: int, start: int, end: int) -> Iterator[str]:
    """The lines of ``[start, end)`` (``start`` at a line start), decoded as UTF-8 strictly:
    ``UnicodeDecodeError`` for one that is not."""
    with reader(fd, start) as handle:
        at = start
        for line in handle:
            if at >= end:
                return
            at += len(line)
            yield line.decode("utf-8")
