"""Read-only batches prepared before the chain lock, and jobs that join a batch once it holds it.

A prepared batch is committed as it was prepared only if nothing it read changed meanwhile (the
state stamp) and every decision still holds at the commit's time; otherwise its jobs run again
under the lock. These tests change the state between the two on purpose, with a second writer
on the same database (the vault opened again, as another worker process would), on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import MovableClock, add_principal, introspection_job, kill_connections
from vault.audit.appender import Appender, JobContext
from vault.audit.entry import Draft
from vault.audit.semantics import SemanticChecker
from vault.clock import format_ts
from vault.config import Settings
from vault.domain import DELEGATOR, Principal
from vault.ops import audit, principals, revocation, subjects, tokens
from vault.ops.runtime import Vault, open_vault
from vault.ops.tokens import IssuedToken
from vault.storage import audit_repo, meta_repo, principals_repo
from vault.storage.engine import Tx

SUBJECT = "u-1"


@contextmanager
def appender(vault: Vault, *, prepare_first: bool | None, clock: Any = None) -> Iterator[Appender]:
    """A second appender thread on the vault's database, preparing as told."""
    found = Appender(
        vault.db,
        clock=clock or vault.clock,
        audit_key=vault.keys.audit_now,
        checkpoint_every=vault.settings.checkpoint_every,
        checkpoint_log=vault.checkpoint_log,
        prepare_first=prepare_first,
    )
    found.start()
    try:
        yield found
    finally:
        found.stop()


@contextmanager
def other_writer(settings: Settings) -> Iterator[Vault]:
    """The same vault opened again: its own connections, locks and appender."""
    opened = open_vault(settings, background=True)
    try:
        yield opened
    finally:
        opened.close()


def new_entries(vault: Vault, after: int) -> list[Any]:
    return list(audit_repo.stream_entries(vault.db, upto_seq=10**9, after_seq=after))


def head_seq(vault: Vault) -> int:
    with vault.db.read() as session:
        return audit_repo.head(session).seq


def a_token(vault: Vault, reason: str) -> tuple[Principal, IssuedToken, Principal]:
    """A delegator, a token it was issued for a subject, and a verifier."""
    bot = add_principal(vault, "bot", DELEGATOR).principal
    vault.appender.run(
        subjects.upsert_job(
            subjects.parse_subject(SUBJECT, {"email": "u1@example.com", "role": "user"}),
            actor=None,
        )
    )
    request = {"subject": SUBJECT, "scope": "chat", "reason": reason}
    issue = tokens.issue_job(vault.settings, vault.scopes, vault.keys, bot, request, None)
    issued = vault.appender.submit(issue, read_only=True).result(30)
    return bot, issued, add_principal(vault, "owui", "verifier").principal


def note(**data: Any) -> Draft:
    return Draft(type="test.note", actor=None, subject=None, data=data)


class Held:
    """A read-only job that reads a principal, and on its first run waits for the test."""

    def __init__(self, principal_id: str, *, hold: Callable[[JobContext], None] | None = None):
        self.principal_id = principal_id
        self.runs = 0
        self.started = threading.Event()
        self.gate = threading.Event()
        self.hold = hold

    def __call__(self, session: Tx, ctx: JobContext) -> bool:
        self.runs += 1
        found = principals_repo.get_principal(session, self.principal_id)
        assert found is not None
        if self.hold is not None:
            self.hold(ctx)
        if self.runs == 1:
            self.started.set()
            assert self.gate.wait(30), "the test never let the job go"
        ctx.record(note(disabled=found.disabled, run=self.runs))
        return found.disabled


def test_a_prepared_batch_is_committed_as_prepared_when_nothing_changed(vault: Vault) -> None:
    bot = add_principal(vault, "bot", DELEGATOR).principal
    before = head_seq(vault)
    job = Held(bot.id)
    job.gate.set()
    with appender(vault, prepare_first=True) as prepared:
        assert prepared.submit(job, read_only=True).result(30) is False
    assert job.runs == 1
    assert [e.data for e in new_entries(vault, before)] == [{"disabled": False, "run": 1}]


def test_a_change_committed_while_a_batch_is_prepared_makes_its_jobs_run_again(
    vault: Vault, settings: Settings
) -> None:
    bot = add_principal(vault, "bot", DELEGATOR).principal
    before = head_seq(vault)
    job = Held(bot.id)
    with appender(vault, prepare_first=True) as prepared, other_writer(settings) as other:
        result = prepared.submit(job, read_only=True)
        assert job.started.wait(30)  # prepared: it read the principal as enabled
        other.appender.run(principals.disable_job(bot.id, actor=None))
        job.gate.set()
        assert result.result(30) is True  # decided again, on the state it commits with
    assert job.runs == 2
    new = new_entries(vault, before)
    assert [e.type for e in new] == ["principal.disabled", "test.note"]
    assert new[1].data == {"disabled": True, "run": 2}


