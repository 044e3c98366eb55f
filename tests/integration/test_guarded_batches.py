"""PostgreSQL: a read-only batch committed in one round trip, behind a guard.

An appender alone on the chain knows the state stamp and the head its last batches left, so it
prepares a read-only batch without the lock and sends BEGIN, the lock, a guard (that stamp and
that head, still) and the inserts with the COMMIT, at once. Only a failed guard, which commits
nothing, sends the batch the usual way, with its reads under the lock; every other error fails
the batch closed, as always. These tests move the state under such a batch from a second writer
(the vault opened again, as another worker or replica would), on a real PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.test_prepared_batches import (
    Held,
    a_token,
    head_seq,
    new_entries,
    note,
    other_writer,
)
from tests.support import (
    PG_ADMIN,
    add_principal,
    introspection_job,
    kill_connections,
    make_settings,
)
from vault.audit.appender import JobContext
from vault.audit.semantics import SemanticChecker
from vault.clock import parse_ts
from vault.config import Settings
from vault.domain import DELEGATOR
from vault.errors import AuditUnavailable
from vault.ops import audit, revocation
from vault.ops.runtime import Vault
from vault.storage import engine, principals_repo
from vault.storage.engine import Tx
from vault.storage.tables import MetaRow

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
EVERY = 10  # a checkpoint every 10 entries, so that a test can cross one


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "home", database_url, VAULT_CHECKPOINT_EVERY=str(EVERY))


def record(n: int) -> Any:
    def job(_session: Tx, ctx: JobContext) -> int:
        ctx.record(note(n=n))
        return n

    return job


@contextmanager
def alone(vault: Vault) -> Iterator[None]:
    """The vault's appender after a batch of each kind: it knows the stamp and the head."""
    vault.appender.run(record(-2))  # not read-only: replaces the stamp
    vault.appender.submit(record(-1), read_only=True).result(30)  # reads it under the lock
    yield


def verified(vault: Vault) -> None:
    report = audit.verify_database(vault.db, semantics=SemanticChecker(scopes=vault.scopes))
    assert report.ok, report.to_dict()


def test_alone_on_the_chain_read_only_batches_go_guarded(vault: Vault) -> None:
    with alone(vault):
        before, guarded = head_seq(vault), vault.appender.guarded_commits
        answers = [vault.appender.submit(record(n), read_only=True).result(30) for n in range(5)]
    assert answers == [0, 1, 2, 3, 4]
    new = new_entries(vault, before)
    assert [e.data["n"] for e in new if e.type == "test.note"] == [0, 1, 2, 3, 4]
    crossed = sum(e.type == "audit.checkpoint" for e in new)  # such a batch is not guarded
    assert crossed <= 1
    assert vault.appender.guarded_commits == guarded + 5 - crossed
    assert not vault.appender.preparing  # no other writer seen
    verified(vault)


def clear_of_checkpoints(vault: Vault, room: int) -> None:
    """Append until a batch of ``room`` entries crosses no checkpoint."""
    while head_seq(vault) % EVERY + room >= EVERY:
        vault.appender.submit(record(-3), read_only=True).result(30)


def test_jobs_queued_while_a_guarded_batch_is_prepared_join_it(vault: Vault) -> None:
    """As jobs that queue while a batch waits for the lock join it: one commit, one ts, and no
    entry older than its request."""
    bot = add_principal(vault, "bot", DELEGATOR).principal
    with alone(vault):
        clear_of_checkpoints(vault, 4)
        before, guarded = head_seq(vault), vault.appender.guarded_commits
        first = Held(bot.id)
        held = vault.appender.submit(first, read_only=True)
        assert first.started.wait(30)  # being prepared, decided at its time
        time.sleep(0.02)
        submitted = vault.clock.now()
        later = [vault.appender.submit(record(n), read_only=True) for n in range(3)]
        first.gate.set()
        assert held.result(30) is False
        assert [future.result(30) for future in later] == [0, 1, 2]
    assert first.runs == 1
    assert vault.appender.guarded_commits == guarded + 1
    new = [e for e in new_entries(vault, before) if e.type == "test.note"]
    assert [e.data.get("n", "held") for e in new] == ["held", 0, 1, 2]
    assert len({e.ts for e in new}) == 1
    assert parse_ts(new[0].ts) >= submitted  # the batch's time is its last decision's
    verified(vault)


class Counting:
    """A read-only job that records how many times it ran."""

    def __init__(self, n: int) -> None:
        self.n, self.runs = n, 0

    def __call__(self, _session: Tx, ctx: JobContext) -> int:
        self.runs += 1
        ctx.record(note(n=self.n, run=self.runs))
        return self.n


