"""``dvault audit verify`` of a large log on several cores (helper processes).

The seqs ``1..head`` of the stored log are cut into one range per helper (``python -m
vault.ops.verify_helper``): each walks its range of the chain from the stored entry before it, on
its own read-only connection, while this process reads the whole log once more for the semantic
checks, if asked. An export file (``--file``) is cut likewise into byte ranges of its entry lines
(``vault.ops.export_ranges``), each walked from the entry line before it. If every range holds
and they join into one chain (``vault.audit.segments``), the report is the one a single walk
would give. Anything else (a range that fails, a helper that cannot run, a checkpoint that does
not verify, a file changed meanwhile) returns ``None``, and the caller walks the whole log in
this process: only that walk names the first bad seq, and it does so exactly as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from _json import scanstring  # the C scanner of json.decoder: a JSON string from its quote on
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit import segments
from vault.audit.chain import Head
from vault.audit.checkpoint import Checkpoint
from vault.audit.entry import EntryRow
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Report, report, vouched
from vault.crypto.canonical import parse_unique_json
from vault.ops import export_ranges
from vault.storage import audit_repo
from vault.storage.engine import Database

# Below this many entries one walk takes well under a second, less than starting helpers.
FROM_ENTRIES = 100_000
FROM_BYTES = 32 << 20  # an export of about 100,000 entries
HELPER = "vault.ops.verify_helper"
# A helper that has not answered by then is taken as failed (the log is then walked here): far
# beyond what a range takes (a few microseconds an entry), short of hanging for ever.
TIMEOUT_SECONDS = 60.0
TIMEOUT_PER_ENTRY = 50e-6
TIMEOUT_PER_BYTE = TIMEOUT_PER_ENTRY / 100  # an export line is a few hundred bytes
MAX_ANSWER = 4096


def helpers_for(entries: int, asked: int | None, *, semantics: bool = False) -> int:
    """How many helpers to start for a log of ``entries``: ``asked`` if given (0 or 1: none),
    else, for a log of ``FROM_ENTRIES`` or more, one per CPU this process may run on; with the
    semantic checks one fewer, since this process is busy with them meanwhile (measured: on two
    CPUs, one helper beside the semantic pass is faster than two)."""
    if asked is not None:
        return asked if asked > 1 else 0
    if entries < FROM_ENTRIES:
        return 0
    return _cpus(semantics)


def helpers_for_file(size: int, asked: int | None, *, semantics: bool = False) -> int:
    """``helpers_for`` an export file of ``size`` bytes: from ``FROM_BYTES`` on."""
    if asked is not None:
        return asked if asked > 1 else 0
    if size < FROM_BYTES:
        return 0
    return _cpus(semantics)


def _cpus(semantics: bool) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cpus or cpus < 2:
        return 0
    return cpus - 1 if semantics else cpus


def verify_in_ranges(
    db: Database,
    checkpoints: list[Checkpoint],
    head: Head,
    lookup: Callable[[str], Ed25519PublicKey | None],
    *,
    trusted: list[Checkpoint],
    semantics: SemanticChecker | None,
    helpers: int,
) -> Report | None:
    """The report of a sound log up to ``head`` (as this process read it), found with
    ``helpers`` processes; ``None`` if the log is not sound or the helpers could not say (see
    the module's docstring). ``semantics`` itself is left untouched: a blank copy of it does the
    work here."""
    anchors, failures = vouched(checkpoints, trusted, lookup)
    if failures or any(seq > head.seq for seq in anchors):
        return None
    rows = db.row_source()
    source = {"dialect": rows.dialect, "address": rows.address}
    pairs = _pairs(anchors)
    requests = [
        {"source": source, "lo": lo, "hi": hi, "anchors": pairs}
        for lo, hi in segments.split(head.seq, helpers)
    ]
    checker = semantics.blank() if semantics is not None else None

    def meaning() -> None:
        if checker is not None:
            for row in audit_repo.stream_rows(db, upto_seq=head.seq):
                checker.feed_row(row)

    found = _run(requests, head.seq * TIMEOUT_PER_ENTRY, meaning)
    whole = None if found is None else segments.joined(found, head.seq)
    # The helpers read the same rows as this process: the head they reached is the one read here
    # (another database, or another schema through the connection's options, would differ).
    if whole is None or whole[1] != head:
        return None
    return report(whole[0], whole[1], [], True, checker)


def verify_file_in_ranges(
    fd: int,
    lookup: Callable[[str], Ed25519PublicKey | None],
    *,
    trusted: list[Checkpoint],
    semantics: SemanticChecker | None,
    helpers: int,
) -> Report | None:
    """``verify_in_ranges`` for an export file open as ``fd``, which the helpers inherit: they
    walk byte ranges of its entry lines (``export_ranges``); ``None`` unless the file is sound
    and was not written to meanwhile."""
    try:
        laid = export_ranges.layout(fd)
        ranges = None if laid is None else export_ranges.cuts(fd, laid.entries_end, helpers)
    except OSError:
        return None
    if laid is None or not ranges:
        return None
    anchors, failures = vouched(laid.checkpoints, trusted, lookup)
    if failures:
        return None
    pairs = _pairs(anchors)
    requests = [
        {
            "fd": fd,
            "from": part.start,
            "to": part.end,
            "start": [part.head.seq, part.head.hash],
            "anchors": pairs,
        }
        for part in ranges
    ]
    checker = semantics.blank() if semantics is not None else None

    def meaning() -> None:
        if checker is not None:
            for text in export_ranges.lines(fd, 0, laid.entries_end):
                entry_meaning(checker, text)

    found = _run(requests, laid.entries_end * TIMEOUT_PER_BYTE, meaning, keep=(fd,))
    whole = None if found is None else segments.joined(found, found[-1].hi)
    if whole is None or any(seq > whole[1].seq for seq in anchors):
        return None
    try:
        if export_ranges.stamp(fd) != laid.stamp:
            return None  # written to meanwhile: the helpers may have read other bytes
    except OSError:
        return None
    return report(whole[0], whole[1], [], True, checker)


def entry_meaning(checker: SemanticChecker, line: str) -> None:
    """Feed the semantic checker one entry line that a helper's walk accepts (so its members
    are there, with their types, each named once): its meaning needs the members, not the
    canonical bytes. A line laid out as ``entry_line`` writes one is read where its members
    stand (``laid_out``), any other is parsed whole; both give the same members for a line the
    walk accepts. What is read here counts only if the helpers find the file sound."""
    found = laid_out(line)
    if found is None:
        obj = parse_unique_json(line)
        row = (obj["seq"], obj["ts"], obj["type"], obj["actor"], obj["subject"], "", "", "")
        found = row, obj["data"]
    checker.feed_row(*found)


def laid_out(line: str) -> tuple[EntryRow, Any] | None:
    """The members a semantic check reads, of a line laid out as ``entry_line`` writes one
    (``None`` if it plainly is not): the actor before ``data``, ``data`` up to the hash member,
    and after the hash and prev members (64 hex digits each), the seq and three strings."""
    try:
        if line.startswith('{"actor":null,"data":'):
            actor, start = None, 21
        elif line.startswith('{"actor":"'):
            actor, end = scanstring(line, 10)
            if not line.startswith(',"data":', end):
                return None
            start = end + 8
        else:
            return None
        cut = line.rfind(',"hash":"')
        if (
            cut < start
            or not line.startswith('","prev":"', cut + 73)
            or not line.startswith('","seq":', cut + 147)
        ):
            return None
        comma = line.index(',"subject":', cut + 155)
        digits = line[cut + 155 : comma]
        if not (digits.isascii() and digits.isdigit()) or digits.startswith("0"):
            return None
        at = comma + 11
        subject: str | None = None
        if line.startswith("null", at):
            at += 4
        elif line.startswith('"', at):
            subject, at = scanstring(line, at + 1)
        else:
            return None
        if not line.startswith(',"ts":"', at):
            return None
        ts, at = scanstring(line, at + 7)
        if not line.startswith(',"type":"', at):
            return None
        kind, at = scanstring(line, at + 9)
        if line[at:] not in ("}", "}\n"):
            return None
        data = json.loads(line[start:cut])
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return (int(digits), ts, kind, actor, subject, "", "", ""), data


def _pairs(anchors: dict[int, list[str]]) -> list[list[object]]:
    return [[seq, digest] for seq, hashes in sorted(anchors.items()) for digest in hashes]


def _run(
    requests: list[dict[str, Any]],
    timeout: float,
    meanwhile: Callable[[], None],
    keep: tuple[int, ...] = (),
) -> list[segments.Segment] | None:
    """Start a helper for each request (with the file descriptors ``keep`` open in it), run
    ``meanwhile`` here, then collect their segments; ``None`` if any helper failed, answered
    nonsense, or ran past the deadline, or if ``meanwhile`` failed (it reads what a sound log
    holds: anything else is not one)."""
    deadline = time.monotonic() + TIMEOUT_SECONDS + timeout
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for request in requests:
            procs.append(_start(request, keep))
        meanwhile()
        found = [_result(proc, deadline) for proc in procs]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    finally:
        for proc in procs:
            _stop(proc)
    ranges = [segment for segment in found if segment is not None]
    return ranges if len(ranges) == len(found) else None


def _start(request: dict[str, Any], keep: tuple[int, ...]) -> subprocess.Popen[bytes]:
    # -I: isolated, so nothing in the working directory or the environment can stand in for
    # the helper's modules (``-m`` would put the working directory first on the path).
    proc = subprocess.Popen(  # noqa: S603 (this interpreter, a module of ours, no shell)
        [sys.executable, "-I", "-m", HELPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        pass_fds=keep,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(request).encode("utf-8"))
        proc.stdin.close()
    except OSError:
        _stop(proc)
        raise
    return proc


def _result(proc: subprocess.Popen[bytes], deadline: float) -> segments.Segment | None:
    """The helper's segment, or ``None`` if it failed, said nothing sensible, or ran past the
    deadline. Its answer is one short line, which the pipe holds until it is read."""
    assert proc.stdout is not None
    try:
        code = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return None
    if code != 0:
        return None
    try:
        return segments.segment_from_dict(json.loads(proc.stdout.read(MAX_ANSWER)))
    except ValueError:
        return None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    if proc.stdin is not None:
        proc.stdin.close()
