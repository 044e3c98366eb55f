"""The NDJSON export (SPEC §7): every entry in order, then the checkpoints with ``kind``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from vault.audit.chain import Head
from vault.audit.checkpoint import Checkpoint, checkpoint_from_dict
from vault.audit.entry import Entry, EntryRow, entry_from_row, entry_row_from_dict
from vault.crypto.canonical import DuplicateMember, canonical_json, parse_unique_json
from vault.errors import MalformedExport

CHECKPOINT_KIND = "checkpoint"


def checkpoint_line(checkpoint: Checkpoint) -> str:
    return canonical_json({**checkpoint.to_dict(), "kind": CHECKPOINT_KIND}).decode("utf-8")


def _parse(number: int, line: str) -> object:
    if not line.strip():
        raise MalformedExport(number, "empty line")
    try:
        return parse_unique_json(line)
    except DuplicateMember:
        raise MalformedExport(number, "an object names a member twice") from None
    except ValueError:
        raise MalformedExport(number, "not a JSON object (garbage in the export?)") from None
    except RecursionError:  # json refuses deep nesting this way, not with ValueError
        raise MalformedExport(number, "JSON nested too deeply") from None


def read_checkpoints(lines: Iterable[str]) -> list[Checkpoint]:
    """First pass over an export: collect its well-formed checkpoint lines."""
    found: list[Checkpoint] = []
    for line in lines:
        if '"kind"' not in line and "\\u" not in line:  # "\u006bind" is "kind" too
            continue
        try:
            obj = parse_unique_json(line)
            if isinstance(obj, dict) and obj.get("kind") == CHECKPOINT_KIND:
                found.append(checkpoint_from_dict(obj))
        except (ValueError, RecursionError):
            continue  # the second pass stops at this line and says what is wrong with it
    return found


def read_rows(
    lines: Iterable[str], *, entries_only: bool = False
) -> Iterator[tuple[EntryRow, dict[str, Any]]]:
    """Second pass: yield ``(row, data)`` in file order, ``data`` the entry's parsed ``data``
    object (so the semantic checker need not parse it again); raise ``MalformedExport`` at the
    first bad line. With ``entries_only`` (a range of the file that must hold entry lines
    only), a checkpoint line is a bad line too."""
    seen_checkpoint = False
    for number, line in enumerate(lines, start=1):
        text = line.rstrip("\n")
        obj = _parse(number, text)
        if isinstance(obj, dict) and "kind" in obj:
            if entries_only:
                raise MalformedExport(number, "a checkpoint line among the entries")
            if obj["kind"] != CHECKPOINT_KIND:
                raise MalformedExport(number, f"unknown line kind {obj['kind']!r}")
            try:
                checkpoint_from_dict(obj)
            except ValueError as exc:
                raise MalformedExport(number, str(exc)) from None
            seen_checkpoint = True
            continue
        if seen_checkpoint:
            raise MalformedExport(number, "an entry follows the checkpoints")
        try:
            yield entry_row_from_dict(obj)
        except ValueError as exc:
            raise MalformedExport(number, str(exc)) from None


def _line_object(line: str) -> object:
    try:
        return parse_unique_json(line.rstrip("\n"))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def entry_head(line: str) -> Head:
    """The seq and hash of one entry line, as written (``ValueError`` if it is not one)."""
    obj = _line_object(line)
    if isinstance(obj, dict) and "kind" in obj:
        raise ValueError("a checkpoint line, not an entry")
    row, _ = entry_row_from_dict(obj)
    return Head(row[0], row[7])


def checkpoint_of(line: str) -> Checkpoint | None:
    """The checkpoint of a checkpoint line; ``None`` for an entry line; ``ValueError`` for a
    line that is neither (as ``read_rows`` would find it)."""
    obj = _line_object(line)
    if not isinstance(obj, dict) or "kind" not in obj:
        return None
    if obj["kind"] != CHECKPOINT_KIND:
        raise ValueError("unknown line kind")
    return checkpoint_from_dict(obj)


def read_entries(lines: Iterable[str]) -> Iterator[Entry]:
    """``read_rows`` as ``Entry`` objects."""
    for row, _ in read_rows(lines):
        yield entry_from_row(row)