def test_a_decision_whose_time_passed_while_prepared_is_made_again(vault: Vault) -> None:
    bot = add_principal(vault, "bot", DELEGATOR).principal
    clock = MovableClock()
    before = head_seq(vault)
    job = Held(bot.id, hold=lambda ctx: ctx.holds_until(ctx.now.timestamp() + 10))
    with appender(vault, prepare_first=True, clock=clock) as prepared:
        result = prepared.submit(job, read_only=True)
        assert job.started.wait(30)
        clock.advance(20)  # the commit comes after the prepared decision's deadline
        job.gate.set()
        assert result.result(30) is False
    assert job.runs == 2
    assert [e.data["run"] for e in new_entries(vault, before)] == [2]


def test_a_use_prepared_before_a_revocation_is_recorded_as_refused(
    vault: Vault, settings: Settings
) -> None:
    """The security property: a token revoked (by another process) while its introspection was
    being prepared is refused, and the log never shows an allowed use after the revocation."""
    bot, issued, verifier = a_token(vault, "TICKET-1 prepared")
    introspect, reads = introspection_job(
        vault, verifier, issued.access_token, "GET", "/api/v1/chats/"
    )
    before = head_seq(vault)
    # The batch: the introspection, then a job that holds the batch while it is prepared.
    holder = Held(verifier.id)

    async def both(prepared: Appender) -> list[Any]:
        return list(
            await asyncio.gather(
                prepared.submit_async(introspect, read_only=True, reads=reads),
                prepared.submit_async(holder, read_only=True),
            )
        )

    with appender(vault, prepare_first=True) as prepared, other_writer(settings) as other:
        answers: list[Any] = []
        running = threading.Thread(target=lambda: answers.extend(asyncio.run(both(prepared))))
        running.start()
        assert holder.started.wait(30)  # the introspection was prepared: the token was live
        other.appender.run(revocation.revoke_job(bot, {"jti": issued.claims.jti}))
        holder.gate.set()
        running.join(30)
    assert answers[0]["active"] is False
    new = new_entries(vault, before)
    assert [e.type for e in new] == ["token.revoked", "token.rejected", "test.note"]
    assert new[1].data["reason"] == "revoked_token"
    report = audit.verify_database(vault.db, semantics=SemanticChecker(scopes=vault.scopes))
    assert report.ok, report.to_dict()


@pytest.mark.parametrize("prepare_first", [None, True, False])
def test_a_token_used_here_and_revoked_elsewhere_is_refused_at_its_next_use(
    vault: Vault, settings: Settings, prepare_first: bool | None
) -> None:
    """What a use read of the token is kept for the next uses while the state stamp holds; a
    revocation by another process replaces the stamp, and the next use here is refused."""
    bot, issued, verifier = a_token(vault, "TICKET-1 kept")

    async def use(here: Appender) -> Any:
        job, reads = introspection_job(
            vault, verifier, issued.access_token, "GET", "/api/v1/chats/"
        )
        return await here.submit_async(job, read_only=True, reads=reads)

    with other_writer(settings) as other, appender(vault, prepare_first=prepare_first) as here:
        assert [asyncio.run(use(here))["active"] for _ in range(3)] == [True, True, True]
        other.appender.run(revocation.revoke_job(bot, {"jti": issued.claims.jti}))
        assert asyncio.run(use(here)) == {"active": False}
    rejected = [e for e in new_entries(vault, 0) if e.type == "token.rejected"]
    assert [e.data["reason"] for e in rejected] == ["revoked_token"]
    report = audit.verify_database(vault.db, semantics=SemanticChecker(scopes=vault.scopes))
    assert report.ok, report.to_dict()


def test_a_tokens_state_serves_its_next_uses_until_the_stamp_changes(vault: Vault) -> None:
    """What a use read of the token is kept: a change that replaces no stamp (made here behind
    the vault's back, as no vault job does) is not seen by the next use; once the stamp
    changes, it is."""
    _bot, issued, verifier = a_token(vault, "TICKET-1 kept")

    async def use() -> Any:
        job, reads = introspection_job(
            vault, verifier, issued.access_token, "GET", "/api/v1/chats/"
        )
        return await vault.appender.submit_async(job, read_only=True, reads=reads)

    assert asyncio.run(use())["active"] is True
    with vault.db.write() as session:
        session.execute(
            text("UPDATE tokens SET revoked_at = :at WHERE jti = :jti"),
            {"at": format_ts(vault.clock.now()), "jti": issued.claims.jti},
        )
    assert asyncio.run(use())["active"] is True  # the kept state: the stamp is unchanged
    vault.appender.run(lambda _s, ctx: ctx.record(note(changed="stamp")))
    assert asyncio.run(use()) == {"active": False}
    (rejected,) = [e for e in new_entries(vault, 0) if e.type == "token.rejected"]
    assert rejected.data["reason"] == "revoked_token"


def test_batches_are_prepared_only_while_another_writer_appends(
    vault: Vault, settings: Settings
) -> None:
    bot = add_principal(vault, "bot", DELEGATOR).principal
    with appender(vault, prepare_first=None) as adaptive:
        for n in range(3):  # alone on the chain: nothing to gain by preparing
            adaptive.run(lambda _s, ctx, n=n: ctx.record(note(n=n)))
            assert not adaptive.preparing
        with other_writer(settings) as other:
            other.appender.run(principals.disable_job(bot.id, actor=None))
        adaptive.run(lambda _s, ctx: ctx.record(note(n=3)))  # finds the chain moved
        assert adaptive.preparing


