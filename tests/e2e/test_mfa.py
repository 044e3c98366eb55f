"""Delegation against a real Open WebUI 0.12.4 that enforces MFA (``ENABLE_MFA=True``).

A second Open WebUI for this module, started like the session stack's but with MFA enforced from
its first start (the env var only seeds ``auth.mfa.enable`` in a fresh ``DATA_DIR``). With MFA
enforced, Open WebUI refuses a ``typ=session`` JWT that lacks ``mfa_verified: true``; a delegation
never verified a second factor, so the middleware's mapper mints ``typ=automation`` instead. These
tests show, on the real thing:

- MFA really is enforced here: signup answers a challenge, not a token, and a session token
  minted with Open WebUI's own ``create_token`` (right key, right ``session_stamp``) is refused
  without ``mfa_verified`` and accepted with it;
- a delegated request to an ordinary endpoint is served as the subject, with the subject's data;
- the documented limitation: "who am I" (``GET /api/v1/auths/``, ``get_human_user``) answers 403
  to a delegation, and still no native token comes back to the caller.

Accounts are seeded through Open WebUI's REST API like a person would: each one enrolls a TOTP
authenticator (``tests.e2e.seed.seed_with_mfa``), so the admin's session used for
``dvault subjects sync`` is a genuine MFA-verified one.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import OpenWebUIProcess, owui_env
from tests.e2e.seed import Seeded, SeedError, seed_with_mfa
from tests.support import Api, LiveServer, cli_env, dvault, make_settings
from vault.ops.setup import init_vault

pytestmark = pytest.mark.e2e

JWT_LIKE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")
MINT_TIMEOUT = 90.0

# Runs in the Open WebUI venv: sign each requested claim set with Open WebUI's own create_token
# (HS256 with WEBUI_SECRET_KEY, adds jti/iat/exp), exactly as Open WebUI signs its sessions.
MINT_SCRIPT = """
import json, sys
from datetime import timedelta
from open_webui.utils.auth import create_token
wanted = json.load(sys.stdin)
tokens = {name: create_token(claims, expires_delta=timedelta(minutes=5))
          for name, claims in wanted.items()}
with open(sys.argv[1], "w") as out:
    json.dump(tokens, out)