@pytest.mark.parametrize("change", ["head", "stamp"])
def test_jobs_that_joined_a_batch_whose_guard_fails_are_answered_once(
    vault: Vault, settings: Settings, change: str
) -> None:
    """The batch goes the usual way with the jobs that joined it: each answered once; decided
    again only if the stamp changed."""
    bot = add_principal(vault, "bot", DELEGATOR).principal

    def disable_quietly(session: Any, _ctx: JobContext) -> None:
        principals_repo.set_disabled(session, bot.id)

    with other_writer(settings) as other, alone(vault):
        clear_of_checkpoints(vault, 8)
        before, guarded = head_seq(vault), vault.appender.guarded_commits
        first = Held(bot.id)
        held = vault.appender.submit(first, read_only=True)
        assert first.started.wait(30)
        jobs = [Counting(n) for n in range(3)]
        later = [vault.appender.submit(job, read_only=True) for job in jobs]
        if change == "head":
            other.appender.submit(record(100), read_only=True).result(30)
        else:
            other.appender.run(disable_quietly)
        first.gate.set()
        assert held.result(30) is (change == "stamp")
        assert [future.result(30) for future in later] == [0, 1, 2]
    runs = 1 if change == "head" else 2
    assert [first.runs, *(job.runs for job in jobs)] == [runs] * 4
    assert vault.appender.guarded_commits == guarded
    mine = [e.data for e in new_entries(vault, before) if e.type == "test.note"]
    mine = [data for data in mine if data.get("n") != 100]
    assert mine == [
        {"disabled": change == "stamp", "run": runs},
        *({"n": n, "run": runs} for n in range(3)),
    ]
    verified(vault)


