"""Acting as an Open WebUI user: mint Open WebUI's own session JWT for them, in-process.

The token carries exactly what Open WebUI 0.12.4 checks (``id``, ``typ``, the user's current
``session_stamp``) and an ``exp`` of at most 60 s, never past the delegation token's. Open WebUI
still checks it on every request (stamp, active account, the user's permissions), so "revoke
sessions" and disabling the account take effect at once, and a minted token can be reused for
its short life (here: until 10 s before its ``exp``) while the user's role and stamp hold.

With MFA enforced, Open WebUI refuses ``typ=session`` tokens without ``mfa_verified``; a delegation
never verified MFA, so the token is minted as ``typ=automation`` instead. Endpoints that insist on
a human session (``get_human_user``: ``GET /api/v1/auths/`` "who am I", account settings) then
answer 403: that is Open WebUI's rule for automation, and the vault does not pretend otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, MutableMapping
from datetime import timedelta
from typing import Any, TypeVar

from vault.middleware import DelegationExpired, SubjectRoleChanged, UnknownUser
from vault.middleware.verifier import ROLE_CHANGED

MAX_NATIVE_LIFETIME = 60
REUSE_MARGIN = 10
MFA_CONFIG_SECONDS = 5.0
AUTH_METHOD = "delegation"


class OpenWebUIMapper:
    def __init__(self, *, now: Callable[[], float] = time.time, capacity: int = 10_000) -> None:
        self._now = now
        self._capacity = capacity
        self._minted: dict[tuple[str, int, str, str], tuple[str, float]] = {}
        self._mfa: tuple[bool, float] = (False, float("-inf"))
        self._latest: dict[tuple[str, int], tuple[str, float]] = {}

    async def native_token(
        self, user_id: str, *, not_after: int, role: str | None = None, checked: bool = True
    ) -> str:
        """Open WebUI's own token for ``user_id``; the user is read on every checked call.

        ``role`` is the subject's role as the vault authorized it: when Open WebUI's current
        role differs (the user was promoted or demoted since), nothing is minted, so a token
        issued for a user never acts as an admin. The minted token is reused (until 10 s before
        its ``exp``) only while the user's role and session stamp are unchanged.
        """
        now = self._now()
        if not_after - now < 1:  # a minted token lives a whole second at least: past not_after
            raise DelegationExpired("the delegation has expired")

        from open_webui.models.auths import Auths
        from open_webui.models.users import Users

        if not checked:  # the caller checks before releasing anything (``UserMapper``)
            latest = self._latest.get((user_id, not_after))
            if latest is not None and latest[1] - REUSE_MARGIN > now:
                return latest[0]
        user = await Users.get_user_by_id(user_id)
        if user is None or user.role not in {"user", "admin"}:
            raise UnknownUser("no such active Open WebUI user")
        if role is not None and user.role != role:
            raise SubjectRoleChanged(ROLE_CHANGED)
        auth = await Auths.get_auth_by_id(user_id)
        if auth is None or not auth.active:
            raise UnknownUser("no such active Open WebUI user")
        key = (user_id, not_after, user.role, auth.session_stamp or "")
        cached = self._minted.get(key)
        if cached is None or cached[1] - REUSE_MARGIN <= now:
            cached = self._mint(user.id, auth.session_stamp, await self._typ(now), not_after, now)
            self._minted = _bounded(self._minted, self._capacity, now)
            self._minted[key] = cached
        self._latest = _bounded(self._latest, self._capacity, now)
        self._latest[(user_id, not_after)] = cached
        return cached[0]

    def resolved_role(self, state: MutableMapping[str, Any]) -> str | None:
        """Open WebUI's ``get_current_user`` leaves the user it resolved in the request's state
        ("scope-backed, so outer middleware can reuse the resolved user"): its role, if any."""
        role = getattr(state.get("user"), "role", None)
        return role if isinstance(role, str) else None

    async def _typ(self, now: float) -> str:
        """``automation`` when MFA is enforced (read at most every 5 s), else ``session``."""
        from open_webui.utils.mfa import get_mfa_config, is_mfa_required

        required, read_at = self._mfa
        if now - read_at > MFA_CONFIG_SECONDS:
            required = is_mfa_required(AUTH_METHOD, await get_mfa_config())
            self._mfa = (required, now)
        return "automation" if required else "session"

    @staticmethod
    def _mint(
        user_id: str, stamp: str | None, typ: str, not_after: int, now: float
    ) -> tuple[str, float]:
        from open_webui.utils.auth import create_token

        lifetime = max(1, min(MAX_NATIVE_LIFETIME, int(not_after - now)))
        token: str = create_token(
            {
                "id": user_id,
                "typ": typ,
                "auth_method": AUTH_METHOD,
                "session_stamp": stamp,
                "mfa_verified": False,
            },
            expires_delta=timedelta(seconds=lifetime),
        )
        return token, now + lifetime


K = TypeVar("K")


def _bounded(
    tokens: dict[K, tuple[str, float]], capacity: int, now: float
) -> dict[K, tuple[str, float]]:
    """``tokens`` with room for one more: expired ones dropped first, then everything."""
    if len(tokens) < capacity:
        return tokens
    live = {k: v for k, v in tokens.items() if v[1] > now}
    return live if len(live) < capacity else {}
