"""The one place that appends to the audit chain: group commit, fail closed.

Every state change of the vault is a *job*: a function run inside a write transaction (which
holds the chain lock) that changes state and records audit drafts. The appender runs the jobs
that are waiting, each in a savepoint, links all their drafts onto the chain, makes a signed
checkpoint when the chain crosses a multiple of ``checkpoint_every``, and commits once. Only
after that commit does any caller get its result: if the commit fails, every job of the batch
fails with ``AuditUnavailable`` and nothing it did exists. One failure leaves that open: the
COMMIT's answer lost on its way back (a connection reset, a terminated backend) after the
database committed. The appender then reads, under the chain lock (which the old transaction
holds until it has ended), whether the batch's last entry is in the log: if it is, the batch is
answered as committed; if it is not, it failed and nothing of it exists; if the database cannot
say, the callers are refused with a 503 that does not claim nothing was done.

A job that refuses (raises a ``VaultError``) has its changes rolled back, but the drafts it
recorded with ``ctx.refuse(...)`` are still appended, so refusals are audited in the same chain.

The hot paths (token issuance and introspection) are submitted as *read-only* jobs: they read
(through ``ctx.memoized``, shared by the batch) and write only through ``ctx.insert``, whose rows
the appender inserts with one statement per table. Such a job needs no savepoint, since it has
nothing to roll back. Any other job may change what the memo holds, so the memo is emptied and the
rows waiting are inserted before it runs, and the memo is emptied again after it.

The HTTP API submits from its event loop (``submit_async``): the jobs submitted in one turn of the
loop reach the appender together, as one *group*, with one timer for the group's deadline, and
each batch answers an event loop with one callback, not one per job.

Once a batch of read-only jobs holds the chain lock, the read-only jobs that queued while it
waited for the lock join it: time spent waiting becomes a bigger batch, not a longer queue.

Every batch of read-only jobs reads the *state stamp* (``meta_repo``), a random value that every
batch with a job that is not read-only replaces. What the jobs read through ``ctx.memoized(...,
lasting=True)`` (principals, subjects, policies: state that only such jobs change) is kept for the
next batch of read-only jobs, which uses it only if the stamp it reads is still the same.

When other processes append to the same chain (more workers, or replicas on one PostgreSQL), the
lock is what they share, so a read-only batch is first *prepared* without it: its jobs run on a
read transaction, after reading the state stamp. Under the lock, the prepared batch is committed
as it is only if the stamp is unchanged (nothing the jobs read has changed: read-only jobs only
insert tokens, which no job reads before their issuance has committed and been answered) and
every job's decision still holds at the batch's time (``JobContext.holds_until``); otherwise its
jobs run again under the lock, as they would have without it. Either way, what is committed is
what the jobs decide on the state the commit is made on. A job may therefore run twice: it must
change nothing outside its context.

An appender alone on the chain knows the stamp and the head its last batches left. On PostgreSQL,
where each statement under the lock is a round trip, it prepares a read-only batch on those and
sends it in one pipeline behind a guard (``Database.write_guarded``): the lock, then "the stamp and
the head are still these", then the inserts and COMMIT. A failed guard has committed nothing, and
the batch goes the usual way; any other error fails it closed, never retried (a COMMIT whose
answer was lost may have committed: the log says whether it did, as above). A sequential
introspection on PostgreSQL takes two round trips instead of three (one when its token was read
by an earlier use under the same stamp).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlmodel import Session, SQLModel

from vault.audit.anchor import Anchor
from vault.audit.chain import Head, link
from vault.audit.checkpoint import Checkpoint, make_checkpoint
from vault.audit.checkpoint_log import CheckpointLog
from vault.audit.entry import AUDIT_CHECKPOINT, Draft
from vault.clock import Clock, format_ts
from vault.crypto.canonical import NotCanonicalizable
from vault.crypto.keys import KeyPair
from vault.errors import AuditUnavailable, Conflict, InvalidRequest, LogRewritten, VaultError
from vault.storage import audit_repo, meta_repo
from vault.storage.engine import Database, DriverTx, GuardFailed, Tx, execute_many

log = logging.getLogger("vault.audit")
SHARED_FOR_SECONDS = 2.0  # how long one sign of another writer keeps batches prepared first
SHARED_AFTER_A_GUARD_FAILED = 60.0  # the same after a guarded batch found another writer
KEPT_MAX = 10_000  # lasting reads kept from one batch to the next, at most
T = TypeVar("T")


@dataclass
class JobContext:
    """What a job sees besides the session: the batch's time, and where its drafts go."""

    now: datetime
    memo: dict[Any, Any] = field(default_factory=dict)
    drafts: list[Draft] = field(default_factory=list)
    refusals: list[Draft] = field(default_factory=list)
    inserts: list[tuple[type[SQLModel], dict[str, Any]]] = field(default_factory=list)
    wants_checkpoint: bool = False
    checkpoint_actor: str | None = None  # who asked for the checkpoint
    valid_before: float = math.inf
    kept: Mapping[Any, Any] = field(default_factory=dict)  # earlier batches' lasting reads
    lasting: set[Any] = field(default_factory=set)  # keys this batch read to last

    def holds_until(self, moment: float) -> None:
        """The job's decision depends on the time (e.g. a token not yet expired): it may be
        recorded only before ``moment`` (seconds since the epoch), else it is made again."""
        self.valid_before = min(self.valid_before, moment)

    def memoized(self, key: Any, load: Callable[[], T], *, lasting: bool = False) -> T:
        """``load()``, read at most once per batch while no job changes state (see above).

        ``lasting``: what ``load`` reads is changed only by jobs that are not read-only, so the
        value is kept for later batches of read-only jobs, as long as the state stamp holds."""
        try:
            found: T = self.memo[key]
        except KeyError:
            pass
        else:
            if lasting and key not in self.kept:
                self.lasting.add(key)  # read for the batch (``_prefetch``): kept after it too
            return found
        if lasting and key in self.kept:
            value: T = self.kept[key]
        else:
            value = load()
            if lasting:
                self.lasting.add(key)
        self.memo[key] = value
        return value

    def insert(self, table: type[SQLModel], row: dict[str, Any]) -> None:
        """Insert ``row`` with the batch's other rows of ``table``; dropped if the job refuses.
        Every row of one table must have the same keys."""
        self.inserts.append((table, row))

    def record(self, draft: Draft) -> None:
        """Audit this change; dropped with the job's changes if the job then refuses."""
        self.drafts.append(draft)

    def refuse(self, draft: Draft) -> None:
        """Audit a refusal; kept even though the job raises."""
        self.refusals.append(draft)

    def request_checkpoint(self, actor: str | None = None) -> None:
        """Sign the head this batch leaves; the job's result becomes that checkpoint, whose
        ``audit.checkpoint`` entry names ``actor`` (the principal who asked)."""
        self.wants_checkpoint = True
        self.checkpoint_actor = actor


