"""Signing keys: rotation, publication windows, audit keys, sealing at rest, the master key."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import create_engine, text

from tests.support import Api, LiveServer, MovableClock, add_principal, make_settings
from vault.audit.appender import JobContext
from vault.audit.semantics import SemanticChecker
from vault.config import Settings
from vault.crypto.keys import TOKEN, open_private
from vault.crypto.master import parse_master_key
from vault.errors import MasterKeyError
from vault.ops import audit, subjects, tokens
from vault.ops.keys import rotate_job
from vault.ops.runtime import Vault, open_vault
from vault.ops.setup import InitResult

ROOT = Path(__file__).resolve().parents[2]
ROTATED_KEYS = {"purpose", "kid", "previous_kid", "previous_published_until"}


def b64u_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def kids(api: Api, path: str) -> set[str]:
    r = api.call("GET", path)
    assert r.status_code == 200, r.text
    return {key["kid"] for key in r.json()["keys"]}


def header_kid(token: str) -> str:
    header = json.loads(b64u_decode(token.split(".")[0]))
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    kid: str = header["kid"]
    return kid


def rotate(api: Api, purpose: str | None = None) -> dict[str, Any]:
    kw: dict[str, Any] = {} if purpose is None else {"json": {"purpose": purpose}}
    r = api.call("POST", "/v1/keys/rotate", api.owner, **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == ROTATED_KEYS
    return body


class People:
    def __init__(self, api: Api) -> None:
        self.api = api
        api.subject("u-1", "alice@example.com")
        _, self.delegator = api.principal("support-bot", "delegator")
        _, self.verifier = api.principal("owui", "verifier")
        _, self.auditor = api.principal("reviewer", "auditor")

    def issue(self, ttl: int = 300) -> dict[str, Any]:
        r = self.api.token(self.delegator, "u-1", scope="chat", ttl_seconds=ttl)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def introspect(self, token: str) -> dict[str, Any]:
        r = self.api.call(
            "POST",
            "/v1/introspect",
            self.verifier,
            json={"token": token, "method": "POST", "path": "/api/chat/completions"},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def rotation(vault: Vault, purpose: str) -> Any:
    """The job ``dvault keys rotate`` runs, in ``vault``'s process."""
    settings = vault.settings
    return rotate_job(
        vault.master_key,
        purpose,
        actor=None,
        max_ttl=settings.max_ttl,
        leeway=settings.leeway_seconds,
    )


def checkpoint_verifies(checkpoint: dict[str, Any], jwks: dict[str, Any]) -> None:
    jwk = next(k for k in jwks["keys"] if k["kid"] == checkpoint["kid"])
    public_key = Ed25519PublicKey.from_public_bytes(b64u_decode(jwk["x"]))
    signed = canon({"seq": checkpoint["seq"], "hash": checkpoint["hash"], "ts": checkpoint["ts"]})
    public_key.verify(b64u_decode(checkpoint["sig"]), signed)


# --- rotation over HTTP ------------------------------------------------------------------------


def test_rotate_needs_an_owner_and_a_valid_body(api: Api) -> None:
    people = People(api)
    before = kids(api, "/.well-known/jwks.json")
    for credential in (people.delegator, people.verifier, people.auditor):
        r = api.call("POST", "/v1/keys/rotate", credential)
        assert r.status_code == 403, r.text
        assert r.json()["error"] == "forbidden"
    for credential in (None, "dv_" + "B" * 43):
        r = api.call("POST", "/v1/keys/rotate", credential)
        assert r.status_code == 401, r.text
    for body in ({"purpose": "nope"}, {"purpose": "token", "extra": 1}, ["token"]):
        r = api.call("POST", "/v1/keys/rotate", api.owner, json=body)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error", "error_description"}
    assert kids(api, "/.well-known/jwks.json") == before
    assert not [e for e in api.entries() if e["type"] == "key.rotated"]