def test_a_connection_idle_for_long_gets_the_write_that_retries_its_begin(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept connection may die without the server saying so: after a pause, the next batch
    goes the usual way (its BEGIN alone first, retried once on a new connection), then the
    guard again."""
    monkeypatch.setattr(engine, "GUARDED_IDLE_SECONDS", 0.05)
    with alone(vault):
        time.sleep(0.1)
        guarded = vault.appender.guarded_commits
        assert vault.appender.submit(record(1), read_only=True).result(30) == 1
        assert vault.appender.guarded_commits == guarded
        assert vault.appender.submit(record(2), read_only=True).result(30) == 2
        assert vault.appender.guarded_commits == guarded + 1
    verified(vault)


def test_a_head_moved_by_another_writer_fails_the_guard_and_the_batch_goes_again(
    vault: Vault, settings: Settings
) -> None:
    """The stamp holds (the other writer only appended), so the prepared decisions are kept
    and linked after the head found under the lock: the job ran once, nothing forks."""
    bot = add_principal(vault, "bot", DELEGATOR).principal
    with other_writer(settings) as other, alone(vault):
        other.appender.submit(record(100), read_only=True).result(30)
        before, guarded = head_seq(vault), vault.appender.guarded_commits
        job = Held(bot.id)
        job.gate.set()
        assert vault.appender.submit(job, read_only=True).result(30) is False
    assert job.runs == 1
    assert vault.appender.guarded_commits == guarded  # the guard failed; committed under the lock
    assert vault.appender.preparing  # another writer seen: it prepares first for a while
    notes = [e.data for e in new_entries(vault, before - 1) if e.type == "test.note"]
    assert notes == [
        {"n": 100},
        {"disabled": False, "run": 1},
    ]
    verified(vault)


def test_a_state_change_elsewhere_fails_the_guard_even_with_the_head_unchanged(
    vault: Vault, settings: Settings
) -> None:
    """Only the stamp tells: the other writer changes a principal and appends nothing (no vault
    job does that; a test job can). The prepared decision is made again under the lock."""
    bot = add_principal(vault, "bot", DELEGATOR).principal

    def disable_quietly(session: Any, _ctx: JobContext) -> None:
        principals_repo.set_disabled(session, bot.id)

    with other_writer(settings) as other, alone(vault):
        before, guarded = head_seq(vault), vault.appender.guarded_commits
        job = Held(bot.id)
        result = vault.appender.submit(job, read_only=True)
        assert job.started.wait(30)  # prepared: the principal was enabled
        other.appender.run(disable_quietly)
        assert head_seq(vault) == before  # nothing appended: the head alone would pass
        job.gate.set()
        assert result.result(30) is True  # decided again, on the state it commits with
    assert job.runs == 2
    assert vault.appender.guarded_commits == guarded
    assert vault.appender.preparing  # the guard failed: another writer is about
    notes = [e.data for e in new_entries(vault, before) if e.type == "test.note"]
    assert notes == [{"disabled": True, "run": 2}]
    verified(vault)


def test_a_token_revoked_while_its_use_is_prepared_is_refused(
    vault: Vault, settings: Settings
) -> None:
    """The security property, on the guarded path: the revocation commits between the
    introspection's read of the token and its commit; the use is refused and the log never
    shows an allowed use after the revocation."""
    bot, issued, verifier = a_token(vault, "TICKET-1 guarded")
    introspect, reads = introspection_job(
        vault, verifier, issued.access_token, "GET", "/api/v1/chats/"
    )
    assert reads  # submit() takes no declared reads: the job reads the token itself

    with other_writer(settings) as other, alone(vault):
        before = head_seq(vault)
        holder = Held(verifier.id)

        def use_then_hold(session: Tx, ctx: JobContext) -> Any:
            answer = introspect(session, ctx)
            holder(session, ctx)
            return answer

        result = vault.appender.submit(use_then_hold, read_only=True)
        assert holder.started.wait(30)  # prepared: the token was live
        other.appender.run(revocation.revoke_job(bot, {"jti": issued.claims.jti}))
        holder.gate.set()
        answer = result.result(30)
    assert answer["active"] is False
    new = [e for e in new_entries(vault, before) if e.type != "audit.checkpoint"]
    assert [e.type for e in new] == ["token.revoked", "token.rejected", "test.note"]
    assert new[1].data["reason"] == "revoked_token"
    verified(vault)


_COUNT_INSERTS = """
CREATE SEQUENCE meta_inserts;
CREATE FUNCTION count_meta_insert() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN PERFORM nextval('meta_inserts'); RETURN NEW; END $$;
CREATE TRIGGER count_meta_insert BEFORE INSERT ON vault_meta
  FOR EACH ROW EXECUTE FUNCTION count_meta_insert();
"""


def meta_inserts(database_url: str) -> int:
    """How many inserts into ``vault_meta`` were tried since ``_COUNT_INSERTS``: a sequence
    is not rolled back, so this counts the attempts of transactions that failed too."""
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
        found = admin.execute("SELECT last_value, is_called FROM meta_inserts").fetchone()
    assert found is not None
    return int(found[0]) if found[1] else 0


def test_any_other_error_fails_the_batch_closed_and_it_is_not_sent_again(
    vault: Vault, database_url: str
) -> None:
    """A failure that is not the guard's (here a duplicate key, in the pipeline) may come after
    a COMMIT that committed: the batch fails with 503, it is sent once (neither its job nor its
    inserts again), and nothing of it is in the log."""
    runs: list[int] = []
    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as admin:
        admin.execute(_COUNT_INSERTS)

    def clashing(_session: Tx, ctx: JobContext) -> str:
        runs.append(1)
        ctx.insert(MetaRow, {"key": "state_stamp", "value": "x" * 32})  # the key exists
        ctx.record(note(clash=True))
        return "answered"

    with alone(vault):
        before, guarded = head_seq(vault), vault.appender.guarded_commits
        tried = meta_inserts(database_url)
        with pytest.raises(AuditUnavailable):
            vault.appender.submit(clashing, read_only=True).result(30)
        assert runs == [1]
        assert meta_inserts(database_url) == tried + 1  # one transaction tried it, and failed
        assert head_seq(vault) == before
        assert vault.appender.guarded_commits == guarded
        # the appender goes on: the next batch is committed (on a new connection)
        assert vault.appender.submit(record(7), read_only=True).result(30) == 7
    assert [e.data for e in new_entries(vault, before) if e.type == "test.note"] == [{"n": 7}]
    verified(vault)


def test_a_connection_the_server_closed_is_replaced_before_the_pipeline(vault: Vault) -> None:
    """A server restart between batches: the guarded batch sees the kept connection closed
    before sending anything, takes a new one, and is served (not a 503)."""
    with alone(vault):
        guarded = vault.appender.guarded_commits
        assert kill_connections(vault.settings.database_url) >= 1
        gone(vault.settings.database_url)
        assert vault.appender.submit(record(1), read_only=True).result(30) == 1
        assert vault.appender.guarded_commits == guarded + 1
    verified(vault)


def gone(database_url: str) -> None:
    """Wait until the killed connections' server processes have ended (and closed them)."""
    database = database_url.rsplit("/", 1)[-1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        for _ in range(500):
            found = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
            ).fetchone()
            if found is not None and found[0] == 0:
                return
            time.sleep(0.01)
    raise AssertionError("the killed connections are still there")


def test_a_batch_that_crosses_a_checkpoint_goes_the_usual_way(vault: Vault) -> None:
    """The checkpoint's key is read under the lock: such a batch is not guarded, and the
    checkpoint is signed and stored as always."""
    every = EVERY
    with alone(vault):
        start = head_seq(vault)
        guarded = vault.appender.guarded_commits
        count = every - start % every + 2  # crosses the next multiple of ``every``
        for n in range(count):
            vault.appender.submit(record(n), read_only=True).result(30)
    crossed = (start + count) // every * every
    marks = [e for e in new_entries(vault, start) if e.type == "audit.checkpoint"]
    assert [m.data["seq"] for m in marks] == [crossed]
    assert vault.appender.guarded_commits == guarded + count - 1  # all but that batch
    verified(vault)