Job = Callable[[Session, JobContext], T]

# What a batch of read-only jobs reads as soon as it holds the chain lock, in the same round trip
# on PostgreSQL (``Database.write_driver``): the state stamp, and the head it appends after.
_OPENING = (meta_repo.STAMP_SQL, audit_repo.HEAD_SQL)

# What a batch of read-only jobs checks under the chain lock when it was prepared on what the last
# batch learnt (``Appender._commit_guarded``): the state stamp, and the head, are still those.
_UNCHANGED = (
    f"({meta_repo.STAMP_SQL}) = ? AND EXISTS "  # noqa: S608 (constants)
    f"(SELECT 1 FROM ({audit_repo.HEAD_SQL}) AS head WHERE head.seq = ? AND head.hash = ?)"
)

# What a read-only job will read through ``ctx.memoized((name, key), ...)``, declared when it is
# submitted: (name, a loader of many keys at once, key). A batch of read-only jobs loads each
# name's keys with one call, so a batch of introspections reads its tokens in one round trip.
Read = tuple[str, Callable[[Any, list[Any]], dict[Any, Any]], Any]


@dataclass
class _Pending(Generic[T]):
    """A job and whoever waits for it: a thread (``future``) or a coroutine (``waiter``, answered
    on its ``group``'s event loop)."""

    job: Job[T]
    future: Future[T] | None
    read_only: bool = False
    waiter: asyncio.Future[T] | None = None
    group: _Group | None = None
    reads: tuple[Read, ...] = ()


_WAITING, _STARTED, _EXPIRED = range(3)


class _Group:
    """The jobs one event loop submitted in one turn: queued as one item, taken into one batch,
    timed by one timer, answered by one callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.members: list[_Pending[Any]] = []
        self.timer: asyncio.TimerHandle | None = None
        self._state = _WAITING
        self._lock = threading.Lock()  # the appender starts a group; the loop's timer expires it

    def start(self) -> bool:
        """In the appender: False if the group's deadline passed first (its jobs never run)."""
        with self._lock:
            if self._state == _EXPIRED:
                return False
            self._state = _STARTED
            return True

    def expire(self) -> None:
        """On the loop, at the deadline: whoever still waits is answered 503. Jobs not started
        never will be; a batch already running still commits what it does."""
        with self._lock:
            if self._state == _WAITING:
                self._state = _EXPIRED
        failure = AuditUnavailable("the audit log did not commit in time; try again")
        for member in self.members:
            if member.waiter is not None and not member.waiter.done():
                member.waiter.set_exception(failure)


Rows = list[tuple[type[SQLModel], dict[str, Any]]]
Linked = list[tuple[Draft, str]]  # drafts with their data's canonical JSON, computed once


@dataclass
class _Outcome:
    pending: _Pending[Any]
    value: Any = None
    error: BaseException | None = None
    wants_checkpoint: bool = False
    checkpoint_actor: str | None = None  # who asked for the checkpoint
    valid_before: float = math.inf  # JobContext.valid_before


