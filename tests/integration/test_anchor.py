"""The vault signs only a log that extends the newest checkpoint it trusts (vault/audit/anchor.py).

The forger here can write the database (raw SQL on its own connection, triggers dropped), not
the checkpoint log file nor the master key; the vault under test is opened for real, in this
process (``open_vault``: what ``serve`` and every writing command run), on SQLite and on
PostgreSQL. Healthy vaults, several of them on one log, must never be refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.test_audit_storage import Dba
from tests.support import make_settings, verify_cli
from vault.audit.checkpoint_log import CheckpointLog
from vault.config import Settings
from vault.errors import LogRewritten
from vault.ops import subjects
from vault.ops.runtime import Vault, open_vault

POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def dba(settings: Settings) -> Iterator[Dba]:
    with contextlib.closing(Dba(settings.database_url)) as hostile:
        yield hostile


def put(vault: Vault, n: int, tag: str = "s") -> None:
    for i in range(n):
        subject = subjects.parse_subject(f"{tag}-{i}", {"email": f"{tag}{i}@example.com"})
        vault.appender.run(subjects.upsert_job(subject, actor="owner"))


def checkpoint(vault: Vault) -> int:
    return vault.appender.checkpoint_now("owner").seq


def written(settings: Settings, n: int) -> int:
    """``n`` subjects put and a checkpoint made by a vault opened for it; the checkpoint's seq."""
    vault = open_vault(settings, background=True)
    try:
        put(vault, n)
        return checkpoint(vault)
    finally:
        vault.close()


def logged(settings: Settings) -> list[int]:
    found, _other = CheckpointLog(settings.checkpoint_log).read()
    return [cp.seq for cp in found]


def refused_when_opened(settings: Settings) -> None:
    """A vault opened on the log refuses it at once, and signs nothing."""
    again = open_vault(settings, background=True)
    try:
        assert again.appender.refused is not None
        with pytest.raises(LogRewritten):
            checkpoint(again)
    finally:
        again.close()


def junk_checkpoint(dba: Dba, seq: int) -> None:
    """A checkpoint row no key of the vault signed, newer than any other."""
    dba.run(
        "INSERT INTO audit_checkpoints (seq, hash, ts, kid, sig) VALUES (:s, :h, :t, :k, :g)",
        s=seq,
        h="0" * 64,
        t="2026-11-29T00:00:00.000000Z",
        k="junk",
        g="AAAA",
    )


def rewrite_under(dba: Dba, seq: int) -> None:
    """Change entry ``seq``, re-hash every later one, delete the database's checkpoints from it."""
    dba.drop_triggers()
    dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d='{"forged":1}', s=seq)
    dba.rechain(seq)
    dba.run("DELETE FROM audit_checkpoints WHERE seq >= :s", s=seq)


def test_a_junk_checkpoint_in_the_database_does_not_make_a_rewrite_trusted(
    settings: Settings, initialized: object, dba: Dba
) -> None:
    """The catch-up copies only checkpoints the vault signed, and the newest one it trusts in
    the file is found before it: a junk row (seq far ahead) neither lands in the file nor
    hides the file's genuine checkpoints. A junk newest row in the database is itself a sign
    of a forger: refused."""
    vault = open_vault(settings, background=True)
    try:
        put(vault, 4)
        first = checkpoint(vault)
        put(vault, 3, "b")
        checkpoint(vault)
    finally:
        vault.close()
    rewrite_under(dba, first - 2)
    junk_checkpoint(dba, 10**9)
    before = settings.checkpoint_log.read_bytes()

    refused_when_opened(settings)
    assert settings.checkpoint_log.read_bytes() == before  # nothing copied, nothing signed


def test_a_junk_newest_checkpoint_stops_a_running_vault_from_signing(
    settings: Settings, initialized: object, dba: Dba
) -> None:
    vault = open_vault(settings, background=True)
    try:
        put(vault, 3)
        checkpoint(vault)
        dba.drop_triggers()
        junk_checkpoint(dba, 10**9)
        with pytest.raises(LogRewritten):
            checkpoint(vault)
        assert vault.appender.refused is not None
    finally:
        vault.close()


def test_a_forged_last_line_of_the_checkpoint_log_hides_no_genuine_one(
    settings: Settings, initialized: object, dba: Dba
) -> None:
    """A line appended to the file that no key of the vault signed is left out; the newest
    genuine one is still the anchor."""
    first = written(settings, 4)
    genuine = settings.checkpoint_log.read_text("utf-8").splitlines()[-1]
    forged = genuine.replace('"kid":"', '"kid":"x', 1).replace(f'"seq":{first}', '"seq":999999')
    with settings.checkpoint_log.open("a", encoding="utf-8") as log:
        log.write(forged + "\n")
    rewrite_under(dba, first - 1)

    again = open_vault(settings, background=True)
    try:
        assert again.appender.refused is not None
    finally:
        again.close()