def test_a_chunked_body_is_read_like_any_other(api: Api, initialized: InitResult) -> None:
    # No Content-Length: the body still says which key to rotate, and an empty one means token.
    def chunked(*parts: bytes) -> Iterator[bytes]:
        yield from parts

    r = api.call("POST", "/v1/keys/rotate", api.owner, content=chunked(b'{"purpose":', b'"audit"}'))
    assert r.status_code == 200, r.text
    assert r.json()["purpose"] == "audit"
    assert r.json()["previous_kid"] == initialized.audit_kid
    assert kids(api, "/.well-known/jwks.json") == {initialized.token_kid}
    r = api.call("POST", "/v1/keys/rotate", api.owner, content=chunked(b"[", b"]"))
    assert r.status_code == 400, r.text
    r = api.call("POST", "/v1/keys/rotate", api.owner, content=chunked())
    assert r.status_code == 200, r.text
    assert r.json()["purpose"] == "token"
    assert r.json()["previous_kid"] == initialized.token_kid


def test_token_rotation_keeps_old_tokens_valid(
    api: Api, initialized: InitResult, settings: Settings, clock: MovableClock
) -> None:
    people = People(api)
    old = people.issue(ttl=600)
    assert header_kid(old["access_token"]) == initialized.token_kid

    rotated = rotate(api)
    now = int(clock.now().timestamp())
    assert rotated["purpose"] == "token"
    assert rotated["previous_kid"] == initialized.token_kid
    assert rotated["kid"] != initialized.token_kid
    until = rotated["previous_published_until"]
    assert until >= now + 600 + settings.leeway_seconds  # covers the old token's exp
    assert abs(until - (now + settings.max_ttl + settings.leeway_seconds)) <= 5

    assert kids(api, "/.well-known/jwks.json") == {initialized.token_kid, rotated["kid"]}
    assert rotated["kid"] not in kids(api, "/.well-known/audit-keys.json")
    assert people.introspect(old["access_token"])["active"] is True
    new = people.issue()
    assert header_kid(new["access_token"]) == rotated["kid"]
    assert people.introspect(new["access_token"])["active"] is True

    entries = api.entries()
    created = [e for e in entries if e["type"] == "key.created"]
    assert [e["data"] for e in created] == [
        {"kid": initialized.token_kid, "purpose": "token"},
        {"kid": initialized.audit_kid, "purpose": "audit"},
        {"kid": rotated["kid"], "purpose": "token"},
    ]
    assert [e["actor"] for e in created] == [None, None, initialized.owner_id]  # init: no one
    (event,) = [e for e in entries if e["type"] == "key.rotated"]
    assert event["actor"] == initialized.owner_id
    assert event["data"] == rotated
    assert event["seq"] == created[-1]["seq"] + 1
    assert api.call("GET", "/v1/audit/verify", api.owner).json()["ok"] is True


@pytest.fixture
def eager_api(settings: Settings, clock: MovableClock, initialized: InitResult) -> Iterator[Api]:
    """A server that reloads its key set on every request (no 5 s cache) to see the clock."""
    with LiveServer(settings.with_overrides(key_refresh_seconds=0.0), clock) as server:
        client = Api(server.url, initialized.credential)
        try:
            yield client
        finally:
            client.close()


@pytest.mark.parametrize("reload", ["no-cache", "next-rotation"])
def test_retired_token_key_leaves_jwks_once_its_tokens_expired(
    request: pytest.FixtureRequest,
    initialized: InitResult,
    clock: MovableClock,
    reload: str,
) -> None:
    api: Api = request.getfixturevalue("eager_api" if reload == "no-cache" else "api")
    people = People(api)
    old = people.issue(ttl=300)
    rotated = rotate(api)
    old_kid = initialized.token_kid
    until = rotated["previous_published_until"]

    def published() -> set[str]:
        if reload == "next-rotation":
            rotate(api, "audit")  # any rotation reloads the key set, at the clock's time
        return kids(api, "/.well-known/jwks.json")

    clock.advance(until - int(clock.now().timestamp()) - 10)
    assert old_kid in published(), "retired before its tokens could have expired"
    assert people.introspect(old["access_token"]) == {"active": False}  # expired by now
    clock.advance(20)
    assert published() == {rotated["kid"]}
    rejected = [e for e in api.entries() if e["type"] == "token.rejected"]
    assert people.introspect(old["access_token"]) == {"active": False}
    # Its key is gone: the signature cannot be checked, so the log is not written.
    assert [e for e in api.entries() if e["type"] == "token.rejected"] == rejected
    new = people.issue()
    assert people.introspect(new["access_token"])["active"] is True


