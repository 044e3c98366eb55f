"""``dvault audit verify --file`` with helper processes (``verify_file_in_ranges``): a sound
export is verified in byte ranges and reported exactly as the two passes over its lines report
it; every bad export of ``test_audit_export`` is left to those two passes, which alone name the
first bad seq. Real files, real helper processes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import cli_env, dvault
from tests.unit.test_audit_export import BAD_VECTORS, KEY, build_log, export_lines, lookup
from vault.audit.chain import Head
from vault.audit.checkpoint import make_checkpoint
from vault.audit.entry import EntryRow
from vault.audit.semantics import SemanticChecker
from vault.crypto.keys import public_jwk
from vault.ops.audit import verify_export
from vault.ops.verify_parallel import FROM_BYTES, helpers_for_file, verify_file_in_ranges


def write(path: Path, lines: list[str]) -> Path:
    path.write_bytes("".join(lines).encode("utf-8"))
    return path


def verify_path(path: Path, *args: Any, **kwargs: Any) -> Any:
    """``verify_export`` of the file at ``path``, opened here as the CLI opens it."""
    with path.open("rb") as handle:
        return verify_export(handle.fileno(), *args, **kwargs)


def one_pass(path: Path, semantics: bool = False) -> Any:
    return verify_path(path, lookup, trusted=[], semantics=SemanticChecker() if semantics else None)


def in_ranges(path: Path, helpers: int, semantics: bool = False) -> Any:
    with path.open("rb") as handle:
        return verify_file_in_ranges(
            handle.fileno(),
            lookup,
            trusted=[],
            semantics=SemanticChecker() if semantics else None,
            helpers=helpers,
        )


@pytest.mark.parametrize("helpers", [1, 2, 3, 7])
@pytest.mark.parametrize("semantics", [False, True])
def test_a_sound_export_is_verified_by_the_helpers(
    tmp_path: Path, helpers: int, semantics: bool
) -> None:
    entries, checkpoints = build_log(60)
    path = write(tmp_path / "export.jsonl", export_lines(entries, checkpoints))
    whole = one_pass(path, semantics)
    assert whole.entries == 60
    found = in_ranges(path, helpers, semantics)
    assert found is not None, "the helpers did not answer"
    assert found == whole
    assert verify_path(path, lookup, trusted=[], helpers=helpers) == one_pass(path)


def test_the_same_story_with_its_violations_is_reported_like_one_pass(tmp_path: Path) -> None:
    """The log of ``test_audit_export`` uses and revokes jtis nobody issued: its chain holds,
    its meaning does not; the semantic report is the same from the helpers' path."""
    entries, checkpoints = build_log(60)
    path = write(tmp_path / "export.jsonl", export_lines(entries, checkpoints))
    whole = one_pass(path, semantics=True)
    assert not whole.ok
    assert whole.semantic_total > 0
    assert in_ranges(path, 3, semantics=True) == whole


def test_exports_without_a_final_newline_or_with_crlf_lines(tmp_path: Path) -> None:
    entries, checkpoints = build_log(30)
    bare = [line.rstrip("\n") for line in export_lines(entries, checkpoints)]
    for name, text in {
        "no-final-newline": "\n".join(bare),
        "crlf": "".join(line + "\r\n" for line in bare),
        "entries-only": "".join(line + "\n" for line in bare[:30]),
    }.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8", newline="")
        whole = one_pass(path)
        assert whole.ok, name
        assert in_ranges(path, 3) == whole, name


def test_an_export_without_entries_is_left_to_the_one_pass(tmp_path: Path) -> None:
    _, checkpoints = build_log(5)
    path = write(tmp_path / "x", export_lines([], checkpoints))
    assert in_ranges(path, 2) is None
    assert write(tmp_path / "empty", []).stat().st_size == 0
    assert in_ranges(tmp_path / "empty", 2) is None


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n\n"])
def test_an_empty_export_is_not_a_verified_log(tmp_path: Path, content: bytes) -> None:
    """A download that failed leaves an empty file: it is no vault's log (init writes the first
    entries), so it fails at seq 1 rather than passing as "0 entries, ok"."""
    path = tmp_path / "audit.jsonl"
    path.write_bytes(content)
    for helpers in (0, 2):
        found = verify_path(path, lookup, trusted=[], helpers=helpers)
        assert found.ok is False
        assert found.entries == 0
        assert found.first_error is not None
        assert found.first_error.seq == 1