@dataclass
class _Reads:
    """What a batch's jobs read (``JobContext.memoized``) on the state whose stamp is ``stamp``:
    ``values`` (this batch's), ``kept`` (earlier batches' lasting reads on the same stamp: only
    read during the batch, added to after its commit) and ``lasting``, the keys this batch read
    that may serve later batches while the stamp holds."""

    stamp: str | None
    kept: dict[Any, Any] = field(default_factory=dict)
    values: dict[Any, Any] = field(default_factory=dict)
    lasting: set[Any] = field(default_factory=set)


@dataclass
class _Prepared:
    """A read-only batch run on a snapshot (``reads.stamp``)."""

    reads: _Reads
    outcomes: list[_Outcome]
    drafts: Linked
    rows: Rows
    now: datetime  # the batch's time, its entries' ts: at or after each job's decision

    def holds(self, stamp: str | None, now: datetime) -> bool:
        """Under the chain lock, where the stamp is ``stamp``: may this be committed as it is?
        Only if no batch that could change state committed since (the stamp is the same) and
        every job's decision still holds at ``now``, the time its entries will carry."""
        moment = now.timestamp()
        return stamp == self.reads.stamp and all(
            moment < outcome.valid_before for outcome in self.outcomes
        )


class Appender:
    def __init__(
        self,
        db: Database,
        *,
        clock: Clock,
        audit_key: Callable[[Tx], KeyPair],
        checkpoint_every: int,
        checkpoint_log: CheckpointLog,
        batch_max: int = 256,
        after_change: Callable[[], None] | None = None,
        answer_within: float = 60.0,
        prepare_first: bool | None = None,
        anchor: Anchor | None = None,
    ) -> None:
        self._db = db
        # Checked before each signing: the log still extends what was signed (``anchor``).
        self._anchor = anchor
        self._clock = clock
        self._audit_key = audit_key
        self._checkpoint_every = checkpoint_every
        self._checkpoint_log = checkpoint_log
        self._batch_max = batch_max
        self._after_change = after_change  # run after a commit with a job that was not read-only
        self.answer_within = answer_within  # submit_async's deadline, in seconds
        # Prepare read-only batches before taking the chain lock: always (True), never (False),
        # or (None) while another writer shares the chain (``_note_head``).
        self._prepare_first = prepare_first
        self._last_head: Head | None = None  # the head this appender's last commit left
        self.guarded_commits = 0  # batches committed in one round trip (``_commit_guarded``)
        self._shared_until = -math.inf  # time.monotonic() until which to prepare first
        self._queue: queue.SimpleQueue[_Pending[Any] | _Group | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._groups: dict[asyncio.AbstractEventLoop, _Group] = {}  # filling, one per loop
        self._carry: _Pending[Any] | _Group | None = None  # the next batch's first item
        # Lasting reads of earlier read-only batches, valid while the stamp is ``_kept_stamp``.
        self._kept: dict[Any, Any] = {}
        self._kept_stamp: str | None = None

    @property
    def refused(self) -> LogRewritten | None:
        """Why every append is refused, if the log no longer extends what was signed."""
        return None if self._anchor is None else self._anchor.refused

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="audit-appender", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        # Whatever was queued behind the stop is answered, not left waiting for ever.
        while True:
            try:
                late = self._queue.get_nowait()
            except queue.Empty:
                return
            if late is not None:
                members = late.members if isinstance(late, _Group) else [late]
                self._answer(
                    [(m, None, AuditUnavailable("the vault is shutting down")) for m in members]
                )

    def submit(self, job: Job[T], *, read_only: bool = False) -> Future[T]:
        """Queue ``job``. ``read_only`` promises that it changes nothing but through
        ``ctx.insert``, and reads only through ``engine.fetch_first``: it may then be given a
        ``DriverTx`` instead of a ``Session``."""
        future: Future[T] = Future()
        pending = _Pending(job, future, read_only)
        if self._thread is None:  # no background thread (the CLI): run now, in this thread
            if future.set_running_or_notify_cancel():
                self._commit([pending])
        else:
            self._queue.put(pending)
        return future

    def submit_async(
        self, job: Job[T], *, read_only: bool = False, reads: tuple[Read, ...] = ()
    ) -> asyncio.Future[T]:
        """``submit`` for a coroutine: the result is answered on the running event loop, or
        ``AuditUnavailable`` if no commit came within ``answer_within`` seconds. A read-only job
        may declare what it will read (``Read``)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(job, None, read_only, waiter=loop.create_future(), reads=reads)
        if self._thread is None:  # no background thread: run now, in this thread
            self._commit([pending])
        else:
            group = self._groups.get(loop)
            if group is None:
                group = self._groups[loop] = _Group(loop)
                loop.call_soon(self._hand_over, group)
            pending.group = group
            group.members.append(pending)
        return pending.waiter  # type: ignore[return-value]

    def _hand_over(self, group: _Group) -> None:
        """End of the loop's turn: this turn's jobs go to the appender as one item."""
        if self._groups.get(group.loop) is group:
            del self._groups[group.loop]
        if self._thread is None:  # stopped meanwhile
            closing = AuditUnavailable("the vault is shutting down")
            self._answer([(member, None, closing) for member in group.members])
            return
        group.timer = group.loop.call_later(self.answer_within, group.expire)
        self._queue.put(group)

    def run(self, job: Job[T], timeout: float = 60.0) -> T:
        return self.submit(job).result(timeout)

    def _loop(self) -> None:
        while True:
            first = self._carry or self._queue.get()
            self._carry = None
            if first is None:
                return
            live: list[_Pending[Any]] = []
            item: _Pending[Any] | _Group | None = first
            while item is not None:
                self._take(item, live)
                if len(live) >= self._batch_max:
                    break
                item = self._next_queued()
            if not live:
                continue
            try:
                self._commit(live)
            except Exception:  # never let one batch end the appender: later callers would hang
                log.exception("appender batch failed unexpectedly")
                failure = AuditUnavailable("the audit log failed")
                self._answer([(pending, None, failure) for pending in live])

    def _next_queued(self) -> _Pending[Any] | _Group | None:
        """The next item waiting, or ``None`` if there is none or it is the stop sentinel, which
        goes back to the queue: the batch in hand finishes first."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return None
        if item is None:
            self._queue.put(None)
        return item

    @staticmethod
    def _take(item: _Pending[Any] | _Group, live: list[_Pending[Any]]) -> None:
        """Add ``item``'s jobs to ``live``. A caller that gave up before its job started is
        skipped; once running, a job's future can no longer be cancelled, so answering it
        cannot fail."""
        if isinstance(item, _Group):
            if item.start():
                live.extend(item.members)
        elif item.future is not None and item.future.set_running_or_notify_cancel():
            live.append(item)

    def _take_read_only(self, batch: list[_Pending[Any]]) -> list[_Pending[Any]]:
        """With the chain lock held: add the read-only jobs that queued meanwhile to ``batch``,
        and return them.

        Waiting for the lock (another process held it) is time in which more jobs arrive; taken
        now, they share this commit instead of waiting for the next one. The first job that is
        not read-only is kept for the next batch (``_carry``), so the queue's order holds.
        """
        taken: list[_Pending[Any]] = []
        if self._thread is None or threading.current_thread() is not self._thread:
            return taken  # run in the caller's thread (no appender thread): nothing queued
        while len(batch) + len(taken) < self._batch_max and self._carry is None:
            item = self._next_queued()
            if item is None:
                break
            members = item.members if isinstance(item, _Group) else [item]
            if not all(member.read_only for member in members):
                self._carry = item
                break
            self._take(item, taken)
        batch.extend(taken)
        return taken

    # --- one batch, one transaction ---------------------------------------------------------

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        if self._anchor is not None and self._anchor.refused is not None:
            refused = self._anchor.refused  # the log was rewritten: nothing more is appended
            self._answer([(pending, None, refused) for pending in batch])
            return
        outcomes: list[_Outcome] = []
        read_only = all(pending.read_only for pending in batch)
        signed: list[Checkpoint] = []
        appended: tuple[Head, Head] | None = None
        reads: _Reads | None = None
        prepared: _Prepared | None = None
        if read_only and self.preparing:
            prepared = self._prepare(batch)
        elif read_only and self._knows_state():
            prepared = self._prepare(batch, stamp=self._kept_stamp)
            if prepared is not None:
                # what queued while it was prepared joins it, as it would join a batch that
                # waited for the lock: one commit, not two
                prepared = self._prepare_joining(batch, prepared)
            if prepared is not None and self._commit_guarded(prepared):
                return
        try:
            transaction = self._db.write_driver(_OPENING) if read_only else self._db.write()
            with transaction as session:
                now = self._clock.now()
                drafts: Linked = []
                rows: Rows = []
                before: Head | None = None  # read now: read-only jobs append no entries
                if read_only:
                    assert isinstance(session, DriverTx)  # write_driver() gives one
                    stamp = meta_repo.stamp_of(session.opened[0])
                    before = audit_repo.head_of(session.opened[1])
                    taken = self._take_read_only(batch)  # now part of the batch, too
                    if prepared is not None and prepared.holds(stamp, now):
                        outcomes, drafts, rows = prepared.outcomes, prepared.drafts, prepared.rows
                        reads, rest = prepared.reads, taken
                    else:
                        reads, rest = self._reads_on(stamp), batch
                    self._run_read_only_jobs(session, rest, now, reads, outcomes, drafts, rows)
                else:
                    assert isinstance(session, Session)  # write() gives a session
                    meta_repo.restamp(session)  # what read-only jobs read may change now
                    self._run_mixed_jobs(session, batch, now, outcomes, drafts)
                _insert_rows(session, rows)
                asked = [outcome for outcome in outcomes if outcome.wants_checkpoint]
                signed, appended = self._append(
                    session,
                    drafts,
                    format_ts(now),
                    forced=bool(asked),
                    by=next((o.checkpoint_actor for o in asked if o.checkpoint_actor), None),
                    before=before,
                )
        except Exception as exc:
            # The transaction is gone: nothing of this batch exists, unless only the COMMIT's
            # answer was lost. Fail every caller closed, unless the log holds the batch.
            if not self._in_log_after(exc, batch, appended):
                return
        self._finish(outcomes, reads, signed, appended, changed=not read_only)

    def _in_log_after(
        self, exc: Exception, batch: list[_Pending[Any]], appended: tuple[Head, Head] | None
    ) -> bool:
        """After the transaction of ``batch`` failed with ``exc``: True if the batch is in the
        log all the same (the caller then finishes it as committed); else its callers are
        answered ``AuditUnavailable`` here.

        ``appended`` is known once the batch was linked and inserted, so the failure was the
        COMMIT's (or its answer's); before that, nothing was sent that could commit."""
        found: bool | None = False
        if appended is not None:
            found = self._holds(appended[1])
            if found:
                log.warning(
                    "the commit of a batch of %d jobs reported %s, but the batch is in the log "
                    "(the COMMIT's answer was lost): answered as committed",
                    len(batch),
                    type(exc).__name__,
                )
                return True
        failure = self._append_failed(exc, len(batch), unsure=found is None)
        self._answer([(pending, None, failure) for pending in batch])
        return False

    def _holds(self, head: Head) -> bool | None:
        """Whether the log holds ``head`` (its seq, with that hash), read under the chain lock:
        a transaction whose COMMIT was on its way holds the lock until it has ended one way or
        the other (PostgreSQL releases a transaction's advisory lock at its end; SQLite's commit
        ended in this thread). ``None`` if the database cannot say."""
        try:
            with self._db.write_driver() as tx:
                stored = audit_repo.hash_at(tx, head.seq)
        except Exception as exc:  # still failing: nobody can say
            log.error("whether a failed commit committed cannot be read: %s", type(exc).__name__)
            return None
        return stored == head.hash

    def _append_failed(
        self, exc: Exception, jobs: int, *, unsure: bool = False
    ) -> AuditUnavailable:
        """What every job of a batch that could not be committed gets. A server logs why (its
        clients get a 503 and nothing more); a command run in the foreground has one caller,
        which reports the failure with the driver's reason in one line (never the statement or
        its parameters). ``unsure``: whether the batch committed could not be read; the callers
        are refused all the same, but not told that nothing was done."""
        if isinstance(exc, LogRewritten):  # logged where it was found; nothing was done
            return exc
        reason = str(getattr(exc, "orig", None) or "").strip().splitlines()
        cause = f"{type(exc).__name__}: {reason[0][:160]}" if reason else type(exc).__name__
        done = (
            "whether its entries were written is unknown (audit verify shows them)"
            if unsure
            else "nothing was done"
        )
        if self._thread is None:
            return AuditUnavailable(f"the audit log cannot be written ({cause}); {done}")
        log.error("audit append failed, batch of %d refused: %s; %s", jobs, cause, done)
        if unsure:
            return AuditUnavailable("the audit log did not confirm the write; refused all the same")
        return AuditUnavailable("the audit log cannot be written; nothing was done")

    def _finish(
        self,
        outcomes: list[_Outcome],
        reads: _Reads | None,
        signed: list[Checkpoint],
        appended: tuple[Head, Head] | None,
        *,
        changed: bool,
    ) -> None:
        """After a batch's commit: what it leaves known, then its answers."""
        if appended is not None:
            self._note_head(*appended)
        self._keep(reads)
        if self._after_change is not None and changed:
            self._after_change()
        checkpoint = signed[-1] if signed else None  # the head this batch left
        if checkpoint is not None and self._anchor is not None:
            self._anchor.signed(checkpoint)
            # the other processes' checkpoints it checked the log against are in this
            # process's checkpoint log too: from its next start, it trusts them as its own
            signed = [*self._anchor.adopted(), *signed]
        if signed:
            try:
                self._checkpoint_log.append(signed)
            except OSError as exc:  # the database holds it; catch_up writes it at next start
                log.error("checkpoint log %s not written: %s", self._checkpoint_log.path, exc)
        self._answer(
            [(o.pending, checkpoint if o.wants_checkpoint else o.value, o.error) for o in outcomes]
        )

    def _prepare(self, batch: list[_Pending[Any]], stamp: str | None = None) -> _Prepared | None:
        """Run a read-only batch's jobs on a snapshot, without the chain lock (see the module's
        docstring); ``None`` if the database failed, and the batch then runs under the lock.
        ``stamp``: the state stamp as a previous batch read it under the lock, not read again
        (``_commit_guarded`` checks it under the lock)."""
        outcomes: list[_Outcome] = []
        drafts: Linked = []
        rows: Rows = []
        try:
            with self._db.read_driver() as tx:
                if stamp is None:
                    stamp = meta_repo.state_stamp(tx)  # first: a change replaces it
                reads = self._reads_on(stamp)
                now = self._clock.now()
                self._run_read_only_jobs(tx, batch, now, reads, outcomes, drafts, rows)
        except SQLAlchemyError:
            return None
        return _Prepared(reads, outcomes, drafts, rows, now)

    def _prepare_joining(self, batch: list[_Pending[Any]], prepared: _Prepared) -> _Prepared | None:
        """Take the read-only jobs that queued meanwhile into ``batch`` and prepare them onto
        ``prepared`` (same reads), decided now; the batch's time becomes now, so no entry
        predates its request. ``None`` if the database failed, and then the whole batch, those
        jobs included, runs under the lock."""
        joining = self._take_read_only(batch)
        if not joining:
            return prepared
        now = self._clock.now()
        try:
            with self._db.read_driver() as tx:
                self._run_read_only_jobs(
                    tx,
                    joining,
                    now,
                    prepared.reads,
                    prepared.outcomes,
                    prepared.drafts,
                    prepared.rows,
                )
        except SQLAlchemyError:
            return None
        prepared.now = max(prepared.now, now)
        return prepared

    def _knows_state(self) -> bool:
        """Whether a read-only batch may be committed by ``_commit_guarded``: preparing is left
        to this appender (``prepare_first=None``), the database takes a guarded write, and this
        appender knows the stamp and head its last batches left (no other writer seen lately:
        then the guard would only fail)."""
        return (
            self._prepare_first is None
            and self._db.guarded_write_ready()
            and self._kept_stamp is not None
            and self._last_head is not None
            and time.monotonic() >= self._shared_until
        )

    def _commit_guarded(self, prepared: _Prepared) -> bool:
        """Commit a read-only batch prepared on the stamp and head this appender's last batches
        left, in one round trip (``Database.write_guarded``), unless a checkpoint is due (its key
        is read under the lock). True if the batch is done: committed, or failed closed as in
        ``_commit``. False if it must go the usual way: the guard found that the stamp or the
        head had changed (another writer), so nothing was committed, or it was not tried."""
        head = self._last_head
        assert head is not None  # _knows_state
        assert prepared.reads.stamp is not None
        every = self._checkpoint_every
        if (
            any(outcome.wants_checkpoint for outcome in prepared.outcomes)
            or head.seq // every != (head.seq + len(prepared.drafts)) // every
            or not prepared.holds(prepared.reads.stamp, self._clock.now())
        ):
            return False
        guard = (prepared.reads.stamp, head.seq, head.hash)
        appended: tuple[Head, Head] | None = None
        try:
            with self._db.write_guarded(_UNCHANGED, guard) as tx:
                _insert_rows(tx, list(prepared.rows))  # a copy: kept if it must go again
                signed, appended = self._append(
                    tx, prepared.drafts, format_ts(prepared.now), forced=False, before=head
                )
        except GuardFailed:
            # another writer: prepare first, and leave the guard alone for a while (each failed
            # guard costs a round trip, and psycopg logs a warning for its aborted pipeline)
            self._shared_until = time.monotonic() + SHARED_AFTER_A_GUARD_FAILED
            return False
        except Exception as exc:  # as in _commit
            batch = [outcome.pending for outcome in prepared.outcomes]
            if not self._in_log_after(exc, batch, appended):
                return True
        self.guarded_commits += 1
        self._finish(prepared.outcomes, prepared.reads, signed, appended, changed=False)
        return True

    def _reads_on(self, stamp: str | None) -> _Reads:
        """A batch's reads, starting from the kept lasting ones if the stamp is theirs."""
        if stamp != self._kept_stamp:
            self._kept, self._kept_stamp = {}, stamp
        return _Reads(stamp, self._kept)

    def _keep(self, reads: _Reads | None) -> None:
        """After a commit: keep the lasting reads of a read-only batch; forget every lasting
        read after any other (``None``). Only this batch's new keys are added, not a copy."""
        if reads is None or reads.stamp != self._kept_stamp:
            self._kept, self._kept_stamp = {}, None
            return
        if len(self._kept) + len(reads.lasting) > KEPT_MAX:
            self._kept.clear()
        for key in reads.lasting:
            self._kept[key] = reads.values[key]

    def _run_read_only_jobs(
        self,
        tx: Tx,
        jobs: list[_Pending[Any]],
        now: datetime,
        reads: _Reads,
        outcomes: list[_Outcome],
        drafts: Linked,
        rows: Rows,
    ) -> None:
        if not jobs:
            return
        _prefetch(tx, jobs, reads)
        for pending in jobs:
            outcome, job_drafts = self._run_read_only(tx, pending, now, reads, rows)
            outcomes.append(outcome)
            drafts.extend(job_drafts)

    def _run_mixed_jobs(
        self,
        session: Session,
        jobs: list[_Pending[Any]],
        now: datetime,
        outcomes: list[_Outcome],
        drafts: Linked,
    ) -> None:
        """A batch with jobs that change state: the memo is emptied, and the rows waiting are
        inserted, around each of those."""
        reads = _Reads(None)  # nothing kept: these jobs may change what it would hold
        rows: Rows = []
        for pending in jobs:
            if pending.read_only:
                outcome, job_drafts = self._run_read_only(session, pending, now, reads, rows)
            else:
                _insert_rows(session, rows)
                reads.values.clear()
                outcome, job_drafts = self._run_job(session, pending, now)
                reads.values.clear()
            outcomes.append(outcome)
            drafts.extend(job_drafts)
        _insert_rows(session, rows)

    @staticmethod
    def _answer(answers: list[tuple[_Pending[Any], Any, BaseException | None]]) -> None:
        """Threads' futures now; each event loop's waiters in one callback on that loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for pending, value, error in answers:
            if pending.future is not None:
                _settle(pending.future, value=value, error=error)
            elif pending.waiter is not None:
                loop = pending.waiter.get_loop()
                by_loop.setdefault(loop, []).append((pending, value, error))
        for loop, answered in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: no one waits on it
                loop.call_soon_threadsafe(_answer_on_loop, answered)

    @staticmethod
    def _run_read_only(
        session: Tx, pending: _Pending[Any], now: datetime, reads: _Reads, rows: Rows
    ) -> tuple[_Outcome, Linked]:
        """A job that writes nothing itself: no savepoint. A database error in it cannot be
        contained without one, so it fails the whole batch closed. It is given the batch's
        ``Tx``: a ``DriverTx`` when the whole batch is read-only (``submit``)."""
        ctx = JobContext(now=now, memo=reads.values, kept=reads.kept, lasting=reads.lasting)
        try:
            value = pending.job(cast(Any, session), ctx)
            linked = _with_texts([*ctx.drafts, *ctx.refusals])  # unauditable: fails the job
        except VaultError as exc:
            return _Outcome(pending, error=exc), _auditable(ctx.refusals)
        except NotCanonicalizable:
            return _Outcome(pending, error=InvalidRequest("a value cannot be audited")), []
        except SQLAlchemyError:
            raise
        except Exception as exc:  # a bug in one job must not take the batch down
            log.exception("audit job failed")
            return _Outcome(pending, error=exc), []
        rows.extend(ctx.inserts)
        outcome = _Outcome(
            pending,
            value=value,
            wants_checkpoint=ctx.wants_checkpoint,
            checkpoint_actor=ctx.checkpoint_actor,
            valid_before=ctx.valid_before,
        )
        return outcome, linked

    @staticmethod
    def _run_job(
        session: Session, pending: _Pending[Any], now: datetime
    ) -> tuple[_Outcome, Linked]:
        ctx = JobContext(now=now)
        savepoint = session.begin_nested()
        try:
            value = pending.job(session, ctx)
            _insert_rows(session, ctx.inserts)
            session.flush()
            linked = _with_texts([*ctx.drafts, *ctx.refusals])  # unauditable: fails the job
        except VaultError as exc:
            savepoint.rollback()
            return _Outcome(pending, error=exc), _auditable(ctx.refusals)
        except NotCanonicalizable:
            savepoint.rollback()
            return _Outcome(pending, error=InvalidRequest("a value cannot be audited")), []
        except (DataError, IntegrityError) as exc:
            # The statement was refused, the transaction is intact up to the savepoint: this
            # job fails, the rest of the batch goes on.
            savepoint.rollback()
            error = Conflict if isinstance(exc, IntegrityError) else InvalidRequest
            return _Outcome(pending, error=error("the request cannot be stored")), []
        except SQLAlchemyError:
            raise  # the database failed: the whole batch fails closed
        except Exception as exc:  # a bug in one job must not take the batch down
            savepoint.rollback()
            log.exception("audit job failed")
            return _Outcome(pending, error=exc), []
        savepoint.commit()
        outcome = _Outcome(
            pending,
            value=value,
            wants_checkpoint=ctx.wants_checkpoint,
            checkpoint_actor=ctx.checkpoint_actor,
        )
        return outcome, linked

    @property
    def preparing(self) -> bool:
        """Whether a read-only batch is prepared before taking the chain lock, now."""
        if self._prepare_first is None:
            return time.monotonic() < self._shared_until
        return self._prepare_first

    def idle(self) -> bool:
        """Nothing is queued (a batch may still be running)."""
        return self._carry is None and self._queue.empty()

    def _note_head(self, before: Head, after: Head) -> None:
        """After a commit that appended from the head ``before`` to ``after``: if the chain had
        moved since this appender's previous commit, another process appends to it too, and the
        lock is shared; for a while, read-only batches are prepared before taking it. One
        writer alone gains nothing by that (it would only add a read transaction per batch)."""
        if self._last_head is not None and before != self._last_head:
            self._shared_until = time.monotonic() + SHARED_FOR_SECONDS
        self._last_head = after

    def _append(
        self,
        session: Tx,
        drafts: Linked,
        ts: str,
        *,
        forced: bool,
        before: Head | None,
        by: str | None = None,
    ) -> tuple[list[Checkpoint], tuple[Head, Head] | None]:
        """Link and insert ``drafts`` (and checkpoints when one is due or ``forced``, asked
        for by ``by``) after ``before``, the head (read now if ``None``); the checkpoints made
        (the last one signs the head the batch leaves), and the heads before and after."""
        if not drafts and not forced:
            return [], None
        if before is None:
            before = audit_repo.head(session)
        entries = link(before, [d for d, _ in drafts], ts, texts=[t for _, t in drafts])
        after = Head(entries[-1].seq, entries[-1].hash) if entries else before
        signed: list[Checkpoint] = []
        every = self._checkpoint_every
        if forced or before.seq // every != after.seq // every:
            # Each multiple of ``every`` the batch passes is signed (a batch can be long: a
            # revocation of many tokens), then the batch's end; a marker entry for each follows.
            heads = [
                Head(seq, entries[seq - before.seq - 1].hash)
                for seq in range((before.seq // every + 1) * every, after.seq, every)
            ]
            if self._anchor is not None:  # nothing is signed over a rewritten log
                self._anchor.check(session, before)
            key = self._audit_key(session)  # read under the lock: a retired key signs nothing
            signed = [make_checkpoint(head, ts, key) for head in (*heads, after)]
            asker = by if forced else None  # named on the marker of the head it asked for
            markers = [checkpoint_draft(cp, asker if cp is signed[-1] else None) for cp in signed]
            entries.extend(link(after, markers, ts))
            for made in signed:
                audit_repo.insert_checkpoint(session, made)
        if self._anchor is not None:
            self._anchor.linked(entries)  # their data need no check when it next walks the log
        audit_repo.insert_entries(session, entries)
        last = entries[-1] if entries else None
        return signed, (before, before if last is None else Head(last.seq, last.hash))

    def checkpoint_now(self, actor: str | None = None) -> Checkpoint:
        """Sign the head now (``POST /v1/audit/checkpoint`` by ``actor``), through the same
        queue."""

        def job(_session: Session, ctx: JobContext) -> Checkpoint | None:
            ctx.request_checkpoint(actor)
            return None  # the appender answers with the checkpoint it made

        checkpoint = self.run(job)
        if checkpoint is None:
            raise AuditUnavailable("no checkpoint was made")
        return checkpoint


def _settle(
    future: Future[Any] | asyncio.Future[Any],
    *,
    value: Any = None,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def _answer_on_loop(answered: list[tuple[_Pending[Any], Any, BaseException | None]]) -> None:
    for pending, value, error in answered:
        assert pending.waiter is not None
        _settle(pending.waiter, value=value, error=error)
        group = pending.group
        if group is not None and group.timer is not None:
            group.timer.cancel()  # every member of a group is answered by the same batch


def _prefetch(session: Tx, batch: list[_Pending[Any]], reads: _Reads) -> None:
    """The reads the batch's jobs declared, one load per name, into the batch's memo; those
    kept from earlier batches on the same stamp (lasting reads) are not read again."""
    memo, kept = reads.values, reads.kept
    wanted: dict[tuple[str, Callable[[Any, list[Any]], dict[Any, Any]]], dict[Any, None]] = {}
    for pending in batch:
        for name, load_many, key in pending.reads:
            if (name, key) not in kept:
                wanted.setdefault((name, load_many), {})[key] = None  # each once, in order
    for (name, load_many), keys in wanted.items():
        found = load_many(session, list(keys))
        for key in keys:
            memo[name, key] = found[key]


def _insert_rows(session: Tx, rows: Rows) -> None:
    """Insert and forget ``rows``: one statement (an executemany) per table, in first-seen order.
    The rows hold plain text and integers (``execute_many``)."""
    if not rows:
        return
    by_table: dict[tuple[type[SQLModel], tuple[str, ...]], list[tuple[Any, ...]]] = {}
    for table, row in rows:
        by_table.setdefault((table, tuple(row)), []).append(tuple(row.values()))
    rows.clear()
    for (table, columns), values in by_table.items():
        execute_many(session, _insert_sql(table, columns), values)


@functools.cache
def _insert_sql(table: type[SQLModel], columns: tuple[str, ...]) -> str:
    """The INSERT of ``columns`` into ``table``, every name taken from the table's metadata."""
    known = table.__table__.columns  # type: ignore[attr-defined]
    unknown = [name for name in columns if name not in known]
    if unknown:
        raise ValueError(f"no such column(s) in {table.__name__}: {unknown}")
    names = ", ".join(known[name].name for name in columns)
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {table.__tablename__} ({names}) VALUES ({marks})"  # noqa: S608


def _with_texts(drafts: list[Draft]) -> Linked:
    """Each draft with its data's canonical JSON; ``NotCanonicalizable`` if one has none."""
    return [(draft, draft.data_json()) for draft in drafts]


def _auditable(drafts: list[Draft]) -> Linked:
    """Refusal drafts are kept though the job raised; one that cannot be canonicalized (the API
    refuses such input before it gets here) must not take the batch down with it."""
    try:
        return _with_texts(drafts)
    except NotCanonicalizable:
        log.error("a refusal could not be audited: its data is not canonicalizable")
        return []


def checkpoint_draft(checkpoint: Checkpoint, actor: str | None = None) -> Draft:
    """The ``audit.checkpoint`` entry of ``checkpoint``: ``actor`` is who asked for it (none
    for one made every ``VAULT_CHECKPOINT_EVERY`` entries)."""
    return Draft(
        type=AUDIT_CHECKPOINT,
        actor=actor,
        subject=None,
        data={"seq": checkpoint.seq, "hash": checkpoint.hash, "kid": checkpoint.kid},
    )