@pytest.mark.parametrize("carry", [False, True])
def test_read_only_jobs_queued_while_a_batch_waits_for_the_lock_join_it(
    vault: Vault, carry: bool
) -> None:
    """Jobs that queue while a batch waits for the chain lock are taken into that batch once it
    holds the lock (one commit, one timestamp), up to the first job that is not read-only,
    which starts the next batch: the log keeps the order of submission."""
    before = head_seq(vault)

    def job(n: int) -> Any:
        return lambda _s, ctx: ctx.record(note(n=n))

    with appender(vault, prepare_first=False) as waiting:
        with vault.db.write():  # another writer holds the chain lock
            first = waiting.submit(job(0), read_only=True)
            while not waiting.idle():  # the first batch has left the queue for the lock
                threading.Event().wait(0.001)
            rest = [waiting.submit(job(n), read_only=not (carry and n == 3)) for n in range(1, 6)]
        for future in [first, *rest]:
            future.result(30)
    new = new_entries(vault, before)
    assert [e.data["n"] for e in new] == [0, 1, 2, 3, 4, 5]
    batches = [len({e.ts for e in new[:3]}), len({e.ts for e in new[3:]})]
    if carry:  # 0, 1, 2 in one batch; 3 (not read-only) and 4, 5 in the next
        assert batches == [1, 1]
        assert new[2].ts != new[3].ts
    else:
        assert len({e.ts for e in new}) == 1


def test_the_stamp_is_replaced_by_every_batch_that_may_change_state(vault: Vault) -> None:
    def stamp() -> str | None:
        with vault.db.read_driver() as tx:
            return meta_repo.state_stamp(tx)

    first = stamp()
    assert first is not None  # migration 0002 put it there
    assert len(first) == 32
    bot = add_principal(vault, "bot", DELEGATOR).principal  # a job that changes state
    second = stamp()
    assert second != first
    job = Held(bot.id)
    job.gate.set()
    vault.appender.submit(job, read_only=True).result(30)
    assert stamp() == second  # read-only batches leave it
    # a job submitted as not read-only replaces it, even if it changes nothing in the end
    vault.appender.run(lambda _s, ctx: ctx.record(note(changed=False)))
    assert stamp() != second


def test_lasting_reads_serve_later_batches_while_the_stamp_holds(
    vault: Vault, settings: Settings
) -> None:
    loads = {"lasting": 0, "batch": 0}

    def load(kind: str) -> Callable[[], int]:
        def counted() -> int:
            loads[kind] += 1
            return loads[kind]

        return counted

    def job(_session: Tx, ctx: JobContext) -> tuple[int, int]:
        kept = ctx.memoized("lasting", load("lasting"), lasting=True)
        fresh = ctx.memoized("batch", load("batch"))
        ctx.record(note(kept=kept, fresh=fresh))
        return kept, fresh

    with appender(vault, prepare_first=False) as one:
        answers = [one.submit(job, read_only=True).result(30) for _ in range(3)]
        assert answers == [(1, 1), (1, 2), (1, 3)]  # three batches, one lasting read
        with other_writer(settings) as other:  # a change elsewhere replaces the stamp
            other.appender.run(lambda _s, ctx: ctx.record(note(elsewhere=True)))
        assert one.submit(job, read_only=True).result(30) == (2, 4)
        one.run(lambda _s, ctx: ctx.record(note(here=True)))  # so does one here
        assert one.submit(job, read_only=True).result(30) == (3, 5)
        assert one.submit(job, read_only=True).result(30) == (3, 6)


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # a server that drops them
def test_a_prepare_whose_connection_was_killed_runs_under_the_lock_instead(
    vault: Vault, settings: Settings
) -> None:
    """The read connection kept for preparing fails at its next use: that batch runs under the
    lock as it would have without preparing (nothing fails), and the next one is prepared again,
    on a new connection."""
    bot = add_principal(vault, "bot", DELEGATOR).principal
    with appender(vault, prepare_first=True) as prepared, other_writer(settings) as other:
        warm = Held(bot.id)
        warm.gate.set()
        assert prepared.submit(warm, read_only=True).result(30) is False
        assert kill_connections(vault.settings.database_url) >= 1
        after = Held(bot.id)
        after.gate.set()
        assert prepared.submit(after, read_only=True).result(30) is False
        assert after.runs == 1  # the prepare failed before the job; it ran under the lock
        # Prepared again: held in its first run, it does not hold the lock, so another writer
        # commits meanwhile (with the lock held, this would wait until the test timed out).
        again = Held(bot.id)
        result = prepared.submit(again, read_only=True)
        assert again.started.wait(30)
        other.appender.run(principals.disable_job(bot.id, actor=None), timeout=30)
        again.gate.set()
        assert result.result(30) is True
        assert again.runs == 2