@pytest.mark.parametrize("name", BAD_VECTORS.keys())
def test_a_bad_export_is_left_to_the_one_pass(tmp_path: Path, name: str) -> None:
    vector = BAD_VECTORS[name]
    entries, checkpoints = build_log()
    lines = vector.mutate(export_lines(entries, checkpoints))
    path = write(tmp_path / "bad.jsonl", lines)
    whole = one_pass(path)
    assert whole.ok is False
    assert whole.first_error is not None
    assert whole.first_error.seq == vector.first_error_seq
    assert in_ranges(path, 3) is None
    assert verify_path(path, lookup, trusted=[], helpers=3) == whole


@pytest.mark.parametrize("where", [1, 29, 30, 31, 59])
def test_a_deleted_or_changed_line_anywhere_is_left_to_the_one_pass(
    tmp_path: Path, where: int
) -> None:
    """Wherever the cut falls, a range cannot hide a fault at its start or its end."""
    entries, checkpoints = build_log(60)
    good = export_lines(entries, checkpoints)
    deleted = write(tmp_path / "deleted", good[: where - 1] + good[where:])
    changed_lines = list(good)
    changed_lines[where - 1] = changed_lines[where - 1].replace('"n":', '"n":1', 1)
    changed = write(tmp_path / "changed", changed_lines)
    for path in (deleted, changed):
        whole = one_pass(path)
        assert whole.first_error is not None
        assert whole.first_error.seq == where
        for helpers in (2, 3, 5):
            assert in_ranges(path, helpers) is None


