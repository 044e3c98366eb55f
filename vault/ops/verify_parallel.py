"""``dvault audit verify`` of a large stored log on several cores (helper processes).

The seqs ``1..head`` are cut into one range per helper (``python -m vault.ops.verify_helper``):
each walks its range of the chain from the stored entry before it, on its own read-only
connection, while this process reads the whole log once more for the semantic checks, if asked.
If every range holds and they join into one chain (``vault.audit.segments``), the report is the
one a single walk would give. Anything else (a range that fails, a helper that cannot run, a
checkpoint that does not verify) returns ``None``, and the caller walks the whole log in this
process: only that walk names the first bad seq, and it does so exactly as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit import segments
from vault.audit.chain import Head
from vault.audit.checkpoint import Checkpoint
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Report, report, vouched
from vault.storage import audit_repo
from vault.storage.engine import Database
from vault.storage.log_rows import RowSource

# Below this many entries one walk takes well under a second, less than starting helpers.
FROM_ENTRIES = 100_000
HELPER = "vault.ops.verify_helper"
# A helper that has not answered by then is taken as failed (the log is then walked here): far
# beyond what a range takes (a few microseconds an entry), short of hanging for ever.
TIMEOUT_SECONDS = 60.0
TIMEOUT_PER_ENTRY = 50e-6
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
    source = db.row_source()
    pairs = [[seq, digest] for seq, hashes in sorted(anchors.items()) for digest in hashes]
    deadline = time.monotonic() + TIMEOUT_SECONDS + head.seq * TIMEOUT_PER_ENTRY
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for lo, hi in segments.split(head.seq, helpers):
            procs.append(_start(source, lo, hi, pairs))
        checker = semantics.blank() if semantics is not None else None
        if checker is not None:
            for row in audit_repo.stream_rows(db, upto_seq=head.seq):
                checker.feed_row(row)
        found = [_result(proc, deadline) for proc in procs]
    except OSError:
        return None
    finally:
        for proc in procs:
            _stop(proc)
    ranges = [segment for segment in found if segment is not None]
    if len(ranges) != len(found):
        return None
    whole = segments.joined(ranges, head.seq)
    # The helpers read the same rows as this process: the head they reached is the one read here
    # (another database, or another schema through the connection's options, would differ).
    if whole is None or whole[1] != head:
        return None
    return report(whole[0], whole[1], [], True, checker)


def _start(
    source: RowSource, lo: int, hi: int, anchors: list[list[object]]
) -> subprocess.Popen[bytes]:
    request = {
        "source": {"dialect": source.dialect, "address": source.address},
        "lo": lo,
        "hi": hi,
        "anchors": anchors,
    }
    # -I: isolated, so nothing in the working directory or the environment can stand in for
    # the helper's modules (``-m`` would put the working directory first on the path).
    proc = subprocess.Popen(  # noqa: S603 (this interpreter, a module of ours, no shell)
        [sys.executable, "-I", "-m", HELPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
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
