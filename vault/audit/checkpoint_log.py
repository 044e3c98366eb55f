"""The checkpoint file outside the database (``VAULT_CHECKPOINT_LOG``), one JSON line each.

Operators ship it to write-once storage. Lines are appended with ``O_APPEND`` under an exclusive
``flock`` and fsync'd; after a crash between the database commit and the file append, ``catch_up``
appends what the file is missing (it is called at start).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from vault.audit.checkpoint import Checkpoint, checkpoint_from_dict
from vault.audit.export import checkpoint_line


def checkpoint_lines(
    lines: Iterable[str | bytes],
) -> Iterator[tuple[int, Checkpoint | ValueError]]:
    """Each non-blank line of a checkpoint log (or a copy of one) with its number: the
    checkpoint it holds, or why it holds none."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, checkpoint_from_dict(json.loads(line))
        except (ValueError, RecursionError) as exc:
            yield number, exc if isinstance(exc, ValueError) else ValueError("nested too deeply")


class CheckpointLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoints: Iterable[Checkpoint]) -> None:
        lines = "".join(checkpoint_line(cp) + "\n" for cp in checkpoints)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                lines = "\n" + lines  # after a line torn by a crash: not glued onto it
            os.write(fd, lines.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[list[Checkpoint], int]:
        """Every well-formed checkpoint in the file, in file order, and how many other lines
        (blank lines aside) it holds: a line torn by a crash, or an edit. Nothing when the file
        is absent. ``OSError`` if it cannot be read."""
        found: list[Checkpoint] = []
        other = 0
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return found, other
        with handle:
            for _number, parsed in checkpoint_lines(handle):
                if isinstance(parsed, Checkpoint):
                    found.append(parsed)
                else:
                    other += 1
        return found, other

    def catch_up(
        self, stored: Iterable[Checkpoint], signed: Callable[[Checkpoint], bool]
    ) -> tuple[int, int]:
        """Append the database's checkpoints newer than the file's (``stored``) that ``signed``
        accepts (an audit key of the vault signed them): a junk row is not copied. How many
        were appended, and how many left out."""
        stored = list(stored)
        copied = [checkpoint for checkpoint in stored if signed(checkpoint)]
        self.append(copied)
        return len(copied), len(stored) - len(copied)
