"""Seed a fresh Open WebUI 0.12.4 through its REST API: an admin, an ordinary user, a pending one.

Our own version of the steps in the shared ``seed_users.py`` (the project stays self-contained):

1. ``POST /api/v1/auths/signup``: the first account on a fresh instance becomes the admin;
2. ``POST /api/v1/auths/add`` (admin): an ordinary ``user`` and a ``pending`` account;
3. ``POST /api/v1/auths/signin``: the user's own session token;
4. ``POST /api/v1/users/default/permissions`` (admin): ``features.api_keys = true``, so that
   non-admins may create API keys (``ENABLE_API_KEYS=True`` must also be set at first start);
5. ``POST /api/v1/auths/api_key`` (the user): the user's ``sk-`` key.
"""

from __future__ import annotations

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
