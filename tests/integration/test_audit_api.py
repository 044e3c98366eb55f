"""The audit log over HTTP (SPEC §6, §7): query, export, checkpoints, verification.

Every hash and signature is re-checked here with hashlib, json and cryptography only, as a
reviewer who does not trust the vault would; the vault's own verifier is then run as a
subprocess on the export and on tampered copies of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import create_engine, text

from tests.support import Api, LiveServer, MovableClock, make_settings
from vault.config import Settings
from vault.ops.setup import InitResult, init_vault
from vault.storage import migrate
from vault.storage.engine import Database

ROOT = Path(__file__).resolve().parents[2]
ENTRY_KEYS = {"seq", "ts", "type", "actor", "subject", "data", "prev", "hash"}
CHECKPOINT_KEYS = {"seq", "hash", "ts", "kid", "sig"}
VERIFY_KEYS = {"ok", "entries", "head_seq", "head_hash", "checkpoints_ok", "first_error"}
ERROR_KEYS = {"error", "error_description"}
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
HEX64 = re.compile(r"[0-9a-f]{64}")
ZERO = "0" * 64


# --- independent reviewer's tools: hashlib, json and cryptography only ---------------------


def canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_digest(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canon({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def b64u_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64u_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def check_chain(entries: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1)), "seq has gaps"
    prev = ZERO
    for entry in entries:
        assert set(entry) == ENTRY_KEYS, entry
        assert entry["prev"] == prev, f"prev broken at seq {entry['seq']}"
        assert entry["hash"] == entry_digest(entry), f"hash wrong at seq {entry['seq']}"
        prev = entry["hash"]


def verify_signature(checkpoint: dict[str, Any], jwks: dict[str, Any]) -> None:
    """Raise InvalidSignature (or StopIteration for an unknown kid) unless it verifies."""
    jwk = next(k for k in jwks["keys"] if k["kid"] == checkpoint["kid"])
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    assert "d" not in jwk
    public_key = Ed25519PublicKey.from_public_bytes(b64u_decode(jwk["x"]))
    signed = canon({"seq": checkpoint["seq"], "hash": checkpoint["hash"], "ts": checkpoint["ts"]})
    public_key.verify(b64u_decode(checkpoint["sig"]), signed)


def parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def cli(*args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    if settings is not None:
        env["VAULT_HOME"] = str(settings.home)
        env["VAULT_DATABASE_URL"] = settings.database_url
    return subprocess.run(
        [sys.executable, "-m", "vault", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def failed_seq(stderr: str) -> int:
    found = re.search(r"verification failed at seq (\d+):", stderr)
    assert found is not None, f"no first bad seq on stderr: {stderr!r}"
    return int(found.group(1))


def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == code, body


# --- a little of everything in the log ------------------------------------------------------


@dataclass
class Cast:
    delegator_id: str
    delegator: str
    verifier: str
    auditor: str
    token: str
    jti: str


def activity(api: Api) -> Cast:
    api.subject("u-1", "alice@example.com")
    r = api.call(
        "PUT",
        "/v1/subjects/u-2",
        api.owner,
        json={
            "email": "zoe@example.com",
            "name": "Zoë Łukasz 日本",
            "role": "user",
            "active": True,
        },
    )
    assert r.status_code in (200, 201), r.text
    delegator_id, delegator = api.principal("support-bot", "delegator")
    _, verifier = api.principal("owui", "verifier")
    _, auditor = api.principal("reviewer", "auditor")
    issued = api.token(delegator, "alice@example.com", scope="chat", reason="TICKET-42 — ünï")
    assert issued.status_code == 200, issued.text
    used = api.call(
        "POST",
        "/v1/introspect",
        verifier,
        json={
            "token": issued.json()["access_token"],
            "method": "POST",
            "path": "/api/chat/completions",
            "client_ip": "10.0.0.7",
        },
    )
    assert used.status_code == 200, used.text
    assert used.json()["active"] is True
    assert_error(api.token(delegator, "nobody@example.com"), 404, "unknown_subject")
    return Cast(
        delegator_id=delegator_id,
        delegator=delegator,
        verifier=verifier,
        auditor=auditor,
        token=issued.json()["access_token"],
        jti=issued.json()["jti"],
    )


def page(api: Api, credential: str | None = None, **params: Any) -> Any:
    r = api.call("GET", "/v1/audit/entries", credential or api.owner, params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"entries", "next_after_seq"}, body
    return body


def export(api: Api, credential: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    r = api.call("GET", "/v1/audit/export", credential or api.owner)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0].strip() == "application/x-ndjson"
    assert r.text.endswith("\n")
    return r.text, [json.loads(line) for line in r.text.splitlines()]


def split(lines: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    kinds = ["kind" in line for line in lines]
    assert kinds == sorted(kinds), "an entry line follows a checkpoint line"
    entries = [line for line in lines if "kind" not in line]
    checkpoints = [line for line in lines if "kind" in line]
    assert all(cp["kind"] == "checkpoint" for cp in checkpoints)
    return entries, checkpoints


# --- GET /v1/audit/entries --------------------------------------------------------------------


def test_entries_have_the_pinned_shape(api: Api) -> None:
    cast = activity(api)
    body = page(api, limit=1000)
    entries = body["entries"]
    assert body["next_after_seq"] is None
    check_chain(entries)
    for e in entries:
        assert TS.fullmatch(e["ts"]), e
        assert isinstance(e["type"], str)
        assert e["type"]
        assert e["actor"] is None or isinstance(e["actor"], str)
        assert e["subject"] is None or isinstance(e["subject"], str)
        assert isinstance(e["data"], dict)
        assert HEX64.fullmatch(e["prev"])
        assert HEX64.fullmatch(e["hash"])
    by_type = {e["type"]: e for e in entries}
    assert {"key.created", "principal.created", "subject.upserted"} <= set(by_type)
    assert {"jti", "scope", "exp", "ttl_seconds", "reason", "client_ip"} <= set(
        by_type["token.issued"]["data"]
    )
    assert by_type["token.issued"]["data"]["reason"] == "TICKET-42 — ünï"
    assert {"subject", "scope", "ttl_seconds", "reason", "error"} <= set(
        by_type["token.denied"]["data"]
    )
    assert by_type["token.denied"]["data"]["error"] == "unknown_subject"
    used = by_type["token.used"]
    assert {"jti", "method", "path", "client_ip", "outcome"} <= set(used["data"])
    assert used["data"]["outcome"] == "allowed"
    assert (used["actor"], used["subject"]) == (cast.delegator_id, "u-1")
    # No entry holds a token or a credential.
    dump = json.dumps(entries)
    for secret in (cast.token, cast.delegator, cast.verifier, cast.auditor, api.owner):
        assert secret not in dump


def test_entries_filters(api: Api) -> None:
    cast = activity(api)
    everything = page(api, limit=1000)["entries"]

    def expect(params: dict[str, Any], keep: Any) -> None:
        wanted = [e for e in everything if keep(e)]
        assert wanted, f"the filter {params} selects nothing: a useless check"
        assert page(api, limit=1000, **params)["entries"] == wanted, params

    expect({"after_seq": 3}, lambda e: e["seq"] > 3)
    expect({"type": "subject.upserted"}, lambda e: e["type"] == "subject.upserted")
    expect({"actor": cast.delegator_id}, lambda e: e["actor"] == cast.delegator_id)
    expect({"subject": "u-1"}, lambda e: e["subject"] == "u-1")
    # A subject may be named by its email too (SPEC 4), in any case, as for a token.
    expect({"subject": "ALICE@example.com"}, lambda e: e["subject"] == "u-1")
    expect({"jti": cast.jti}, lambda e: e["data"].get("jti") == cast.jti)
    expect(
        {"type": "token.used", "actor": cast.delegator_id},
        lambda e: e["type"] == "token.used" and e["actor"] == cast.delegator_id,
    )
    assert {e["type"] for e in page(api, limit=1000, jti=cast.jti)["entries"]} == {
        "token.issued",
        "token.used",
    }
    assert page(api, type="no.such.type")["entries"] == []
    assert page(api, jti="no-such-jti")["entries"] == []
    assert page(api, subject="nobody@example.com")["entries"] == []


def test_entries_pages_with_next_after_seq(api: Api) -> None:
    activity(api)
    everything = page(api, limit=1000)["entries"]
    collected: list[dict[str, Any]] = []
    after, pages = 0, 0
    while True:
        body = page(api, after_seq=after, limit=3)
        pages += 1
        full = len(body["entries"]) == 3
        assert (body["next_after_seq"] is not None) == full, body
        collected += body["entries"]
        if body["next_after_seq"] is None:
            break
        assert body["next_after_seq"] == body["entries"][-1]["seq"]
        after = body["next_after_seq"]
    assert collected == everything
    assert pages >= len(everything) // 3
    exact = page(api, limit=len(everything))
    assert exact["next_after_seq"] == everything[-1]["seq"]
    assert page(api, after_seq=exact["next_after_seq"])["entries"] == []
    assert page(api, after_seq=exact["next_after_seq"])["next_after_seq"] is None
    assert page(api, limit=1000)["next_after_seq"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 1001},
        {"limit": 0},
        {"limit": "ten"},
        {"after_seq": -1},
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
    ],
)
def test_entries_refuses_bad_parameters(api: Api, params: dict[str, Any]) -> None:
    r = api.call("GET", "/v1/audit/entries", api.owner, params=params)
    assert_error(r, 400, "invalid_request")
    assert page(api, limit=1000)["entries"], "a valid query still works"


def test_entries_since_and_until(api: Api, clock: MovableClock) -> None:
    api.subject("early", "early@example.com")
    clock.advance(7200)
    api.subject("late", "late@example.com")
    everything = page(api, limit=1000)["entries"]
    early = next(e for e in everything if e["subject"] == "early")
    late = next(e for e in everything if e["subject"] == "late")
    boundary = parse_ts(early["ts"]) + timedelta(hours=1)
    spellings = [
        boundary.strftime("%Y-%m-%dT%H:%M:%SZ"),
        boundary.astimezone(timezone(timedelta(hours=2))).isoformat(),
        boundary.replace(tzinfo=None).isoformat(),  # no offset: UTC
    ]
    for spelled in spellings:
        after = page(api, limit=1000, since=spelled)["entries"]
        before = page(api, limit=1000, until=spelled)["entries"]
        assert after == [e for e in everything if parse_ts(e["ts"]) >= boundary], spelled
        assert before == [e for e in everything if parse_ts(e["ts"]) < boundary], spelled
        assert late in after
        assert early in before
    # since is inclusive, until exclusive, at the entry's own timestamp.
    assert late in page(api, limit=1000, since=late["ts"])["entries"]
    assert late not in page(api, limit=1000, until=late["ts"])["entries"]
    assert early not in page(api, limit=1000, since=late["ts"])["entries"]
    window = page(api, limit=1000, since=early["ts"], until=late["ts"])["entries"]
    assert early in window
    assert late not in window


# --- who may read ------------------------------------------------------------------------------

READS = [
    ("GET", "/v1/audit/entries"),
    ("GET", "/v1/audit/export"),
    ("GET", "/v1/audit/checkpoint"),
    ("GET", "/v1/audit/verify"),
]


@pytest.mark.parametrize(("method", "path"), [*READS, ("POST", "/v1/audit/checkpoint")])
def test_audit_endpoints_roles(api: Api, method: str, path: str) -> None:
    cast = activity(api)
    first = api.call("POST", "/v1/audit/checkpoint", api.owner)
    assert first.status_code == 201, first.text
    allowed = {"owner": api.owner}
    if method == "GET":
        allowed["auditor"] = cast.auditor
    for role, credential in allowed.items():
        r = api.call(method, path, credential)
        assert r.status_code == (201 if method == "POST" else 200), (role, r.text)
    forbidden = {"delegator": cast.delegator, "verifier": cast.verifier}
    if method == "POST":
        forbidden["auditor"] = cast.auditor
    for credential in forbidden.values():
        r = api.call(method, path, credential)
        assert_error(r, 403, "forbidden")
    for credential in (None, "dv_" + "A" * 43, "not-a-credential"):
        r = api.call(method, path, credential)
        assert_error(r, 401, "unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")


# --- GET /v1/audit/export ----------------------------------------------------------------------


def test_export_is_the_whole_chain_then_checkpoints(api: Api, initialized: InitResult) -> None:
    cast = activity(api)
    cp = api.call("POST", "/v1/audit/checkpoint", api.owner).json()
    api.subject("u-3", "carol@example.com")
    raw, lines = export(api, cast.auditor)
    entries, checkpoints = split(lines)
    check_chain(entries)
    assert entries[0]["prev"] == ZERO
    assert entries == page(api, limit=1000)["entries"]
    assert [{k: v for k, v in c.items() if k != "kind"} for c in checkpoints] == [cp]
    assert set(checkpoints[0]) == CHECKPOINT_KEYS | {"kind"}
    assert entries[cp["seq"] - 1]["hash"] == cp["hash"]
    (marker,) = [e for e in entries if e["type"] == "audit.checkpoint"]
    assert marker["seq"] == cp["seq"] + 1
    assert marker["actor"] == initialized.owner_id  # the owner who asked for it
    assert "Zoë Łukasz 日本" in raw  # raw UTF-8, as the hash covers it (ensure_ascii=False)
    for secret in (cast.token, cast.delegator, cast.verifier, cast.auditor, api.owner):
        assert secret not in raw


@dataclass
class Exported:
    text: str
    lines: list[str]
    entries: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    audit_keys: dict[str, Any]
    token_keys: dict[str, Any]


def exported(api: Api) -> Exported:
    activity(api)
    assert api.call("POST", "/v1/audit/checkpoint", api.owner).status_code == 201
    api.subject("u-3", "carol@example.com")
    assert api.call("POST", "/v1/audit/checkpoint", api.owner).status_code == 201
    raw, parsed = export(api)
    entries, checkpoints = split(parsed)
    return Exported(
        text=raw,
        lines=raw.splitlines(),
        entries=entries,
        checkpoints=checkpoints,
        audit_keys=api.call("GET", "/.well-known/audit-keys.json").json(),
        token_keys=api.call("GET", "/.well-known/jwks.json").json(),
    )


def _flip_byte(ex: Exported) -> tuple[str, dict[str, Any], int]:
    seq = len(ex.entries) // 2
    line = ex.lines[seq - 1]
    at = line.index('"type":"') + len('"type":"')
    flipped = line[:at] + chr(ord(line[at]) ^ 0x01) + line[at + 1 :]
    lines = [*ex.lines[: seq - 1], flipped, *ex.lines[seq:]]
    return "\n".join(lines) + "\n", ex.audit_keys, seq


def _append_garbage(ex: Exported) -> tuple[str, dict[str, Any], int]:
    return ex.text + "garbage {not json\n", ex.audit_keys, len(ex.entries) + 1


def _delete_line(ex: Exported) -> tuple[str, dict[str, Any], int]:
    seq = len(ex.entries) // 2
    lines = [*ex.lines[: seq - 1], *ex.lines[seq:]]
    return "\n".join(lines) + "\n", ex.audit_keys, seq


def _reorder(ex: Exported) -> tuple[str, dict[str, Any], int]:
    seq = 3
    lines = list(ex.lines)
    lines[seq - 1], lines[seq] = lines[seq], lines[seq - 1]
    return "\n".join(lines) + "\n", ex.audit_keys, seq


def _truncate_tail(ex: Exported) -> tuple[str, dict[str, Any], int]:
    # Drop the last three entries; the checkpoint lines (covering them) stay.
    keep = len(ex.entries) - 3
    lines = [*ex.lines[:keep], *ex.lines[len(ex.entries) :]]
    assert max(cp["seq"] for cp in ex.checkpoints) > keep
    return "\n".join(lines) + "\n", ex.audit_keys, keep + 1


def _other_key(ex: Exported) -> tuple[str, dict[str, Any], int]:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64u_encode(raw)}
    kid = b64u_encode(hashlib.sha256(canon(members)).digest())
    jwks = {"keys": [{**members, "kid": kid, "alg": "EdDSA", "use": "sig"}]}
    return ex.text, jwks, min(cp["seq"] for cp in ex.checkpoints)


def _token_keys(ex: Exported) -> tuple[str, dict[str, Any], int]:
    return ex.text, ex.token_keys, min(cp["seq"] for cp in ex.checkpoints)


def test_export_verifies_offline_with_the_cli(api: Api, tmp_path: Path) -> None:
    ex = exported(api)
    check_chain(ex.entries)
    for cp in ex.checkpoints:
        verify_signature(cp, ex.audit_keys)
    (tmp_path / "audit.jsonl").write_text(ex.text, encoding="utf-8")
    (tmp_path / "audit-keys.json").write_text(json.dumps(ex.audit_keys), encoding="utf-8")
    done = cli(
        "audit", "verify", "--file", str(tmp_path / "audit.jsonl"),
        "--jwks", str(tmp_path / "audit-keys.json"), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {
        "ok": True,
        "entries": len(ex.entries),
        "head_seq": len(ex.entries),
        "head_hash": ex.entries[-1]["hash"],
        "checkpoints_ok": True,
        "first_error": None,
    }
    assert report == api.call("GET", "/v1/audit/verify", api.owner).json()


@pytest.mark.parametrize(
    "tamper",
    [_flip_byte, _append_garbage, _delete_line, _reorder, _truncate_tail, _other_key, _token_keys],
    ids=lambda f: f.__name__.strip("_"),
)
def test_tampered_export_fails_the_cli(api: Api, tmp_path: Path, tamper: Any) -> None:
    ex = exported(api)
    body, jwks, bad_seq = tamper(ex)
    (tmp_path / "audit.jsonl").write_text(body, encoding="utf-8")
    (tmp_path / "keys.json").write_text(json.dumps(jwks), encoding="utf-8")
    done = cli(
        "audit", "verify", "--file", str(tmp_path / "audit.jsonl"),
        "--jwks", str(tmp_path / "keys.json"),
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert failed_seq(done.stderr) == bad_seq, done.stderr
    *violations, failure = done.stderr.strip().splitlines()
    assert failure.startswith("dvault: verification failed at seq"), done.stderr
    # With another key set, the scope table the vault signed is not believed either.
    expected = 1 if tamper in (_other_key, _token_keys) else 0
    assert len(violations) == expected, done.stderr
    assert all("(malformed_entry): scopes.loaded" in line for line in violations), done.stderr


def test_cli_verify_file_needs_jwks(api: Api, tmp_path: Path) -> None:
    ex = exported(api)
    (tmp_path / "audit.jsonl").write_text(ex.text, encoding="utf-8")
    done = cli("audit", "verify", "--file", str(tmp_path / "audit.jsonl"))
    assert done.returncode == 2, done.stderr
    assert "--jwks" in done.stderr


# --- checkpoints -------------------------------------------------------------------------------


def test_checkpoint_make_read_and_verify_signature(api: Api) -> None:
    cast = activity(api)
    assert_error(api.call("GET", "/v1/audit/checkpoint", cast.auditor), 404, "not_found")
    head = page(api, limit=1000)["entries"][-1]

    made = api.call("POST", "/v1/audit/checkpoint", api.owner)
    assert made.status_code == 201, made.text
    cp = made.json()
    assert set(cp) == CHECKPOINT_KEYS
    assert (cp["seq"], cp["hash"]) == (head["seq"], head["hash"])
    assert TS.fullmatch(cp["ts"])
    assert "=" not in cp["sig"]
    assert len(b64u_decode(cp["sig"])) == 64

    audit_keys = api.call("GET", "/.well-known/audit-keys.json").json()
    verify_signature(cp, audit_keys)
    with pytest.raises(InvalidSignature):
        verify_signature({**cp, "seq": cp["seq"] + 1}, audit_keys)
    with pytest.raises(StopIteration):  # the token keys never sign checkpoints
        verify_signature(cp, api.call("GET", "/.well-known/jwks.json").json())

    marker = page(api, after_seq=cp["seq"])["entries"]
    assert [e["type"] for e in marker] == ["audit.checkpoint"]
    assert marker[0]["data"] == {"seq": cp["seq"], "hash": cp["hash"], "kid": cp["kid"]}
    assert api.call("GET", "/v1/audit/checkpoint", cast.auditor).json() == cp

    api.subject("u-9", "nine@example.com")
    second = api.call("POST", "/v1/audit/checkpoint", api.owner).json()
    assert second["seq"] > cp["seq"]
    assert api.call("GET", "/v1/audit/checkpoint", api.owner).json() == second


def test_key_sets_are_disjoint(api: Api) -> None:
    tokens = api.call("GET", "/.well-known/jwks.json")
    audit = api.call("GET", "/.well-known/audit-keys.json")
    assert tokens.status_code == audit.status_code == 200
    token_kids = {k["kid"] for k in tokens.json()["keys"]}
    audit_kids = {k["kid"] for k in audit.json()["keys"]}
    assert token_kids
    assert audit_kids
    assert not token_kids & audit_kids
    for key in [*tokens.json()["keys"], *audit.json()["keys"]]:
        assert "d" not in key
        assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
        raw = b64u_decode(key["x"])
        members = {"crv": "Ed25519", "kty": "OKP", "x": b64u_encode(raw)}
        assert key["kid"] == b64u_encode(hashlib.sha256(canon(members)).digest())  # RFC 7638


def test_init_is_made_even_when_it_cannot_sign_its_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """init's own checkpoint comes after its commit, before the owner credential is shown: if
    it fails, the vault is still made and the credential still given, with a warning."""
    home = tmp_path / "home"
    settings = make_settings(home, f"sqlite:///{home / 'vault.db'}", VAULT_CHECKPOINT_EVERY="2")
    db = Database(settings.database_url)
    try:
        migrate.upgrade(db)
    finally:
        db.dispose()
    with sqlite3.connect(home / "vault.db") as conn:  # the checkpoint table refuses, for real
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_checkpoints "
            "BEGIN SELECT RAISE(ABORT, 'disk quota exceeded'); END"
        )
    with caplog.at_level(logging.WARNING, logger="vault"):
        made = init_vault(settings)
    assert made.credential.startswith("dv_")
    assert "not signed by a checkpoint yet" in caplog.text
    with LiveServer(settings) as server:
        api = Api(server.url, made.credential)
        try:
            assert api.call("GET", "/v1/principals", api.owner).status_code == 200
        finally:
            api.close()


@pytest.mark.parametrize("log_setting", ["default", "custom"])
def test_automatic_checkpoints_every_n_entries(
    tmp_path: Path, database_url: str, clock: MovableClock, log_setting: str
) -> None:
    home = tmp_path / "every"
    # init writes 4 entries: with 3, they pass a multiple that init itself must sign
    every = 3 if log_setting == "custom" else 5
    env = {"VAULT_CHECKPOINT_EVERY": str(every)}
    if log_setting == "custom":
        env["VAULT_CHECKPOINT_LOG"] = str(tmp_path / "worm" / "cp.jsonl")
    settings = make_settings(home, database_url, **env)
    log_path = (
        home / "checkpoints.jsonl" if log_setting == "default" else tmp_path / "worm/cp.jsonl"
    )
    assert settings.checkpoint_log == log_path
    owner = init_vault(settings).credential
    with LiveServer(settings, clock) as server:
        api = Api(server.url, owner)
        try:
            for n in range(17):
                api.subject(f"s-{n}", f"s{n}@example.com")
            entries = page(api, limit=1000)["entries"]
            _, lines = export(api)
            audit_keys = api.call("GET", "/.well-known/audit-keys.json").json()
            latest = api.call("GET", "/v1/audit/checkpoint", api.owner).json()
        finally:
            api.close()

    check_chain(entries)
    exported_cps = [{k: v for k, v in c.items() if k != "kind"} for c in split(lines)[1]]
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT seq, hash, ts, kid, sig FROM audit_checkpoints ORDER BY seq")
            ).all()
    finally:
        engine.dispose()
    stored = [dict(row._mapping) for row in rows]
    in_file = [json.loads(line) for line in log_path.read_text("utf-8").splitlines()]
    assert all(line.pop("kind") == "checkpoint" for line in in_file)
    assert stored == exported_cps == in_file
    assert latest == stored[-1]

    head = entries[-1]["seq"]
    seqs = [cp["seq"] for cp in stored]
    for multiple in range(every, head, every):  # no entry waits longer than ``every``
        assert any(multiple <= s < multiple + every for s in seqs), (multiple, seqs)
    for cp in stored:
        verify_signature(cp, audit_keys)
        assert entries[cp["seq"] - 1]["hash"] == cp["hash"]
        marker = entries[cp["seq"]]  # right after it: here every batch holds one entry
        assert marker["type"] == "audit.checkpoint"
        assert marker["data"] == {"seq": cp["seq"], "hash": cp["hash"], "kid": cp["kid"]}
    assert sum(e["type"] == "audit.checkpoint" for e in entries) == len(stored)


# --- GET /v1/audit/verify ----------------------------------------------------------------------


def test_verify_reports_a_healthy_log(api: Api) -> None:
    cast = activity(api)
    assert api.call("POST", "/v1/audit/checkpoint", api.owner).status_code == 201
    api.subject("u-4", "dave@example.com")
    entries = page(api, limit=1000)["entries"]
    for credential in (api.owner, cast.auditor):
        r = api.call("GET", "/v1/audit/verify", credential)
        assert r.status_code == 200, r.text
        report = r.json()
        assert set(report) == VERIFY_KEYS
        assert report == {
            "ok": True,
            "entries": len(entries),
            "head_seq": entries[-1]["seq"],
            "head_hash": entries[-1]["hash"],
            "checkpoints_ok": True,
            "first_error": None,
        }
