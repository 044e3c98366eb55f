"""vault.audit.verify.verify_log: one report on chain, signed checkpoints, a saved checkpoint."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.chain import GENESIS, Head, link
from vault.audit.checkpoint import Checkpoint, checkpoint_from_dict, make_checkpoint
from vault.audit.entry import GENESIS_HASH, Draft, Entry
from vault.audit.export import read_entries
from vault.audit.semantics import SemanticChecker
from vault.audit.verify import Failure, Report, verify_log
from vault.clock import format_ts
from vault.crypto.keys import KeyPair, generate
from vault.errors import AuditError
from vault.ops.audit import MAX_RELOADS, reloading

T0 = datetime(2026, 11, 27, 17, 0, 0, tzinfo=UTC)
N = 10
CHECKPOINT_SEQS = (4, N)

AUDIT = generate("audit")
OTHER_AUDIT = generate("audit")


def ts_at(i: int) -> str:
    return format_ts(T0 + timedelta(seconds=i))


def draft(i: int, tag: str = "") -> Draft:
    return Draft(
        type="token.used" if i % 2 else "token.issued",
        actor=f"p{i % 3}",
        subject=f"s{i % 4}",
        data={"jti": f"j{i}{tag}", "outcome": "allowed"},
    )


def extend(entries: Sequence[Entry], n: int, tag: str = "") -> list[Entry]:
    out = list(entries)
    for _ in range(n):
        head = Head(out[-1].seq, out[-1].hash) if out else GENESIS
        out.extend(link(head, [draft(head.seq + 1, tag)], ts_at(head.seq + 1)))
    return out


def checkpoints_for(
    entries: Sequence[Entry], seqs: Sequence[int], key: KeyPair = AUDIT
) -> list[Checkpoint]:
    return [make_checkpoint(Head(s, entries[s - 1].hash), ts_at(100 + s), key) for s in seqs]


def lookup_for(*pairs: KeyPair):
    keys: dict[str, Ed25519PublicKey] = {pair.kid: pair.public_key for pair in pairs}
    return keys.get


LOOKUP = lookup_for(AUDIT)


def rewrite_from(entries: Sequence[Entry], k: int, **changes: Any) -> list[Entry]:
    out = list(entries[: k - 1])
    prev = out[-1].hash if out else GENESIS_HASH
    for entry in entries[k - 1 :]:
        changed = dataclasses.replace(entry, prev=prev, **(changes if entry.seq == k else {}))
        changed = dataclasses.replace(changed, hash=changed.computed_hash())
        out.append(changed)
        prev = changed.hash
    return out


@pytest.fixture
def log() -> tuple[list[Entry], list[Checkpoint]]:
    entries = extend([], N)
    return entries, checkpoints_for(entries, CHECKPOINT_SEQS)


# --- good logs ---------------------------------------------------------------------------------


def test_ok_report(log):
    entries, checkpoints = log
    report = verify_log(entries, checkpoints, LOOKUP)
    assert report == Report(
        ok=True,
        entries=N,
        head_seq=N,
        head_hash=entries[-1].hash,
        checkpoints_ok=True,
        first_error=None,
    )
    assert report.to_dict() == {
        "ok": True,
        "entries": N,
        "head_seq": N,
        "head_hash": entries[-1].hash,
        "checkpoints_ok": True,
        "first_error": None,
    }


def test_empty_log():
    report = verify_log([], [], LOOKUP)
    assert report == Report(
        ok=True,
        entries=0,
        head_seq=0,
        head_hash="0" * 64,
        checkpoints_ok=True,
        first_error=None,
    )


def test_checkpoint_of_the_empty_log():
    report = verify_log([], [make_checkpoint(GENESIS, ts_at(0), AUDIT)], LOOKUP)
    assert report.ok
    assert report.checkpoints_ok


def test_no_checkpoints_is_still_ok(log):
    entries, _ = log
    assert verify_log(entries, [], LOOKUP).ok


def test_streams_generators_once(log):
    entries, checkpoints = log
    consumed: list[int] = []

    def stream() -> Iterator[Entry]:
        for entry in entries:
            consumed.append(entry.seq)
            yield entry

    report = verify_log(stream(), iter(checkpoints), LOOKUP)
    assert report.ok
    assert consumed == list(range(1, N + 1))


def test_keyring_with_a_retired_key(log):
    entries, _ = log
    checkpoints = [
        *checkpoints_for(entries, [4], OTHER_AUDIT),
        *checkpoints_for(entries, [N], AUDIT),
    ]
    assert verify_log(entries, checkpoints, lookup_for(OTHER_AUDIT, AUDIT)).ok


# --- tampered entries --------------------------------------------------------------------------


def _modified(entries: list[Entry]) -> list[Entry]:
    entries[4] = dataclasses.replace(entries[4], actor="intruder")
    return entries


def _deleted(entries: list[Entry]) -> list[Entry]:
    del entries[4]
    return entries


def _swapped(entries: list[Entry]) -> list[Entry]:
    entries[4], entries[5] = entries[5], entries[4]
    return entries


def _inserted(entries: list[Entry]) -> list[Entry]:
    (forged,) = link(Head(4, entries[3].hash), [draft(99, "forged")], ts_at(5))
    entries.insert(4, forged)
    return entries


def _duplicated(entries: list[Entry]) -> list[Entry]:
    entries.insert(5, entries[4])
    return entries


def _truncated(entries: list[Entry]) -> list[Entry]:
    return entries[:7]


def _rewritten(entries: list[Entry]) -> list[Entry]:
    return rewrite_from(entries, 3, subject="someone else")


def _rewritten_after_last_checkpoint_but_before_head(entries: list[Entry]) -> list[Entry]:
    return rewrite_from(entries, 6, subject="someone else")


def _bad_ts(entries: list[Entry]) -> list[Entry]:
    return rewrite_from(entries, 5, ts="2026-11-27T17:00:05Z")


def _non_hex_hash(entries: list[Entry]) -> list[Entry]:
    entries[4] = dataclasses.replace(entries[4], hash=entries[4].hash.upper())
    return entries


# name: (tamper, first bad seq, entries accepted before it, checkpoints_ok)
TAMPERS = {
    "modified": (_modified, 5, 4, True),
    "deleted": (_deleted, 5, 4, True),
    "swapped": (_swapped, 5, 4, True),
    "inserted": (_inserted, 6, 5, True),
    "duplicate-seq": (_duplicated, 6, 5, True),
    "truncated-tail": (_truncated, 8, 7, False),
    "rewritten-recomputed": (_rewritten, 4, 4, False),
    "rewritten-after-checkpoint": (_rewritten_after_last_checkpoint_but_before_head, N, N, False),
    "bad-ts": (_bad_ts, 5, 4, True),
    "non-hex-hash": (_non_hex_hash, 5, 4, True),
}


@pytest.mark.parametrize("name", TAMPERS.keys())
def test_tampered_log(log, name):
    tamper, first_bad, accepted, checkpoints_ok = TAMPERS[name]
    entries, checkpoints = log
    report = verify_log(tamper(list(entries)), checkpoints, LOOKUP)
    assert report.ok is False
    assert report.first_error is not None
    assert report.first_error.seq == first_bad
    assert report.entries == accepted
    assert report.checkpoints_ok is checkpoints_ok
    as_dict = report.to_dict()
    assert as_dict["ok"] is False
    assert as_dict["first_error"] == {"seq": first_bad, "reason": report.first_error.reason}
    json.dumps(as_dict)  # the API and CLI print it as JSON


def test_checkpoint_mismatch_reason_is_actionable(log):
    entries, checkpoints = log
    report = verify_log(entries[:7], checkpoints, LOOKUP)
    assert report.first_error is not None
    assert "entries were removed from the tail" in report.first_error.reason


# --- bad checkpoints ---------------------------------------------------------------------------


def _resigned(checkpoint: Checkpoint, **changes: Any) -> Checkpoint:
    return dataclasses.replace(checkpoint, **changes)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda c: _resigned(c, sig=c.sig[::-1]),
        lambda c: _resigned(c, ts=ts_at(0)),
        lambda c: _resigned(c, hash="ab" * 32),
        lambda c: make_checkpoint(Head(c.seq, c.hash), c.ts, OTHER_AUDIT),  # unknown kid
        lambda c: _resigned(make_checkpoint(Head(c.seq, c.hash), c.ts, OTHER_AUDIT), kid=AUDIT.kid),
    ],
    ids=["sig", "ts", "hash", "unknown-kid", "wrong-key-right-kid"],
)
def test_bad_checkpoint_signature(log, spoil):
    entries, checkpoints = log
    checkpoints[0] = spoil(checkpoints[0])
    report = verify_log(entries, checkpoints, LOOKUP)
    assert report.ok is False
    assert report.checkpoints_ok is False
    assert report.first_error is not None
    assert report.first_error.seq == CHECKPOINT_SEQS[0]
    assert report.entries == N  # the chain itself was still walked to the end
    assert report.head_seq == N


def test_an_unsigned_checkpoint_is_no_anchor(log):
    """A forged checkpoint for a forged log: its signature fails, so it vouches for nothing."""
    entries, _ = log
    forged_entries = rewrite_from(entries, 2, actor="x")
    forged_checkpoint = dataclasses.replace(
        checkpoints_for(entries, [N])[0], hash=forged_entries[-1].hash
    )
    report = verify_log(forged_entries, [forged_checkpoint], LOOKUP)
    assert report.ok is False
    assert report.checkpoints_ok is False
    assert report.first_error is not None
    assert report.first_error.seq == N


def test_earliest_failure_wins(log):
    entries, checkpoints = log
    checkpoints[1] = dataclasses.replace(checkpoints[1], sig=checkpoints[1].sig[::-1])
    report = verify_log(_modified(list(entries)), checkpoints, LOOKUP)
    assert report.first_error is not None
    assert report.first_error.seq == 5  # the broken entry, before the bad checkpoint at N
    assert report.checkpoints_ok is False


# --- a reviewer's saved checkpoint -------------------------------------------------------------


def _saved(checkpoint: Checkpoint) -> Checkpoint:
    """What a reviewer keeps: the JSON of GET /v1/audit/checkpoint, read back."""
    return checkpoint_from_dict(json.loads(json.dumps(checkpoint.to_dict())))


def test_trusted_checkpoint_on_an_intact_log(log):
    entries, checkpoints = log
    trusted = [_saved(checkpoints_for(entries, [7])[0])]
    assert verify_log(entries, checkpoints, LOOKUP, trusted=trusted).ok


def test_rollback_and_regrowth_is_caught_by_the_saved_checkpoint(log):
    """Entries and checkpoints rolled back to seq 5 together, then the vault went on signing."""
    entries, _ = log
    trusted = [_saved(checkpoints_for(entries, [8])[0])]
    rolled_back = extend(entries[:5], 7, tag="after-rollback")
    new_checkpoints = checkpoints_for(rolled_back, [4, 12])  # genuinely signed by the vault
    assert verify_log(rolled_back, new_checkpoints, LOOKUP).ok  # alone it looks fine
    report = verify_log(rolled_back, new_checkpoints, LOOKUP, trusted=trusted)
    assert report.ok is False
    assert report.checkpoints_ok is False
    assert report.first_error is not None
    assert report.first_error.seq == 8
    assert "another hash" in report.first_error.reason
    # The prefix that verified reaches the disputed entry itself: it follows the chain, the
    # checkpoint disagrees with it (README, "A verification report that is not ok").
    assert (report.entries, report.head_seq) == (8, 8)
    assert report.head_hash == rolled_back[7].hash


def test_rollback_to_a_shorter_log_is_caught_by_the_saved_checkpoint(log):
    entries, _ = log
    trusted = [_saved(checkpoints_for(entries, [N])[0])]
    shorter = entries[:5]
    report = verify_log(shorter, checkpoints_for(shorter, [4]), LOOKUP, trusted=trusted)
    assert report.ok is False
    assert report.first_error is not None
    assert report.first_error.seq == 6
    assert report.entries == 5


def test_trusted_checkpoint_must_verify_too(log):
    entries, checkpoints = log
    trusted = [checkpoints_for(entries, [7], OTHER_AUDIT)[0]]
    report = verify_log(entries, checkpoints, LOOKUP, trusted=trusted)
    assert report.ok is False
    assert report.checkpoints_ok is False
    assert report.first_error is not None
    assert report.first_error.seq == 7


# --- errors raised while streaming -------------------------------------------------------------


def test_malformed_export_is_reported_not_raised(log):
    entries, _ = log
    lines = [entry.to_line() for entry in entries]
    lines[6] = "garbage"
    report = verify_log(read_entries(lines), [], LOOKUP)
    assert report.ok is False
    assert report.first_error is not None
    assert report.first_error.seq == 7
    assert "line 7" in report.first_error.reason
    assert report.entries == 6


def test_other_audit_errors_are_reported_where_the_walk_stopped(log):
    entries, _ = log

    def stream() -> Iterator[Entry]:
        yield from entries[:3]
        raise AuditError("storage gave up")

    report = verify_log(stream(), [], LOOKUP)
    assert report.first_error == Failure(4, "storage gave up")
    assert report.entries == 3
    assert report.checkpoints_ok is True


def _uses_of_unknown_tokens(n: int) -> list[Entry]:
    """A chained log whose every entry is a use of a jti never issued: a semantic violation
    each, on a sound chain."""
    drafts = [
        Draft(
            type="token.used",
            actor="p_x",
            subject="u-1",
            data={"jti": f"j{i}", "method": "GET", "path": "/api/models", "outcome": "allowed"},
        )
        for i in range(n)
    ]
    return link(GENESIS, drafts, ts_at(0))


def test_meaning_is_checked_only_for_entries_the_chain_accepted() -> None:
    entries = _uses_of_unknown_tokens(6)
    sound = verify_log(entries, [], lookup_for(), semantics=SemanticChecker())
    assert [v.seq for v in sound.semantic_errors] == [1, 2, 3, 4, 5, 6]

    broken = [*entries[:3], dataclasses.replace(entries[3], hash="0" * 64), *entries[4:]]
    report = verify_log(broken, [], lookup_for(), semantics=SemanticChecker())
    assert report.first_error is not None
    assert report.first_error.seq == 4
    assert [v.seq for v in report.semantic_errors] == [1, 2, 3]  # not 4, nor any after it


def test_unknown_kids_reload_the_keys_a_bounded_number_of_times() -> None:
    """A kid the lookup does not know loads the keys again once (a key rotated in meanwhile);
    a log full of made-up kids does not reload them at each."""
    key = generate("audit")
    public = key.public_key
    loads: list[int] = []

    def load() -> dict[str, Any]:
        loads.append(1)
        return {key.kid: public} if len(loads) > 1 else {}

    lookup = reloading(load)
    assert lookup(key.kid) is public  # rotated in after the first load: found
    assert lookup(key.kid) is public
    for n in range(3 * MAX_RELOADS):
        assert lookup(f"made-up-{n}") is None
        assert lookup(f"made-up-{n}") is None
    assert len(loads) == 1 + MAX_RELOADS