def test_a_torn_last_line_is_not_glued_to_the_next(settings: Settings, initialized: object) -> None:
    """A crash may leave half a line; the next append (the catch-up at start) begins a new one,
    so the checkpoint it writes is readable."""
    made = written(settings, 3)
    text = settings.checkpoint_log.read_text("utf-8")
    settings.checkpoint_log.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])

    open_vault(settings).close()  # the catch-up writes the torn checkpoint again

    assert logged(settings)[-1] == made
    _found, other = CheckpointLog(settings.checkpoint_log).read()
    assert other == 1  # the torn half, left as it is


def test_each_writer_keeps_the_checkpoints_it_checked_against_in_its_log(
    tmp_path: Path, settings: Settings, initialized: object
) -> None:
    """Two writers on one log, each with a checkpoint log of its own (replicas): one that
    signs after the other has checked the log against the other's checkpoint and writes it
    into its own file too, so that file vouches for it from its next start."""
    other_home = make_settings(tmp_path / "other", settings.database_url)
    other_settings = replace(
        other_home, master_key=settings.master_key, checkpoint_log=tmp_path / "other.jsonl"
    )
    one = open_vault(settings, background=True)
    two = open_vault(other_settings, background=True)
    try:
        put(one, 2)
        by_one = checkpoint(one)
        put(two, 2, "t")
        by_two = checkpoint(two)
        assert by_one < by_two
        assert by_one in logged(other_settings)  # two checked against it, and keeps it
        assert by_two in logged(other_settings)
        assert one.appender.refused is None
        assert two.appender.refused is None
    finally:
        two.close()
        one.close()


@POSTGRES_ONLY
def test_opening_beside_busy_writers_is_never_refused(
    settings: Settings, initialized: object
) -> None:
    """At READ COMMITTED, a checkpoint committed between reading the head and reading the
    newest checkpoint looked like a log cut short: opens beside a writer that checkpoints at
    every batch were refused (14 of 300 in a review). The newest checkpoint is read first."""
    every = dataclasses.replace(settings, checkpoint_every=1)
    writer = open_vault(every, background=True)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            put(writer, 1, f"w{n}")
            n += 1

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        for _ in range(40):
            opened = open_vault(every)
            try:
                assert opened.appender.refused is None
            finally:
                opened.close()
    finally:
        stop.set()
        thread.join(timeout=30)
        writer.close()


# Texts the vault never writes in ``data``: only an object's canonical JSON is.
FOREIGN_DATA = ['{"b":1,"a":2}', '{"a": 1}', "not json", "[1]", '{"a":1,"a":1}', '{"a":1.5}']


@pytest.mark.parametrize("data", FOREIGN_DATA)
def test_an_entry_the_vault_did_not_write_is_never_signed_over(
    settings: Settings,
    initialized: object,
    dba: Dba,
    data: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past the last checkpoint, an entry whose ``data`` the vault could not have written, every
    later hash recomputed over the text as stored: the chain holds, but signed over, that entry
    would be vouched for as the vault's. The vault refuses to sign (and to append), at once and
    when opened again; verification names the entry."""
    vault = open_vault(settings, background=True)
    try:
        put(vault, 3)
        signed = checkpoint(vault)
        put(vault, 3, "b")
        seq = signed + 2
        dba.drop_triggers()
        dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d=data, s=seq)
        dba.rechain(seq, as_stored=True)
        refused = rf"holds an entry the vault did not write \(seq {seq}\)"
        with pytest.raises(LogRewritten, match=refused):
            checkpoint(vault)
        with pytest.raises(LogRewritten, match=refused):
            put(vault, 1, "c")
        (critical,) = [r for r in caplog.records if r.levelno == logging.CRITICAL]
        assert critical.getMessage().startswith(
            f"the audit log holds an entry the vault did not write (seq {seq}) (at seq {seq}: "
        )
    finally:
        vault.close()
    refused_when_opened(settings)
    found = verify_cli(settings, "--no-semantics")
    assert found.returncode == 1, found.stdout
    report = json.loads(found.stdout)
    assert report["first_error"]["seq"] == seq
    assert "not the canonical JSON of an object" in report["first_error"]["reason"]


def test_the_vault_signs_over_the_entries_it_wrote_itself(
    settings: Settings, initialized: object
) -> None:
    """The entries a vault writes pass the check (every test that signs a checkpoint says so
    too, over entries of every kind)."""
    vault = open_vault(settings, background=True)
    try:
        put(vault, 5)
        checkpoint(vault)
        put(vault, 5, "é")
        checkpoint(vault)
        assert vault.appender.refused is None
    finally:
        vault.close()
    assert verify_cli(settings).returncode == 0