class _Rewriter(SemanticChecker):
    """A checker that sets the export's modification time while the helpers read it, as a
    write to it would: what this process read may not be what they read."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def blank(self) -> SemanticChecker:
        return type(self)(self.path)

    def feed_row(self, row: EntryRow, data: Any = None) -> None:
        self.write(row[0])
        super().feed_row(row, data)

    def write(self, seq: int) -> None:
        os.utime(self.path, ns=(1, 1))


class _QuietRewriter(_Rewriter):
    """A checker that writes the export's bytes again while the helpers read it, then sets its
    modification time back, as a writer covering its tracks would: only ctime tells."""

    def write(self, seq: int) -> None:
        if seq != 1:
            return
        before = self.path.stat()
        time.sleep(0.05)  # past the file system's clock tick
        with self.path.open("r+b") as handle:  # the same bytes, in place: the size holds
            same = handle.read()
            handle.seek(0)
            handle.write(same)
        os.utime(self.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = self.path.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


@pytest.mark.parametrize("rewriter", [_Rewriter, _QuietRewriter])
def test_a_file_changed_during_the_walk_is_left_to_the_one_pass(
    tmp_path: Path, rewriter: type[_Rewriter]
) -> None:
    entries, checkpoints = build_log(20)
    path = write(tmp_path / "export.jsonl", export_lines(entries, checkpoints))
    with path.open("rb") as handle:
        found = verify_file_in_ranges(
            handle.fileno(), lookup, trusted=[], semantics=rewriter(path), helpers=2
        )
    assert found is None


@pytest.mark.parametrize("helpers", [0, 2])
def test_the_file_opened_is_the_file_verified_whatever_its_name_points_to(
    tmp_path: Path, helpers: int
) -> None:
    """Once open, the export is read through that open file by every pass and every helper: a
    name made to point at another file meanwhile (here, before the walk) changes nothing."""
    entries, checkpoints = build_log(60)
    path = write(tmp_path / "export.jsonl", export_lines(entries, checkpoints))
    sound = one_pass(path)
    assert sound.ok
    other = write(
        tmp_path / "other.jsonl", BAD_VECTORS["deleted"].mutate(export_lines(entries, checkpoints))
    )
    with path.open("rb") as handle:
        os.replace(other, path)
        assert not one_pass(path).ok  # the name now says another story
        found = verify_export(handle.fileno(), lookup, trusted=[], helpers=helpers)
        if helpers:  # the helpers' own walk, not the one pass it would fall back to
            walked = verify_file_in_ranges(
                handle.fileno(), lookup, trusted=[], semantics=None, helpers=helpers
            )
            assert walked == sound
    assert found == sound


def test_helpers_for_an_export() -> None:
    assert helpers_for_file(FROM_BYTES - 1, None) == 0
    cpus = helpers_for_file(FROM_BYTES, None)
    assert cpus == 0 or cpus >= 2
    assert helpers_for_file(10, 3) == 3
    assert helpers_for_file(FROM_BYTES, None, semantics=True) == (cpus - 1 if cpus else 0)
    assert helpers_for_file(10**12, 1) == 0


@pytest.mark.parametrize("semantics", [False, True])
@pytest.mark.parametrize("bad", [False, True])
def test_the_cli_reports_the_same_with_jobs(tmp_path: Path, bad: bool, semantics: bool) -> None:
    """``dvault audit verify --file --jobs N`` prints what one process prints (the story of
    ``build_log`` is one of unknown jtis: with the semantic checks, it fails on meaning)."""
    entries, checkpoints = build_log(60)
    lines = export_lines(entries, checkpoints)
    if bad:
        lines = BAD_VECTORS["deleted"].mutate(lines)
    path = write(tmp_path / "export.jsonl", lines)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [public_jwk(KEY.public_key, KEY.kid)]}))
    env = cli_env(tmp_path / "home")
    command = ["audit", "verify", "--file", str(path), "--jwks", str(keys)]
    if not semantics:
        command.append("--no-semantics")
    runs = [dvault(env, *command, *jobs) for jobs in (["--jobs", "1"], ["--jobs", "3"], [])]
    for run in runs:
        assert run.returncode == (1 if bad or semantics else 0), run.stderr
        assert (run.stdout, run.stderr) == (runs[0].stdout, runs[0].stderr)
    if bad:
        assert "verification failed at seq 4: " in runs[0].stderr
    elif semantics:
        assert "verification failed at seq 1: log meaning broken" in runs[0].stderr
    else:
        assert runs[0].stdout.startswith("ok: 60 entries")


def test_a_line_that_is_not_utf8_is_named_at_its_own_seq(tmp_path: Path) -> None:
    """A byte that is not UTF-8 in line 21 fails entry 21, not the block the file was read in."""
    entries, checkpoints = build_log(60)
    data = "".join(export_lines(entries, checkpoints)).encode("utf-8")
    lines = data.split(b"\n")
    lines[20] = lines[20].replace(b'"n":', b'"n\xff":', 1)
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\n".join(lines))
    for helpers in (0, 3):
        report = verify_path(path, lookup, trusted=[], helpers=helpers)
        assert report.entries == 20
        assert report.first_error is not None
        assert report.first_error.seq == 21
        assert "line 21" in report.first_error.reason


def test_an_export_that_is_not_a_regular_file_is_refused_in_one_line(tmp_path: Path) -> None:
    """The export is read at offsets and more than once: a pipe (here a FIFO no one writes to,
    which would block an open for ever) is refused before it is opened."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [public_jwk(KEY.public_key, KEY.kid)]}))
    fifo = tmp_path / "export.fifo"
    os.mkfifo(fifo)
    run = dvault(
        cli_env(tmp_path / "home"), "audit", "verify", "--file", str(fifo), "--jwks", str(keys)
    )
    assert run.returncode == 1, run.stderr
    (line,) = run.stderr.splitlines()
    assert "is not a regular file" in line


@pytest.mark.parametrize("data", ['{"b":1,"a":2}', '{"a":1,"a":2}', '{"a": 1}', "[1]"])
def test_an_entry_a_key_holder_signed_over_is_refused_by_both_paths(
    tmp_path: Path, data: str
) -> None:
    """Entry 3 holds a data text no vault writes; every later hash is recomputed over the text
    as it stands and the checkpoints are signed again (a signer that checked nothing: a vault
    older than the check, say, over a database forged before it signed). The chain and the
    signatures hold; the export's reader spells data canonically, so the entry is not what its
    hash says, on the helpers' path as in the one pass."""
    entries, checkpoints = build_log(60)
    forged = entries[:2]
    prev = entries[1].hash
    for index, entry in enumerate(entries[2:], start=2):
        changed = dataclasses.replace(
            entry, data_json=data if index == 2 else entry.data_json, prev=prev
        )
        prev = changed.computed_hash()
        forged.append(dataclasses.replace(changed, hash=prev))
    signed = [
        make_checkpoint(Head(cp.seq, forged[cp.seq - 1].hash), cp.ts, KEY) for cp in checkpoints
    ]
    path = write(tmp_path / "export.jsonl", export_lines(forged, signed))
    whole = one_pass(path)
    assert not whole.ok
    assert whole.first_error.seq == 3
    assert in_ranges(path, 3) is None
    assert verify_path(path, lookup, trusted=[], helpers=3) == whole