def test_audit_rotation_keeps_every_audit_key(
    api: Api, initialized: InitResult, clock: MovableClock, tmp_path: Path
) -> None:
    People(api)
    first = api.call("POST", "/v1/audit/checkpoint", api.owner).json()
    assert first["kid"] == initialized.audit_kid

    rotated = rotate(api, "audit")
    assert rotated["previous_kid"] == initialized.audit_kid
    assert rotated["previous_published_until"] == 2**53 - 1
    second = api.call("POST", "/v1/audit/checkpoint", api.owner).json()
    assert second["kid"] == rotated["kid"]

    clock.advance(10 * 365 * 86400)
    rotate(api)  # reloads the key set, ten years on
    audit_keys = api.call("GET", "/.well-known/audit-keys.json").json()
    assert {k["kid"] for k in audit_keys["keys"]} == {initialized.audit_kid, rotated["kid"]}
    assert not kids(api, "/.well-known/jwks.json") & {initialized.audit_kid, rotated["kid"]}
    for checkpoint in (first, second):
        checkpoint_verifies(checkpoint, audit_keys)
    report = api.call("GET", "/v1/audit/verify", api.owner).json()
    assert (report["ok"], report["checkpoints_ok"]) == (True, True)

    export = api.call("GET", "/v1/audit/export", api.owner)
    (tmp_path / "audit.jsonl").write_text(export.text, encoding="utf-8")
    (tmp_path / "audit-keys.json").write_text(json.dumps(audit_keys), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "vault", "audit", "verify",
         "--file", str(tmp_path / "audit.jsonl"), "--jwks", str(tmp_path / "audit-keys.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("VAULT_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rotations = [e["data"] for e in api.entries() if e["type"] == "key.rotated"]
    assert rotations[0] == rotated


# --- keys at rest ------------------------------------------------------------------------------


def test_private_keys_are_sealed(api: Api, settings: Settings) -> None:
    rotate(api)
    rotate(api, "audit")
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM signing_keys"))]
            meta = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM vault_meta"))]
    finally:
        engine.dispose()
    assert sorted(r["purpose"] for r in rows) == ["audit", "audit", "token", "token"]
    assert settings.master_key is not None
    master = parse_master_key(settings.master_key, source="test")
    stored = json.dumps([rows, meta], default=str)
    assert settings.master_key not in stored
    for row in rows:
        assert row["private_sealed"].startswith("dv1.")
        assert "d" not in json.loads(row["public_jwk"])
        raw = open_private(
            master, kid=row["kid"], purpose=row["purpose"], sealed=row["private_sealed"]
        ).private_key.private_bytes_raw()
        spellings = {
            raw.hex(),
            base64.urlsafe_b64encode(raw).decode().rstrip("="),
            base64.b64encode(raw).decode().rstrip("="),
        }
        for spelled in spellings:
            assert spelled not in stored, f"key {row['kid']} stored in clear"
    if settings.database_url.startswith("sqlite"):
        db_file = Path(settings.database_url.removeprefix("sqlite:///"))
        blob = b"".join(
            p.read_bytes() for p in db_file.parent.glob(db_file.name + "*") if p.is_file()
        )
        for row in rows:
            raw = open_private(
                master, kid=row["kid"], purpose=row["purpose"], sealed=row["private_sealed"]
            ).private_key.private_bytes_raw()
            assert raw not in blob
            assert raw.hex().encode() not in blob


def test_wrong_master_key_fails_loudly(settings: Settings, initialized: InitResult) -> None:
    other = make_settings(settings.home, settings.database_url)  # another random master key
    assert other.master_key != settings.master_key
    with pytest.raises(MasterKeyError) as caught:
        open_vault(other)
    assert type(caught.value) is MasterKeyError
    assert "master key" in caught.value.description

    malformed = make_settings(settings.home, settings.database_url, VAULT_MASTER_KEY="c2hvcnQ")
    with pytest.raises(MasterKeyError):
        open_vault(malformed)

    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env |= {
        "VAULT_HOME": str(settings.home),
        "VAULT_DATABASE_URL": settings.database_url,
        "VAULT_MASTER_KEY": other.master_key or "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "vault", "keys", "rotate"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1
    assert "master key does not match" in done.stderr
    assert "Traceback" not in done.stderr

    vault = open_vault(settings)  # the right key still opens it, and nothing was rotated
    try:
        assert vault.keys.token_signing().kid == initialized.token_kid
    finally:
        vault.close()


def test_a_key_rotated_by_another_process_is_published_before_anyone_signs_with_it(
    settings: Settings, initialized: InitResult
) -> None:
    """Two processes on one database: B's key cache is older than A's rotation. B's published
    key set has the new key at once (and B's next signing batch reads that the keys changed:
    see the test below), so a verifier that meets the new kid in A's token and fetches B's JWKS
    finds it."""
    a, b = open_vault(settings), open_vault(settings)
    try:
        assert b.keys.current().token_signing.kid == initialized.token_kid  # B's cache, now
        rotated = a.appender.run(rotation(a, TOKEN))
        a.keys.reload()
        assert a.keys.token_signing().kid == rotated["kid"]  # A signs with it at once
        assert b.keys.current().token_signing.kid == initialized.token_kid  # B not yet
        token_jwks, audit_jwks = b.keys.published()
        published = {key["kid"] for key in token_jwks["keys"]}
        assert published == {initialized.token_kid, rotated["kid"]}
        assert {key["kid"] for key in audit_jwks["keys"]} == {initialized.audit_kid}
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("purpose", ["token", "audit"])
def test_a_key_retired_by_another_process_signs_nothing_after_its_rotation(
    settings: Settings, clock: MovableClock, initialized: InitResult, purpose: str
) -> None:
    """A server whose key set is fresh for an hour: another process on the same database
    (``dvault keys rotate``, here a vault opened beside it) retires the key. The server's next
    token or checkpoint is signed with the new key, never the retired one, though its cached key
    set is not due for a reload."""
    with LiveServer(settings.with_overrides(key_refresh_seconds=3600.0), clock) as server:
        api = Api(server.url, initialized.credential)
        try:
            people = People(api)

            def signed_kid() -> str:
                if purpose == TOKEN:
                    return header_kid(people.issue()["access_token"])
                made = api.call("POST", "/v1/audit/checkpoint", api.owner)
                assert made.status_code == 201, made.text
                kid: str = made.json()["kid"]
                return kid

            old = initialized.token_kid if purpose == TOKEN else initialized.audit_kid
            assert signed_kid() == old
            other = open_vault(settings, clock=clock)
            try:
                rotated = other.appender.run(rotation(other, purpose))
            finally:
                other.close()
            assert rotated["previous_kid"] == old
            assert signed_kid() == rotated["kid"]
            assert signed_kid() == rotated["kid"]  # and from then on (kept while nothing changes)
            report = api.call("GET", "/v1/audit/verify", api.owner).json()
            assert (report["ok"], report["checkpoints_ok"]) == (True, True)
        finally:
            api.close()


@pytest.mark.parametrize("purpose", ["token", "audit"])
def test_a_key_retired_earlier_in_the_same_batch_signs_nothing(
    settings: Settings, initialized: InitResult, purpose: str
) -> None:
    """A rotation and a signing in one transaction, as when ``POST /v1/keys/rotate`` and a token
    request (or a checkpoint) share an appender batch: the signing sees the rotation that has
    not committed yet (a reload of the keys, on another connection, cannot) and uses the new
    key."""
    vault = open_vault(settings)
    try:
        upsert = subjects.upsert_job(
            subjects.parse_subject("u-1", {"email": "alice@example.com", "role": "user"}),
            actor=None,
        )
        vault.appender.run(upsert)
        delegator = add_principal(vault, "bot", "delegator").principal
        rotate = rotation(vault, purpose)
        body = {"subject": "u-1", "scope": "chat", "ttl_seconds": 60, "reason": "TICKET-1"}
        issue = tokens.issue_job(settings, vault.scopes, vault.keys, delegator, body, None)
        rotated: dict[str, Any] = {}

        def both(session: Any, ctx: JobContext) -> Any:
            rotated.update(rotate(session, ctx))
            if purpose == TOKEN:
                return issue(session, ctx)
            ctx.request_checkpoint()
            return None  # answered with the checkpoint

        signed = vault.appender.run(both)
        kid = header_kid(signed.access_token) if purpose == TOKEN else signed.kid
        assert rotated["previous_kid"] != rotated["kid"]
        assert kid == rotated["kid"]
        assert audit.verify_database(vault.db).ok
    finally:
        vault.close()


class _RotatesDuringTheWalk(SemanticChecker):
    """A checker that, at the first entry of the walk, has another process's appender rotate
    the audit key and sign a checkpoint with the new one: a rotation that commits while a
    verification reads the log, as an owner may run one at any time."""

    def __init__(self, other: Vault) -> None:
        super().__init__()
        self.other = other
        self.rotated = False

    def blank(self) -> SemanticChecker:
        return _RotatesDuringTheWalk(self.other)

    def feed_row(self, row: Any, data: Any = None) -> None:
        if not self.rotated:
            self.rotated = True
            job = rotate_job(
                self.other.master_key,
                "audit",
                actor=None,
                max_ttl=self.other.settings.max_ttl,
                leeway=self.other.settings.leeway_seconds,
            )
            self.other.appender.run(job)
            self.other.keys.reload()
            self.other.appender.checkpoint_now()
        super().feed_row(row, data)


@pytest.mark.parametrize("keys_from", ["vault", "stored"])
def test_a_rotation_during_a_verification_is_no_tampering(
    settings: Settings, initialized: InitResult, keys_from: str
) -> None:
    """A key rotated in after the head was read has its key.created entry after that head: it
    is not held against the log the verification read; nor is a checkpoint signed with it."""
    reader = open_vault(settings, background=True)
    other = open_vault(settings, background=True)
    try:
        reader.appender.checkpoint_now()
        keys = reader.keys.audit_key if keys_from == "vault" else None
        report = audit.verify_database(reader.db, semantics=_RotatesDuringTheWalk(other), keys=keys)
        after = audit.verify_database(reader.db, semantics=SemanticChecker(), keys=keys)
    finally:
        other.close()
        reader.close()
    assert report.ok, report.to_dict()
    assert after.ok, after.to_dict()
    assert after.head_seq > report.head_seq


def test_a_key_row_holding_a_blob_is_not_trusted_and_no_traceback(
    settings: Settings, initialized: InitResult
) -> None:
    """SQLite keeps a blob in a text column: such a row is not a key the vault made."""
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("only SQLite keeps a blob in a text column")
    engine = create_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO signing_keys (kid, purpose, public_jwk, private_sealed, "
                    "created_at) VALUES (:kid, 'audit', '{}', :sealed, '2026-11-27')"
                ),
                {"kid": b"\x01" * 43, "sealed": "dv1." + "A" * 60},
            )
    finally:
        engine.dispose()
    vault = open_vault(settings)
    try:
        published = vault.keys.published()[1]["keys"]
        assert [key["kid"] for key in published] == [initialized.audit_kid]
        report = audit.verify_database(vault.db, keys=vault.keys.audit_key)
    finally:
        vault.close()
    assert not report.ok  # a key the log never recorded
    assert "is stored, but no key.created entry" in report.first_error.reason
