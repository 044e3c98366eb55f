"""Group commit: concurrent jobs share one durable transaction, and fail together.

The appender is driven directly, on a real initialized vault (SQLite and PostgreSQL). Entries
committed in one batch share its timestamp, which makes the batching observable without timing.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from tests.support import make_settings, next_batch
from vault.audit.appender import JobContext
from vault.audit.checkpoint_log import CheckpointLog
from vault.audit.entry import Draft
from vault.errors import AuditUnavailable, Conflict, InvalidRequest
from vault.ops import audit
from vault.ops.runtime import Vault, open_vault
from vault.ops.setup import init_vault
from vault.storage import audit_repo


def note(n: int) -> Draft:
    return Draft(type="test.note", actor=None, subject=None, data={"n": n})


def recording(n: int):
    def job(_session: Session, ctx: JobContext) -> int:
        ctx.record(note(n))
        return n

    return job


def entries_after(vault: Vault, seq: int):
    return list(audit_repo.stream_entries(vault.db, upto_seq=10**9, after_seq=seq))


def head_seq(vault: Vault) -> int:
    with vault.db.read() as session:
        return audit_repo.head(session).seq


def test_jobs_waiting_behind_a_commit_share_the_next_one(vault: Vault) -> None:
    before = head_seq(vault)
    gate = threading.Event()
    started = threading.Event()

    def blocker(_session: Session, ctx: JobContext) -> str:
        started.set()
        assert gate.wait(30), "the test never opened the gate"
        ctx.record(note(-1))
        return "first"

    first = vault.appender.submit(blocker)
    assert started.wait(30)
    # While the first batch is held open, 40 jobs queue up behind it.
    waiting: list[Future[int]] = [vault.appender.submit(recording(n)) for n in range(40)]
    gate.set()
    assert first.result(30) == "first"
    assert [f.result(30) for f in waiting] == list(range(40))

    new = entries_after(vault, before)
    assert [e.data["n"] for e in new] == [-1, *range(40)]
    assert [e.seq for e in new] == list(range(before + 1, before + 42))
    # one commit for the blocker, then one shared commit (one timestamp) for the 40 waiting jobs
    assert len({e.ts for e in new[1:]}) == 1


def test_a_refusing_job_does_not_take_its_batch_down(vault: Vault) -> None:
    before = head_seq(vault)

    def refusing(_session: Session, ctx: JobContext) -> None:
        ctx.record(note(99))  # dropped: the job refuses
        ctx.refuse(note(100))  # kept: refusals are audited
        raise Conflict("refused on purpose")

    with next_batch(vault):
        ok_before = vault.appender.submit(recording(1))
        refused = vault.appender.submit(refusing)
        ok_after = vault.appender.submit(recording(2))
    assert ok_before.result(30) == 1
    with pytest.raises(Conflict):
        refused.result(30)
    assert ok_after.result(30) == 2
    assert [e.data["n"] for e in entries_after(vault, before)] == [1, 100, 2]


def test_a_failed_commit_fails_every_job_of_the_batch_and_leaves_nothing(vault: Vault) -> None:
    before = head_seq(vault)

    def breaks_the_transaction(session: Session, ctx: JobContext) -> None:
        ctx.record(note(7))
        session.execute(text("SELECT * FROM no_such_table"))  # a database error, not a refusal

    with next_batch(vault):
        batch = [vault.appender.submit(recording(n)) for n in range(5)]
        batch.append(vault.appender.submit(breaks_the_transaction))
    for future in batch:
        with pytest.raises(AuditUnavailable):
            future.result(30)
    assert head_seq(vault) == before  # nothing of the failed batch was committed

    # and the appender goes on by itself
    assert vault.appender.run(recording(8)) == 8
    assert [e.data["n"] for e in entries_after(vault, before)] == [8]


def test_one_unauditable_job_fails_alone(vault: Vault) -> None:
    before = head_seq(vault)

    def poisoned(_session: Session, ctx: JobContext) -> None:
        ctx.record(Draft(type="test.note", actor=None, subject=None, data={"n": "\ud800"}))

    with next_batch(vault):
        mates = [vault.appender.submit(recording(n)) for n in range(3)]
        bad = vault.appender.submit(poisoned)
    with pytest.raises(InvalidRequest):
        bad.result(30)
    assert [f.result(30) for f in mates] == [0, 1, 2]
    assert [e.data["n"] for e in entries_after(vault, before)] == [0, 1, 2]


def test_a_caller_that_gave_up_is_skipped_and_the_appender_goes_on(vault: Vault) -> None:
    before = head_seq(vault)
    with next_batch(vault):
        abandoned = vault.appender.submit(recording(1))
        assert abandoned.cancel()  # not started yet: the caller may still take it back
        kept = vault.appender.submit(recording(2))
    assert kept.result(30) == 2
    assert vault.appender.run(recording(3)) == 3
    assert [e.data["n"] for e in entries_after(vault, before)] == [2, 3]


# --- from an event loop (the HTTP API): submit_async ---------------------------------------


def test_jobs_submitted_in_one_turn_of_the_loop_share_one_commit(vault: Vault) -> None:
    before = head_seq(vault)

    async def submit_twenty() -> list[int]:
        waiters = [
            vault.appender.submit_async(recording(n), read_only=n % 2 == 0) for n in range(20)
        ]
        return list(await asyncio.gather(*waiters))

    assert asyncio.run(submit_twenty()) == list(range(20))
    new = entries_after(vault, before)
    assert [e.data["n"] for e in new] == list(range(20))
    assert len({e.ts for e in new}) == 1


def test_a_failed_commit_fails_every_waiting_coroutine(vault: Vault) -> None:
    before = head_seq(vault)

    def breaks_the_transaction(session: Session, ctx: JobContext) -> None:
        ctx.record(note(7))
        session.execute(text("SELECT * FROM no_such_table"))

    async def submit() -> list[BaseException | int]:
        waiters = [vault.appender.submit_async(recording(n)) for n in range(3)]
        waiters.append(vault.appender.submit_async(breaks_the_transaction))
        return list(await asyncio.gather(*waiters, return_exceptions=True))

    answers = asyncio.run(submit())
    assert all(isinstance(answer, AuditUnavailable) for answer in answers), answers
    assert head_seq(vault) == before


def test_a_coroutine_waits_no_longer_than_answer_within_and_its_job_never_runs(
    vault: Vault,
) -> None:
    before = head_seq(vault)
    vault.appender.answer_within = 0.3
    late: list[BaseException | int] = []

    async def submit() -> None:
        try:
            late.append(await vault.appender.submit_async(recording(5)))
        except AuditUnavailable as exc:
            late.append(exc)

    with next_batch(vault):  # the appender is held past the deadline
        asyncio.run(submit())
    assert len(late) == 1
    assert isinstance(late[0], AuditUnavailable)
    assert "in time" in str(late[0])
    assert vault.appender.run(recording(6)) == 6  # the appender goes on
    assert [e.data["n"] for e in entries_after(vault, before)] == [6]  # 5 never ran


def test_a_coroutine_on_a_loop_that_is_gone_does_not_stop_the_appender(vault: Vault) -> None:
    async def submit_and_leave() -> None:
        vault.appender.submit_async(recording(1))  # nobody awaits it; the loop then closes

    with next_batch(vault):
        asyncio.run(submit_and_leave())
    assert vault.appender.run(recording(2)) == 2


def test_a_long_batch_is_signed_at_every_multiple_it_passes(
    tmp_path: Path, database_url: str
) -> None:
    """Checkpoints come at least every VAULT_CHECKPOINT_EVERY entries, also when one batch
    passes several multiples (a revocation of many tokens, say): each multiple is signed, then
    the batch's end, and a marker entry for each follows the batch. Only the marker of a head
    someone asked for names them."""
    settings = make_settings(tmp_path / "home", database_url, VAULT_CHECKPOINT_EVERY="5")
    init_vault(settings)
    vault = open_vault(settings, background=True)
    try:
        before = head_seq(vault)

        def many(_session: Session, ctx: JobContext) -> None:
            for n in range(23):
                ctx.record(note(n))

        vault.appender.run(many)
        with vault.db.read() as session:
            stored = audit_repo.checkpoints(session)
        new = entries_after(vault, before)
        logged, _ = CheckpointLog(settings.checkpoint_log).read()
        report = audit.verify_database(
            vault.db, checkpoint_log=CheckpointLog(settings.checkpoint_log)
        )

        forced_at = head_seq(vault)

        def many_then_asked(_session: Session, ctx: JobContext) -> None:
            for n in range(12):
                ctx.record(note(n))
            ctx.request_checkpoint("p_asker")

        asked = vault.appender.run(many_then_asked)
        with vault.db.read() as session:
            later = [cp for cp in audit_repo.checkpoints(session) if cp.seq > forced_at]
        markers_asked = entries_after(vault, forced_at + 12)
    finally:
        vault.close()
    end = before + 23
    multiples = list(range((before // 5 + 1) * 5, end, 5))
    ours = [cp for cp in stored if cp.seq > before]
    assert [cp.seq for cp in ours] == [*multiples, end]
    by_seq = {e.seq: e for e in new}
    assert all(cp.hash == by_seq[cp.seq].hash for cp in ours)
    markers = new[23:]
    assert [e.type for e in markers] == ["audit.checkpoint"] * len(ours)
    assert [e.data["seq"] for e in markers] == [cp.seq for cp in ours]
    assert all(e.actor is None for e in markers)  # made every N entries: nobody asked
    assert [cp for cp in logged if cp.seq > before] == ours  # the file outside has them all
    assert report.ok, report.to_dict()
    assert all(b - a <= 5 for a, b in zip(multiples, [*multiples[1:], end], strict=True))

    assert asked.seq == forced_at + 12
    assert later[-1] == asked
    assert len(later) >= 3  # the multiples the batch passed, then the head asked for
    assert [e.type for e in markers_asked] == ["audit.checkpoint"] * len(later)
    assert [e.actor for e in markers_asked] == [None] * (len(later) - 1) + ["p_asker"]
