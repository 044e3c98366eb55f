"""Seed a fresh Open WebUI 0.12.4 through its REST API: an admin, an ordinary user, a pending one.

Our own version of the steps in the shared ``seed_users.py`` (the project stays self-contained):

1. ``POST /api/v1/auths/signup``: the first account on a fresh instance becomes the admin;
2. ``POST /api/v1/auths/add`` (admin): an ordinary ``user`` and a ``pending`` account;
3. ``POST /api/v1/auths/signin``: the user's own session token;
4. ``POST /api/v1/users/default/permissions`` (admin): ``features.api_keys = true``, so that
   non-admins may create API keys (``ENABLE_API_KEYS=True`` must also be set at first start);
5. ``POST /api/v1/auths/api_key`` (the user): the user's ``sk-`` key.

``seed_with_mfa`` does the same on an Open WebUI that enforces MFA, where each login must enroll
an authenticator before it gets a session token (no ``sk-`` key there).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from dataclasses import dataclass
from typing import Any

import httpx

ADMIN = {"name": "Admin One", "email": "admin@example.com", "password": "Admin-pass-123!"}
USER = {"name": "User Two", "email": "user2@example.com", "password": "User2-pass-123!"}
PENDING = {"name": "Pending Three", "email": "pending3@example.com", "password": "Pend-pass-123!"}


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    email: str
    role: str
    session_token: str | None = None
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class Seeded:
    admin: Account
    user: Account
    pending: Account

    @property
    def accounts(self) -> tuple[Account, ...]:
        return (self.admin, self.user, self.pending)


class SeedError(RuntimeError):
    pass


def _call(
    http: httpx.Client, method: str, path: str, token: str | None = None, body: Any = None
) -> Any:
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = http.request(method, path, headers=headers, json=body)
    if response.status_code != 200:
        raise SeedError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def seed(base_url: str, *, timeout: float = 30.0) -> Seeded:
    """Create the accounts on a fresh Open WebUI; raises ``SeedError`` on any refusal."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as http:
        admin = _call(http, "POST", "/api/v1/auths/signup", body=ADMIN)
        if admin.get("role") != "admin":
            raise SeedError(f"the first signup is not an admin: {admin.get('role')!r}")
        admin_token: str = admin["token"]

        added = {}
        for account, role in ((USER, "user"), (PENDING, "pending")):
            body = _call(
                http, "POST", "/api/v1/auths/add", admin_token, body={**account, "role": role}
            )
            if body.get("role") != role:
                raise SeedError(f"{account['email']} was added as {body.get('role')!r}")
            added[role] = body

        user = _call(
            http,
            "POST",
            "/api/v1/auths/signin",
            body={"email": USER["email"], "password": USER["password"]},
        )

        permissions = _call(http, "GET", "/api/v1/users/default/permissions", admin_token)
        permissions.setdefault("features", {})["api_keys"] = True
        _call(http, "POST", "/api/v1/users/default/permissions", admin_token, body=permissions)

        key = _call(http, "POST", "/api/v1/auths/api_key", user["token"]).get("api_key")
        if not isinstance(key, str) or not key.startswith("sk-"):
            raise SeedError(f"no sk- key for {USER['email']}: {key!r}")

    return Seeded(
        admin=Account(admin["id"], admin["email"], "admin", session_token=admin_token),
        user=Account(user["id"], user["email"], "user", session_token=user["token"], api_key=key),
        pending=Account(added["pending"]["id"], added["pending"]["email"], "pending"),
    )


# --- With MFA enforced (``ENABLE_MFA=True`` at first start) ------------------------------------
#
# Open WebUI then issues no session token for a password alone: signup and signin answer a
# challenge (``next_step: enroll`` the first time), ``/auths/add`` answers the user without a
# token. Each account enrolls an authenticator like a person would: ``mfa/enroll/start`` gives the
# TOTP secret (``manual_key``), ``mfa/enroll/confirm`` with a current code gives the session token
# (``mfa_verified: true``) and recovery codes.


def totp(secret: str, *, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """RFC 6238 (HMAC-SHA1), what authenticator apps and Open WebUI's ``pyotp`` compute."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    counter = int(time.time() if at is None else at) // step
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def _enroll(http: httpx.Client, answer: Any, email: str) -> Any:
    """Finish a login that answered ``next_step: enroll``: returns the session response."""
    if not isinstance(answer, dict) or answer.get("next_step") != "enroll" or "token" in answer:
        raise SeedError(f"{email}: expected an MFA enrollment challenge, got {answer!r:.300}")
    challenge = {"challenge_token": answer["challenge_token"]}
    setup = _call(http, "POST", "/api/v1/auths/mfa/enroll/start", body=challenge)
    session = _call(
        http,
        "POST",
        "/api/v1/auths/mfa/enroll/confirm",
        body={**challenge, "code": totp(setup["manual_key"])},
    )
    if not isinstance(session.get("token"), str) or not session.get("recovery_codes"):
        raise SeedError(f"{email}: enrollment gave no session token")
    return session


def seed_with_mfa(base_url: str, *, timeout: float = 30.0) -> tuple[Seeded, dict[str, Any]]:
    """Like ``seed`` on an Open WebUI with MFA enforced (no ``sk-`` key); also returns what the
    first signup answered (a challenge, not a token)."""
    with httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout) as http:
        signup = _call(http, "POST", "/api/v1/auths/signup", body=ADMIN)
        admin = _enroll(http, signup, ADMIN["email"])
        if admin.get("role") != "admin":
            raise SeedError(f"the first signup is not an admin: {admin.get('role')!r}")
        admin_token: str = admin["token"]

        added = {}
        for account, role in ((USER, "user"), (PENDING, "pending")):
            body = _call(
                http, "POST", "/api/v1/auths/add", admin_token, body={**account, "role": role}
            )
            if body.get("role") != role or "token" in body:
                raise SeedError(f"{account['email']} was added as {body!r:.300}")
            added[role] = body

        answer = _call(
            http,
            "POST",
            "/api/v1/auths/signin",
            body={"email": USER["email"], "password": USER["password"]},
        )
        user = _enroll(http, answer, USER["email"])

    seeded = Seeded(
        admin=Account(admin["id"], admin["email"], "admin", session_token=admin_token),
        user=Account(user["id"], user["email"], "user", session_token=user["token"]),
        pending=Account(added["pending"]["id"], added["pending"]["email"], "pending"),
    )
    return seeded, signup