"""


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


@dataclass
class MfaStack:
    api: Api
    delegator_id: str
    delegator: str
    verifier_id: str
    owui: OpenWebUIProcess
    http: httpx.Client
    accounts: Seeded
    signup: dict[str, Any]  # what the first signup answered
    chats: dict[str, str]  # role -> id of a chat that account created natively
    minted: dict[str, str]  # control tokens signed by Open WebUI's create_token

    def issue(self, subject: str, scope: str) -> dict[str, Any]:
        response = self.api.token(self.delegator, subject, scope=scope)
        assert response.status_code == 200, response.text
        issued: dict[str, Any] = response.json()
        return issued

    def as_bearer(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kw)


class Minter:
    """A python process in the Open WebUI venv, started early (importing Open WebUI takes
    seconds), that signs claim sets handed to it later on stdin.

    Same ``WEBUI_SECRET_KEY`` as the server; its own scratch ``DATA_DIR``, because importing
    ``open_webui`` runs its migrations on ``DATA_DIR`` and must not race the starting server
    (signing reads nothing from the database)."""

    def __init__(self, venv: Path, env: dict[str, str], workdir: Path) -> None:
        self.out = workdir / "minted.json"
        self.log = workdir / "minter.log"
        with self.log.open("wb") as log:  # not a pipe: nobody reads it while Open WebUI imports
            self.proc = subprocess.Popen(
                [str(venv / "bin" / "python"), "-c", MINT_SCRIPT, str(self.out)],
                env=env,
                cwd=workdir,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def mint(self, wanted: dict[str, dict[str, Any]]) -> dict[str, str]:
        self.proc.communicate(json.dumps(wanted), timeout=MINT_TIMEOUT)
        assert self.proc.returncode == 0, self.log.read_text("utf-8", "replace")[-2000:]
        tokens: dict[str, str] = json.loads(self.out.read_text())
        return tokens

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=MINT_TIMEOUT)


@pytest.fixture(scope="module")
def mfa(owui_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MfaStack]:
    base = tmp_path_factory.mktemp("e2e-mfa")
    home = base / "vault-home"
    settings = make_settings(home, f"sqlite:///{home / 'vault.db'}")
    initialized = init_vault(settings)
    assert settings.master_key is not None
    secret_key = secrets.token_urlsafe(32)

    with contextlib.ExitStack() as cleanup:
        vault = cleanup.enter_context(LiveServer(settings))
        api = Api(vault.url, initialized.credential)
        cleanup.callback(api.close)
        verifier_id, verifier = api.principal("open-webui", "verifier")
        delegator_id, delegator = api.principal("support-bot", "delegator")

        data_dir = base / "openwebui-data"
        data_dir.mkdir()
        owui = OpenWebUIProcess(
            owui_venv,
            owui_env(
                VAULT_URL=vault.url,
                VAULT_VERIFIER_CREDENTIAL=verifier,
                VAULT_ISSUER=settings.issuer,
                VAULT_AUDIENCE=settings.audience,
                WEBUI_SECRET_KEY=secret_key,
                DATA_DIR=str(data_dir),
                ENABLE_MFA="True",
            ),
            base,
        )
        cleanup.callback(owui.stop)
        owui.start()
        scratch = base / "minter-data"
        scratch.mkdir()
        minter = Minter(
            owui_venv,
            owui_env(WEBUI_SECRET_KEY=secret_key, DATA_DIR=str(scratch), FROM_INIT_PY="true"),
            base,
        )
        cleanup.callback(minter.stop)
        try:
            ready_after = owui.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        print(f"Open WebUI (MFA enforced) ready in {ready_after:.1f} s on {owui.url}")

        http = httpx.Client(base_url=owui.url, timeout=30)
        cleanup.callback(http.close)
        try:
            accounts, signup = seed_with_mfa(owui.url)
        except SeedError as exc:
            pytest.fail(f"seeding Open WebUI failed: {exc}; log tail:\n{owui.log_tail()}")

        cli = cli_env(
            home,
            VAULT_DATABASE_URL=settings.database_url,
            VAULT_MASTER_KEY=settings.master_key,
            OPENWEBUI_ADMIN_TOKEN=accounts.admin.session_token or "",
        )
        synced = dvault(cli, "subjects", "sync", "--openwebui-url", owui.url)
        assert synced.returncode == 0, synced.stderr
        assert json.loads(synced.stdout)["created"] == 3, synced.stdout

        chats = {}
        for account in (accounts.admin, accounts.user):
            created = http.post(
                "/api/v1/chats/new",
                headers={"Authorization": f"Bearer {account.session_token}"},
                json={"chat": {"title": f"Native chat of {account.email}", "messages": []}},
            )
            assert created.status_code == 200, created.text
            chats[account.role] = created.json()["id"]

        # The user's real session carries the user's current session_stamp: the controls below
        # differ from an accepted token only where the test says.
        user_session = payload(accounts.user.session_token or "")
        assert user_session["mfa_verified"] is True, user_session
        like_the_mapper = {
            "id": accounts.user.id,
            "auth_method": "delegation",
            "session_stamp": user_session["session_stamp"],
        }
        minted = minter.mint(
            {
                "session_unverified": {**like_the_mapper, "typ": "session", "mfa_verified": False},
                "session_verified": {**like_the_mapper, "typ": "session", "mfa_verified": True},
                "automation": {**like_the_mapper, "typ": "automation", "mfa_verified": False},
            }
        )

        yield MfaStack(
            api=api,
            delegator_id=delegator_id,
            delegator=delegator,
            verifier_id=verifier_id,
            owui=owui,
            http=http,
            accounts=accounts,
            signup=signup,
            chats=chats,
            minted=minted,
        )


def test_mfa_is_enforced_a_session_token_without_mfa_verified_is_refused(mfa: MfaStack) -> None:
    # A password alone gets no token, only the enrollment challenge.
    assert mfa.signup.get("next_step") == "enroll", mfa.signup
    assert "token" not in mfa.signup

    # What the mapper would mint if it ignored MFA: Open WebUI refuses it.
    refused = mfa.as_bearer("GET", "/api/v1/chats/", mfa.minted["session_unverified"])
    assert refused.status_code == 401, refused.text
    assert refused.json() == {"detail": "Invalid token"}

    # The same claims with mfa_verified: true pass: key and session_stamp are right, so the
    # refusal above is MFA's and nothing else's.
    accepted = mfa.as_bearer("GET", "/api/v1/chats/", mfa.minted["session_verified"])
    assert accepted.status_code == 200, accepted.text
    assert mfa.chats["user"] in [c["id"] for c in accepted.json()]

    # Open WebUI's own rule for typ=automation, which the mapper relies on: the API yes,
    # "who am I" no.
    automation = mfa.minted["automation"]
    assert mfa.as_bearer("GET", "/api/v1/chats/", automation).status_code == 200
    human_only = mfa.as_bearer("GET", "/api/v1/auths/", automation)
    assert human_only.status_code == 403, human_only.text
    assert human_only.json() == {"detail": "A human session is required."}


@pytest.mark.parametrize(
    ("scope", "path"), [("chats:read", "/api/v1/chats/"), ("models:read", "/api/models")]
)
def test_a_delegated_request_is_served_as_the_subject(mfa: MfaStack, scope: str, path: str) -> None:
    user = mfa.accounts.user
    issued = mfa.issue(user.id, scope)

    response = mfa.as_bearer("GET", path, issued["access_token"])

    assert response.status_code == 200, response.text
    assert not JWT_LIKE.search(response.text), "a JWT came back in the body"
    if path == "/api/v1/chats/":
        chats = [(c["id"], c["title"]) for c in response.json()]
        assert (mfa.chats["user"], f"Native chat of {user.email}") in chats, chats
        assert mfa.chats["admin"] not in [c for c, _ in chats]
    else:
        assert isinstance(response.json()["data"], list), response.text
    [used] = mfa.api.entries(type="token.used", jti=issued["jti"])
    assert (used["data"]["method"], used["data"]["path"]) == ("GET", path)
    assert (used["actor"], used["subject"]) == (mfa.delegator_id, user.id)
    assert (used["data"]["outcome"], used["data"]["verifier"]) == ("allowed", mfa.verifier_id)


def test_a_chat_created_by_delegation_belongs_to_the_subject(mfa: MfaStack) -> None:
    user = mfa.accounts.user
    issued = mfa.issue(user.id, "chats")

    created = mfa.as_bearer(
        "POST",
        "/api/v1/chats/new",
        issued["access_token"],
        json={"chat": {"title": "Delegated under MFA", "messages": []}},
    )

    assert created.status_code == 200, created.text
    chat = created.json()
    assert chat["user_id"] == user.id
    mine = mfa.as_bearer("GET", f"/api/v1/chats/{chat['id']}", user.session_token or "")
    assert mine.status_code == 200, mine.text
    assert mine.json()["title"] == "Delegated under MFA"


@pytest.mark.parametrize("accept_encoding", ["identity", "gzip, deflate, br, zstd"])
def test_who_am_i_is_refused_by_open_webui_and_no_native_token_comes_back(
    mfa: MfaStack, accept_encoding: str
) -> None:
    user, admin = mfa.accounts.user, mfa.accounts.admin
    issued = mfa.issue(user.id, "chats:read")

    # The admin's (MFA-verified) session cookie rides along: it is dropped, not used.
    response = mfa.as_bearer(
        "GET",
        "/api/v1/auths/",
        issued["access_token"],
        headers={"Cookie": f"token={admin.session_token}", "Accept-Encoding": accept_encoding},
    )

    # The documented limitation: Open WebUI's get_human_user wants typ=session, which a
    # delegation cannot have under MFA. The refusal is Open WebUI's ("detail"), not the
    # middleware's ("error"), and the vault recorded the use as allowed.
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "A human session is required."}
    assert not [c for c in response.headers.get_list("set-cookie") if c.startswith("token=")]
    assert not JWT_LIKE.search(response.text), "a JWT came back in the body"
    assert not any(JWT_LIKE.search(v) for v in response.headers.values())
    [used] = mfa.api.entries(type="token.used", jti=issued["jti"])
    assert (used["data"]["path"], used["data"]["outcome"]) == ("/api/v1/auths/", "allowed")

    # The same endpoint still answers a human's own MFA-verified session (passed through).
    who = mfa.as_bearer("GET", "/api/v1/auths/", user.session_token or "")
    assert who.status_code == 200, who.text
    assert (who.json()["id"], who.json()["token"]) == (user.id, user.session_token)
