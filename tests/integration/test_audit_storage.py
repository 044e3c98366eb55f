"""The audit chain in the database (SPEC §7): append-only, tamper-evident, fail closed.

A hostile DBA is played with raw SQL on its own connection: first against the append-only
triggers, then with the triggers dropped, editing the log in every way the SPEC says
verification detects. Each tampered log is checked through the API and through
``python -m vault audit verify`` on the database, which must name the first bad seq.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from tests.support import PG_ADMIN, Api, LiveServer, cli_env, dvault, verify_cli, verify_report
from vault.audit.chain import Head
from vault.audit.checkpoint import make_checkpoint
from vault.config import Settings
from vault.crypto.canonical import canonical_text
from vault.crypto.keys import KeyPair, public_jwk, thumbprint

ROOT = Path(__file__).resolve().parents[2]
ZERO = "0" * 64
COLUMNS = ("seq", "ts", "type", "actor", "subject", "data", "prev", "hash")
POSTGRES_ONLY = pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
# The trigger names of migrations/versions/0001_initial_schema.py.
MIGRATION_TRIGGERS = {
    "sqlite": {
        ("audit_entries", "audit_entries_no_update"),
        ("audit_entries", "audit_entries_no_delete"),
        ("audit_checkpoints", "audit_checkpoints_no_update"),
        ("audit_checkpoints", "audit_checkpoints_no_delete"),
        ("audit_entries", "audit_entries_no_replace"),
        ("audit_checkpoints", "audit_checkpoints_no_replace"),
    },
    "postgresql": {
        ("audit_entries", "audit_entries_no_change"),
        ("audit_entries", "audit_entries_no_truncate"),
        ("audit_checkpoints", "audit_checkpoints_no_change"),
        ("audit_checkpoints", "audit_checkpoints_no_truncate"),
    },
}


def canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(row: dict[str, Any]) -> str:
    """SPEC §7 hash of a stored row (``data`` is canonical JSON text in the table)."""
    entry = {k: row[k] for k in COLUMNS if k != "hash"}
    entry["data"] = json.loads(row["data"])
    return hashlib.sha256(canon(entry)).hexdigest()


def stored_digest(row: dict[str, Any]) -> str:
    """The hash of a stored row over its ``data`` text as it is: the members around it in
    SPEC §7's canonical form, the text put in unchanged."""
    members = {k: row[k] for k in COLUMNS if k not in ("hash", "data")}
    members["data"] = None
    composed = canon(members).decode("utf-8").replace('"data":null', '"data":' + row["data"], 1)
    return hashlib.sha256(composed.encode("utf-8")).hexdigest()


class Dba:
    """Raw SQL on the vault's database, from outside the vault."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, pool_pre_ping=True)
        self.dialect = self.engine.dialect.name

    def run(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def rows(self, table: str = "audit_entries") -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            found = conn.execute(text(f"SELECT * FROM {table} ORDER BY seq")).all()
        return [dict(row._mapping) for row in found]

    def put(self, row: dict[str, Any]) -> None:
        self.run(
            f"INSERT INTO audit_entries ({', '.join(COLUMNS)}) "
            f"VALUES ({', '.join(':' + c for c in COLUMNS)})",
            **row,
        )

    def rewrite(self, row: dict[str, Any]) -> None:
        sets = ", ".join(f"{c} = :{c}" for c in COLUMNS if c != "seq")
        self.run(f"UPDATE audit_entries SET {sets} WHERE seq = :seq", **row)

    def triggers(self) -> set[tuple[str, str]]:
        if self.dialect == "sqlite":
            sql = "SELECT tbl_name, name FROM sqlite_master WHERE type = 'trigger'"
        else:
            sql = (
                "SELECT c.relname, t.tgname FROM pg_trigger t "
                "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
            )
        with self.engine.connect() as conn:
            return {(row[0], row[1]) for row in conn.execute(text(sql))}

    def drop_triggers(self) -> None:
        found = self.triggers()
        assert MIGRATION_TRIGGERS[self.dialect] <= found, found
        for table, name in found:
            if table in ("audit_entries", "audit_checkpoints"):
                on = "" if self.dialect == "sqlite" else f" ON {table}"
                self.run(f"DROP TRIGGER {name}{on}")
        assert not {t for t in self.triggers() if t[0].startswith("audit_")}

    def rechain(self, from_seq: int, *, as_stored: bool = False) -> None:
        """Recompute prev and hash from ``from_seq`` to the head, as a careful forger would;
        ``as_stored``: over ``data`` as the table holds it, whatever the text (what the hash
        covers), instead of its canonical JSON."""
        rows = self.rows()
        prev = ZERO if from_seq == 1 else rows[from_seq - 2]["hash"]
        for row in rows[from_seq - 1 :]:
            row["prev"] = prev
            row["hash"] = prev = stored_digest(row) if as_stored else digest(row)
            self.rewrite(row)

    def close(self) -> None:
        self.engine.dispose()


@pytest.fixture
def dba(settings: Settings) -> Iterator[Dba]:
    hostile = Dba(settings.database_url)
    try:
        yield hostile
    finally:
        hostile.close()


def populate(api: Api, count: int, tag: str = "s") -> None:
    for n in range(count):
        api.subject(f"{tag}-{n}", f"{tag}{n}@example.com")


def checkpoint(api: Api) -> dict[str, Any]:
    r = api.call("POST", "/v1/audit/checkpoint", api.owner)
    assert r.status_code == 201, r.text
    made: dict[str, Any] = r.json()
    return made


# The CLI as it runs on these small logs (one process), and with helper processes walking
# ranges of the chain side by side (vault.ops.verify_parallel): the same report either way.
JOBS: tuple[tuple[str, ...], ...] = ((), ("--jobs", "3"))


def failed_seq(stderr: str) -> int:
    found = re.search(r"verification failed at seq (\d+):", stderr)
    assert found is not None, f"no first bad seq on stderr: {stderr!r}"
    return int(found.group(1))


def assert_healthy(api: Api, settings: Settings | None = None) -> None:
    """The API (and, given the settings, the CLI on the database) finds nothing wrong."""
    report = verify_report(api)
    assert report["ok"] is True, report
    if settings is None:
        return
    for jobs in JOBS:
        done = verify_cli(settings, *jobs)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == report


def assert_caught(api: Api, settings: Settings, seq: int, *, checkpoints_ok: bool) -> None:
    report = verify_report(api)
    assert report["ok"] is False, report
    assert report["first_error"] is not None, report
    assert set(report["first_error"]) == {"seq", "reason"}
    assert report["first_error"]["seq"] == seq, report
    assert report["checkpoints_ok"] is checkpoints_ok, report
    for jobs in JOBS:
        done = verify_cli(settings, *jobs)
        assert done.returncode == 1, (done.stdout, done.stderr)
        assert json.loads(done.stdout) == report
        assert failed_seq(done.stderr) == seq


# --- append-only: the triggers refuse --------------------------------------------------------

REFUSED: dict[str, dict[str, str]] = {
    "update-entry": {"*": "UPDATE audit_entries SET data = '{}' WHERE seq = 2"},
    "renumber-entries": {"*": "UPDATE audit_entries SET seq = seq + 1000"},
    "delete-last-entry": {
        "*": "DELETE FROM audit_entries WHERE seq = (SELECT MAX(seq) FROM audit_entries)"
    },
    "delete-all-entries": {"*": "DELETE FROM audit_entries"},
    "upsert-entry": {
        "*": "INSERT INTO audit_entries (seq, ts, type, data, prev, hash) "
        "VALUES (1, 't', 'x', '{}', 'p', 'h') ON CONFLICT (seq) DO UPDATE SET data = '{}'"
    },
    "replace-entry": {
        "sqlite": "INSERT OR REPLACE INTO audit_entries (seq, ts, type, data, prev, hash) "
        "VALUES (1, 't', 'x', '{}', 'p', 'h')",
        "postgresql": "MERGE INTO audit_entries a USING (SELECT 1 AS seq) s ON a.seq = s.seq "
        "WHEN MATCHED THEN UPDATE SET data = '{}'",
    },
    "update-checkpoint": {"*": "UPDATE audit_checkpoints SET sig = 'forged'"},
    "delete-checkpoints": {"*": "DELETE FROM audit_checkpoints"},
    "replace-checkpoint": {
        "sqlite": "REPLACE INTO audit_checkpoints (seq, hash, ts, kid, sig) "
        "SELECT seq, 'h', 't', 'k', 's' FROM audit_checkpoints",
        "postgresql": "MERGE INTO audit_checkpoints a USING audit_checkpoints s "
        "ON a.seq = s.seq WHEN MATCHED THEN DELETE",
    },
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_database_refuses_changes_to_the_log(api: Api, dba: Dba, case: str) -> None:
    populate(api, 2)
    checkpoint(api)
    before = (dba.rows(), dba.rows("audit_checkpoints"))
    assert before[0]
    assert before[1]
    statements = REFUSED[case]
    sql = statements.get(dba.dialect, statements.get("*"))
    assert sql is not None
    with pytest.raises(DBAPIError, match="append-only"):
        dba.run(sql)
    assert (dba.rows(), dba.rows("audit_checkpoints")) == before
    assert_healthy(api)


@POSTGRES_ONLY
@pytest.mark.parametrize(
    "tables", ["audit_entries", "audit_checkpoints", "audit_entries, audit_checkpoints"]
)
def test_postgres_refuses_truncate(api: Api, dba: Dba, tables: str) -> None:
    assert dba.dialect == "postgresql"
    populate(api, 2)
    checkpoint(api)
    before = (dba.rows(), dba.rows("audit_checkpoints"))
    with pytest.raises(DBAPIError, match="append-only"):
        dba.run(f"TRUNCATE {tables}")
    with pytest.raises(DBAPIError, match="append-only"):
        dba.run(f"TRUNCATE {tables} CASCADE")
    assert (dba.rows(), dba.rows("audit_checkpoints")) == before
    assert_healthy(api)


# --- the tamper matrix: triggers dropped by a hostile DBA ---------------------------------------


@dataclass(frozen=True)
class Caught:
    seq: int
    checkpoints_ok: bool = True


Tamper = Callable[[Api, Dba], Caught | None]


def modify_data(api: Api, dba: Dba) -> Caught:
    row = dba.rows()[5]
    dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d='{"forged":true}', s=row["seq"])
    return Caught(row["seq"])


def modify_actor(api: Api, dba: Dba) -> Caught:
    dba.run("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 7")
    return Caught(7)


def modify_ts(api: Api, dba: Dba) -> Caught:
    row = dba.rows()[8]
    forged = row["ts"].replace(row["ts"][:4], str(int(row["ts"][:4]) - 1))
    dba.run("UPDATE audit_entries SET ts = :t WHERE seq = 9", t=forged)
    return Caught(9)


def delete_middle(api: Api, dba: Dba) -> Caught:
    dba.run("DELETE FROM audit_entries WHERE seq = 6")
    return Caught(6)


def delete_first(api: Api, dba: Dba) -> Caught:
    dba.run("DELETE FROM audit_entries WHERE seq = 1")
    return Caught(1)


def swap_contents(api: Api, dba: Dba) -> Caught:
    rows = dba.rows()
    a, b = rows[4], rows[7]
    dba.rewrite({**b, "seq": a["seq"]})
    dba.rewrite({**a, "seq": b["seq"]})
    return Caught(a["seq"])


def swap_neighbours_rehashed(api: Api, dba: Dba) -> Caught:
    # Reordered *and* re-linked: every later hash recomputed. Still caught: a checkpoint.
    cp = checkpoint(api)
    populate(api, 2, "after")
    rows = dba.rows()
    a, b = rows[3], rows[4]
    dba.rewrite({**b, "seq": a["seq"]})
    dba.rewrite({**a, "seq": b["seq"]})
    dba.rechain(a["seq"])
    return Caught(cp["seq"], checkpoints_ok=False)


def insert_garbage_at_tail(api: Api, dba: Dba) -> Caught:
    head = dba.rows()[-1]
    dba.put(
        {
            "seq": head["seq"] + 1,
            "ts": head["ts"],
            "type": "token.issued",
            "actor": "mallory",
            "subject": "u-1",
            "data": '{"jti":"forged"}',
            "prev": head["hash"],
            "hash": secrets.token_hex(32),
        }
    )
    return Caught(head["seq"] + 1)


def insert_duplicate_at_tail(api: Api, dba: Dba) -> Caught:
    rows = dba.rows()
    dba.put({**rows[2], "seq": rows[-1]["seq"] + 1})
    return Caught(rows[-1]["seq"] + 1)


def insert_forged_in_middle(api: Api, dba: Dba) -> Caught:
    # Renumber seq > 5 up by one, then put a well-formed, correctly linked entry at 6: the
    # chain breaks where the old entry 6 (now 7) still points at entry 5.
    dba.run("UPDATE audit_entries SET seq = -seq WHERE seq > 5")
    dba.run("UPDATE audit_entries SET seq = 1 - seq WHERE seq < 0")
    five = dba.rows()[4]
    forged = {
        "seq": 6,
        "ts": five["ts"],
        "type": "subject.upserted",
        "actor": None,
        "subject": "u-1",
        "data": canon({"id": "u-1", "email": "mallory@example.com"}).decode(),
        "prev": five["hash"],
    }
    dba.put({**forged, "hash": digest({**forged, "hash": None})})
    return Caught(7)


def truncate_covered_tail(api: Api, dba: Dba) -> Caught:
    cp = checkpoint(api)
    populate(api, 2, "after")
    dba.run("DELETE FROM audit_entries WHERE seq > :s", s=cp["seq"] - 3)
    return Caught(cp["seq"] - 2, checkpoints_ok=False)


def rewrite_rehashed_before_checkpoint(api: Api, dba: Dba) -> Caught:
    cp = checkpoint(api)
    populate(api, 2, "after")
    dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d='{"forged":1}', s=cp["seq"] - 3)
    dba.rechain(cp["seq"] - 3)
    return Caught(cp["seq"], checkpoints_ok=False)


def rewrite_rehashed_at_checkpoint(api: Api, dba: Dba) -> Caught:
    cp = checkpoint(api)
    dba.run("UPDATE audit_entries SET actor = 'mallory' WHERE seq = :s", s=cp["seq"])
    dba.rechain(cp["seq"])
    return Caught(cp["seq"], checkpoints_ok=False)


def rewrite_rehashed_after_last_checkpoint(api: Api, dba: Dba) -> None:
    # The limit of a database-only check: what no signed checkpoint covers yet can be rewritten
    # consistently. (A reviewer's saved checkpoint, below, or the next checkpoint catches it.)
    cp = checkpoint(api)
    populate(api, 3, "after")
    dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d='{"forged":1}', s=cp["seq"] + 2)
    dba.rechain(cp["seq"] + 2)


@pytest.mark.parametrize(
    "tamper",
    [
        modify_data,
        modify_actor,
        modify_ts,
        delete_middle,
        delete_first,
        swap_contents,
        swap_neighbours_rehashed,
        insert_garbage_at_tail,
        insert_duplicate_at_tail,
        insert_forged_in_middle,
        truncate_covered_tail,
        rewrite_rehashed_before_checkpoint,
        rewrite_rehashed_at_checkpoint,
        rewrite_rehashed_after_last_checkpoint,
    ],
    ids=lambda f: f.__name__,
)
def test_tampering_is_caught(api: Api, settings: Settings, dba: Dba, tamper: Tamper) -> None:
    populate(api, 8)
    assert_healthy(api)
    dba.drop_triggers()
    before = dba.rows()
    caught = tamper(api, dba)
    assert dba.rows() != before, "the tamper changed nothing"
    if caught is None:
        assert_healthy(api, settings)
    else:
        assert_caught(api, settings, caught.seq, checkpoints_ok=caught.checkpoints_ok)


@pytest.mark.parametrize("how", ["rollback", "rollback-and-rewrite"])
def test_saved_checkpoint_catches_a_rollback_of_entries_and_checkpoints(
    api: Api, settings: Settings, dba: Dba, tmp_path: Path, how: str
) -> None:
    populate(api, 6)
    checkpoint(api)
    populate(api, 3, "b")
    saved = api.call("GET", "/v1/audit/checkpoint", api.owner)
    assert saved.status_code == 200, saved.text
    saved_cp = saved.json()
    (tmp_path / "saved.json").write_text(saved.text, encoding="utf-8")
    populate(api, 2, "c")
    checkpoint(api)
    populate(api, 2, "d")
    assert verify_cli(settings, "--checkpoint", str(tmp_path / "saved.json")).returncode == 0

    dba.drop_triggers()
    rollback_to = saved_cp["seq"] - 4
    if how == "rollback":
        dba.run("DELETE FROM audit_entries WHERE seq > :s", s=rollback_to)
        expected = rollback_to + 1
    else:
        dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d='{"f":1}', s=rollback_to)
        dba.rechain(rollback_to)
        expected = saved_cp["seq"]
    dba.run("DELETE FROM audit_checkpoints WHERE seq >= :s", s=rollback_to)

    # Entries and checkpoints in the database agree again, but the checkpoint log outside it
    # still holds what was removed: the API and the CLI read it too.
    assert settings.checkpoint_log.exists()
    assert_caught(api, settings, expected, checkpoints_ok=False)
    # One who can also rewrite that file (here: remove it) leaves the database alone to tell,
    # and it cannot; a checkpoint the reviewer saved elsewhere still can.
    settings.checkpoint_log.unlink()
    assert_healthy(api, settings)
    done = verify_cli(settings, "--checkpoint", str(tmp_path / "saved.json"))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert failed_seq(done.stderr) == expected
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert report["checkpoints_ok"] is False
    assert report["first_error"]["seq"] == expected


# --- nothing is signed over a rewritten log ---------------------------------------------------


def assert_refuses_to_extend(api: Api, s: Scene) -> None:
    """Every append is refused (503), a checkpoint the first of them: none would be signed."""
    for attempt in (
        api.call("POST", "/v1/audit/checkpoint", api.owner),
        api.call("PUT", "/v1/subjects/late", api.owner, json={"email": "late@example.com"}),
        api.token(s.delegator, "u-1", scope="chat"),
        introspect(api, s, s.token),
    ):
        assert attempt.status_code == 503, attempt.text
        assert attempt.headers.get("retry-after") == "1", attempt.headers
        assert attempt.json()["error"] == "audit_unavailable", attempt.text
        assert "no longer extends its last signed checkpoint" in attempt.json()["error_description"]
    ready = api.call("GET", "/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["checks"]["audit_log"].startswith("refused: the audit log no longer")


@pytest.mark.parametrize("how", ["rewrite", "rollback"])
@pytest.mark.parametrize("restarted", [False, True], ids=["running", "restarted"])
def test_no_checkpoint_is_signed_over_a_rewritten_log(
    api: Api, settings: Settings, dba: Dba, restarted: bool, how: str
) -> None:
    """An entry under a checkpoint changed and every later hash recomputed (or the entries
    from it removed), and the database's checkpoints of that part deleted: the database alone
    then looks sound. The vault does not sign (nor append) over it: its last signed checkpoint
    (in its memory, or the checkpoint log's last line when it starts again) no longer matches
    the log."""
    s = scene(api)
    populate(api, 4)
    first = checkpoint(api)
    populate(api, 3, "b")
    checkpoint(api)  # the one the running vault trusts; the checkpoint log's last
    dba.drop_triggers()
    forged = first["seq"] - 2
    if how == "rewrite":
        dba.run("UPDATE audit_entries SET data = :d WHERE seq = :s", d='{"forged":1}', s=forged)
        dba.rechain(forged)
    else:
        dba.run("DELETE FROM audit_entries WHERE seq >= :s", s=forged)
    dba.run("DELETE FROM audit_checkpoints WHERE seq >= :s", s=forged)
    logged = settings.checkpoint_log.read_bytes()
    head = dba.rows()[-1]
    settings.checkpoint_log.rename(settings.checkpoint_log.with_suffix(".aside"))
    assert verify_report(api)["ok"] is True  # without the file, the database looks sound
    settings.checkpoint_log.with_suffix(".aside").rename(settings.checkpoint_log)

    if restarted:
        with LiveServer(settings) as again:
            other = Api(again.url, api.owner)
            try:
                assert_refuses_to_extend(other, s)
            finally:
                other.close()
    else:
        assert_refuses_to_extend(api, s)

    assert dba.rows()[-1] == head, "something was appended to the rewritten log"
    assert dba.rows("audit_checkpoints") == [], "a checkpoint was signed over it"
    assert settings.checkpoint_log.read_bytes() == logged
    report = verify_report(api)  # reading still works, and names the rewrite
    assert report["ok"] is False
    # where the checkpoint log first vouches for another hash, or the first entry missing
    assert report["first_error"]["seq"] == (first["seq"] if how == "rewrite" else forged)


def test_a_log_that_extends_its_checkpoints_is_signed_as_usual_after_a_restart(
    api: Api, settings: Settings
) -> None:
    s = scene(api)
    populate(api, 3)
    checkpoint(api)
    populate(api, 2, "b")
    with LiveServer(settings) as again:
        other = Api(again.url, api.owner)
        try:
            assert checkpoint(other)["seq"] > 0
            assert other.token(s.delegator, "u-1", scope="chat").status_code == 200
        finally:
            other.close()
    assert checkpoint(api)["seq"] > 0  # the first server goes on, past the second's
    assert api.call("GET", "/readyz").json()["checks"]["audit_log"] == "ok"
    assert_healthy(api, settings)


# --- fail closed --------------------------------------------------------------------------------


@dataclass
class Scene:
    delegator: str
    verifier: str
    token: str


def scene(api: Api) -> Scene:
    api.subject("u-1", "alice@example.com")
    _, delegator = api.principal("support-bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    issued = api.token(delegator, "u-1", scope="chat")
    assert issued.status_code == 200, issued.text
    return Scene(delegator, verifier, issued.json()["access_token"])


def introspect(api: Api, scene: Scene, token: str) -> Any:
    return api.call(
        "POST",
        "/v1/introspect",
        scene.verifier,
        json={"token": token, "method": "POST", "path": "/api/chat/completions"},
    )


def assert_fails_closed(api: Api, dba: Dba, s: Scene) -> None:
    jtis = {r[0] for r in _tokens(dba)}
    head = dba.rows()[-1]
    for attempt in (
        api.token(s.delegator, "u-1", scope="chat"),
        api.token(s.delegator, "nobody@example.com"),  # a denial is audited too: it fails
        introspect(api, s, s.token),
    ):
        assert attempt.status_code == 503, attempt.text
        assert attempt.headers.get("retry-after") == "1", attempt.headers
        body = attempt.json()
        assert body["error"] == "audit_unavailable", body
        assert set(body) == {"error", "error_description"}
        assert "access_token" not in attempt.text
        assert "active" not in body
    assert {r[0] for r in _tokens(dba)} == jtis, "a token row exists for a failed request"
    assert dba.rows()[-1] == head, "an entry exists for a failed request"
    report = verify_report(api)  # reading still works
    assert report["ok"] is True
    assert report["head_seq"] == head["seq"]


def assert_recovered(api: Api, settings: Settings, dba: Dba, s: Scene) -> None:
    jtis = {r[0] for r in _tokens(dba)}
    head = dba.rows()[-1]
    issued = api.token(s.delegator, "u-1", scope="chat")
    assert issued.status_code == 200, issued.text
    used = introspect(api, s, issued.json()["access_token"])
    assert used.status_code == 200, used.text
    assert used.json()["active"] is True
    assert {r[0] for r in _tokens(dba)} - jtis == {issued.json()["jti"]}
    new = [row for row in dba.rows() if row["seq"] > head["seq"]]
    assert [row["type"] for row in new] == ["token.issued", "token.used"]
    assert new[0]["prev"] == head["hash"]
    assert json.loads(new[0]["data"])["jti"] == issued.json()["jti"]
    assert_healthy(api, settings)


def _tokens(dba: Dba) -> list[Any]:
    with dba.engine.connect() as conn:
        return list(conn.execute(text("SELECT jti FROM tokens")).all())


def test_fails_closed_when_the_audit_table_refuses_writes(
    api: Api, settings: Settings, dba: Dba
) -> None:
    """The outage: a trigger makes every INSERT into audit_entries fail, on both databases.

    (On SQLite this is the one outage that is reliable in a test: chmod does not stop root, and
    a competing write lock only makes writers wait out the 60 s busy timeout.)
    """
    s = scene(api)
    if dba.dialect == "sqlite":
        dba.run(
            "CREATE TRIGGER test_outage BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'simulated outage'); END"
        )
    else:
        dba.run(
            "CREATE FUNCTION test_outage() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'simulated outage'; END $$"
        )
        dba.run(
            "CREATE TRIGGER test_outage BEFORE INSERT ON audit_entries "
            "FOR EACH ROW EXECUTE FUNCTION test_outage()"
        )
    assert_fails_closed(api, dba, s)
    dba.run("DROP TRIGGER test_outage" + ("" if dba.dialect == "sqlite" else " ON audit_entries"))
    assert_recovered(api, settings, dba, s)


@POSTGRES_ONLY
def test_fails_closed_when_postgres_goes_read_only(api: Api, settings: Settings, dba: Dba) -> None:
    """The outage: the database turns read-only (as a failed-over replica would) and every
    session is cut; the vault reconnects by itself when the database is writable again."""
    s = scene(api)
    name = make_url(settings.database_url).database
    assert name

    def admin(setting: str) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" {setting}')
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    admin("SET default_transaction_read_only = on")
    try:
        assert dba.scalar("SHOW default_transaction_read_only") == "on"
        assert_fails_closed(api, dba, s)
    finally:
        admin("RESET default_transaction_read_only")
    assert dba.scalar("SHOW default_transaction_read_only") == "off"
    assert_recovered(api, settings, dba, s)


def test_a_copy_of_the_checkpoint_log_is_a_saved_checkpoint_file(
    api: Api, settings: Settings, dba: Dba, tmp_path: Path
) -> None:
    populate(api, 4)
    first = checkpoint(api)
    populate(api, 4, "b")
    checkpoint(api)
    shipped = tmp_path / "shipped.jsonl"  # what an operator copied to write-once storage
    shipped.write_bytes(settings.checkpoint_log.read_bytes())
    assert len(shipped.read_text("utf-8").splitlines()) >= 2
    assert verify_cli(settings, "--checkpoint", str(shipped)).returncode == 0

    dba.drop_triggers()
    dba.run("DELETE FROM audit_entries WHERE seq > :s", s=first["seq"] - 1)
    dba.run("DELETE FROM audit_checkpoints")
    settings.checkpoint_log.write_text("", encoding="utf-8")
    assert_healthy(api, settings)  # nothing left here covers the removed tail
    done = verify_cli(settings, "--checkpoint", str(shipped))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert failed_seq(done.stderr) == first["seq"]


def test_lines_of_the_checkpoint_log_that_are_not_checkpoints_are_left_out(
    api: Api, settings: Settings
) -> None:
    populate(api, 2)
    checkpoint(api)
    with settings.checkpoint_log.open("a", encoding="utf-8") as log:
        log.write('{"seq": 3, "hash": "torn\n\nnot json at all\n')
    assert_healthy(api, settings)


def test_a_checkpoint_file_with_a_line_that_is_not_a_checkpoint_is_refused(
    api: Api, settings: Settings, tmp_path: Path
) -> None:
    populate(api, 2)
    made = checkpoint(api)
    saved = tmp_path / "saved.jsonl"
    saved.write_text(json.dumps(made) + "\n" + '{"seq": 1}\n', encoding="utf-8")
    done = verify_cli(settings, "--checkpoint", str(saved))
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "line 2" in done.stderr
    assert "Traceback" not in done.stderr


# --- trust in the audit keys -------------------------------------------------------------------


def forge_with_own_key(dba: Dba, settings: Settings, *, change_seq: int) -> str:
    """What one who can write the database (not the master key) can do: change an entry,
    re-hash the rest (the checkpoint markers included), add an audit key of their own to
    ``signing_keys``, and re-sign every checkpoint (in the database and in the checkpoint log)
    with it. Returns the added kid."""
    key = Ed25519PrivateKey.generate()
    kid = thumbprint(key.public_key())
    dba.drop_triggers()
    dba.run(
        "INSERT INTO signing_keys (kid, purpose, public_jwk, private_sealed, created_at) "
        "VALUES (:kid, 'audit', :jwk, 'dv1.garbage', :at)",
        kid=kid,
        jwk=canonical_text(public_jwk(key.public_key(), kid)),
        at="2026-11-27T17:00:00.000000Z",
    )
    rows = dba.rows()
    rows[change_seq - 1]["data"] = '{"forged":true}'
    prev = ZERO if change_seq == 1 else rows[change_seq - 2]["hash"]
    for row in rows[change_seq - 1 :]:
        if row["type"] == "audit.checkpoint":  # the marker names the head it signed
            before = rows[row["seq"] - 2]
            row["data"] = canonical_text({"hash": before["hash"], "kid": kid, "seq": before["seq"]})
        row["prev"] = prev
        row["hash"] = prev = digest(row)
        dba.rewrite(row)
    forged = []
    for old in dba.rows("audit_checkpoints"):
        head = Head(old["seq"], rows[old["seq"] - 1]["hash"])
        forged.append(
            make_checkpoint(head, old["ts"], KeyPair(kid=kid, purpose="audit", private_key=key))
        )
    dba.run("DELETE FROM audit_checkpoints")
    for cp in forged:
        dba.run(
            "INSERT INTO audit_checkpoints (seq, hash, ts, kid, sig) "
            "VALUES (:seq, :hash, :ts, :kid, :sig)",
            **cp.to_dict(),
        )
    settings.checkpoint_log.write_text(
        "".join(canonical_text(cp.to_dict()) + "\n" for cp in forged), encoding="utf-8"
    )
    return kid


def test_an_audit_key_added_by_a_database_writer_is_not_believed(
    api: Api, settings: Settings, dba: Dba, tmp_path: Path
) -> None:
    """The vault trusts only the keys it made (their private keys open with the master key):
    the API's verification and published key set leave the added key out; a reviewer who saved
    audit-keys.json checks the database against it (--jwks); one without either still learns
    that a stored key was never recorded in the log."""
    populate(api, 6)
    checkpoint(api)
    populate(api, 3, "b")
    first = checkpoint(api)
    published = api.call("GET", "/.well-known/audit-keys.json")
    saved = tmp_path / "audit-keys.json"
    saved.write_text(published.text, encoding="utf-8")
    assert_healthy(api, settings)

    kid = forge_with_own_key(dba, settings, change_seq=4)

    report = verify_report(api)
    assert report["ok"] is False, report
    assert report["checkpoints_ok"] is False
    assert report["first_error"]["reason"].endswith(f"unknown audit key {kid!r}")
    assert report["first_error"]["seq"] < first["seq"]
    keys = api.call("GET", "/.well-known/audit-keys.json").json()["keys"]
    assert kid not in {k["kid"] for k in keys}
    assert keys == published.json()["keys"]

    against_saved = verify_cli(settings, "--jwks", str(saved))
    assert against_saved.returncode == 1, against_saved.stderr
    assert json.loads(against_saved.stdout) == report

    alone = verify_cli(settings)  # no master key, no saved keys: the database's own keys
    assert "checkpoints are checked with the audit keys stored in the database" in alone.stderr
    assert alone.returncode == 1, alone.stdout
    found = json.loads(alone.stdout)
    assert found["checkpoints_ok"] is True  # signed by a key the database holds...
    assert found["first_error"]["seq"] == found["head_seq"] + 1
    assert "is stored, but no key.created entry" in found["first_error"]["reason"]  # ...unlogged

    with_master_key = dvault(
        cli_env(
            settings.home,
            VAULT_DATABASE_URL=settings.database_url,
            VAULT_MASTER_KEY=settings.master_key or "",
        ),
        "audit",
        "verify",
        "--json",
    )
    assert with_master_key.returncode == 1
    assert json.loads(with_master_key.stdout) == report


def test_a_log_emptied_with_its_checkpoints_is_not_sound(
    api: Api, settings: Settings, dba: Dba
) -> None:
    """Every stored key has the key.created entry that recorded it: a log deleted whole (with
    its checkpoints and the checkpoint log) is not an empty, sound log."""
    populate(api, 3)
    checkpoint(api)
    dba.drop_triggers()
    dba.run("DELETE FROM audit_entries")
    dba.run("DELETE FROM audit_checkpoints")
    settings.checkpoint_log.write_text("", encoding="utf-8")
    report = verify_report(api)
    assert report["ok"] is False
    assert report["entries"] == 0
    assert report["first_error"]["seq"] == 1
    assert "no key.created entry up to seq 0 records it" in report["first_error"]["reason"]
    done = verify_cli(settings)
    assert done.returncode == 1
    assert json.loads(done.stdout) == report


def test_a_stored_key_that_is_not_a_key_is_one_clear_line(
    api: Api, settings: Settings, dba: Dba
) -> None:
    """A public JWK changed by hand (another x, the same kid) is left out with a warning,
    never a traceback; the checkpoints it signed no longer verify."""
    populate(api, 3)
    checkpoint(api)
    other = Ed25519PrivateKey.generate().public_key()
    row = dba.scalar("SELECT public_jwk FROM signing_keys WHERE purpose = 'audit'")
    jwk = json.loads(row)
    jwk["x"] = public_jwk(other, "x")["x"]
    dba.run("UPDATE signing_keys SET public_jwk = :j WHERE purpose = 'audit'", j=json.dumps(jwk))
    done = verify_cli(settings)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "left out" in done.stderr
    assert json.loads(done.stdout)["checkpoints_ok"] is False
