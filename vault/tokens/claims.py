"""Delegation-token claims: building them for issuance and reading them back after verification."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from vault.errors import InvalidClaim, MissingClaim

TOKEN_TYPE = "at+jwt"
ALGORITHM = "EdDSA"
ISSUED_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
MAX_TOKEN_BYTES = 8 * 1024
REQUIRED_CLAIMS = ("iss", "aud", "sub", "act", "client_id", "scope", "iat", "nbf", "exp", "jti")


def new_jti() -> str:
    """144 random bits (18 bytes as base64url, 24 characters) after the issuing time in
    milliseconds (12 hex digits): 36 characters.

    The time prefix is for the database, not for anyone reading the token: the ``tokens`` table
    is indexed by jti, and purely random jtis put each new token on a random page of that
    index, so every token of a batch dirtied a page of its own to write at commit. Prefixed,
    they land together at the index's end. Hex sorts the same in every collation. Uniqueness
    and unpredictability come from the random part alone, so a clock that steps back only
    costs that locality."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_urlsafe(18)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Claims:
    iss: str
    aud: str
    sub: str
    actor: str  # act.sub, the delegator's principal id
    client_id: str
    scope: tuple[str, ...]
    iat: int
    nbf: int
    exp: int
    jti: str

    @property
    def scope_text(self) -> str:
        return " ".join(self.scope)

    @property
    def ttl_seconds(self) -> int:
        return self.exp - self.iat

    def to_payload(self) -> dict[str, Any]:
        return {
            "iss": self.iss,
            "aud": self.aud,
            "sub": self.sub,
            "act": {"sub": self.actor},
            "client_id": self.client_id,
            "scope": self.scope_text,
            "iat": self.iat,
            "nbf": self.nbf,
            "exp": self.exp,
            "jti": self.jti,
        }


def build_claims(
    *,
    issuer: str,
    audience: str,
    subject_id: str,
    actor_id: str,
    scope: tuple[str, ...],
    ttl_seconds: int,
    now: int,
    jti: str | None = None,
) -> Claims:
    return Claims(
        iss=issuer,
        aud=audience,
        sub=subject_id,
        actor=actor_id,
        client_id=actor_id,
        scope=scope,
        iat=now,
        nbf=now,
        exp=now + ttl_seconds,
        jti=jti or new_jti(),
    )


def _str(payload: dict[str, Any], name: str) -> str:
    value = payload[name]
    if not isinstance(value, str) or not value:
        raise InvalidClaim(f"claim {name} must be a non-empty string")
    return value


def _int(payload: dict[str, Any], name: str) -> int:
    value = payload[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidClaim(f"claim {name} must be an integer")
    return value


def claims_from_payload(payload: dict[str, Any]) -> Claims:
    """Shape-check a verified payload. Raises ``MissingClaim`` or ``InvalidClaim``."""
    for name in REQUIRED_CLAIMS:
        if name not in payload:
            raise MissingClaim(f"claim {name} is missing")
    act = payload["act"]
    if not isinstance(act, dict) or not isinstance(act.get("sub"), str) or not act["sub"]:
        raise InvalidClaim('claim act must be {"sub": "<principal id>"}')
    client_id = _str(payload, "client_id")
    if client_id != act["sub"]:
        raise InvalidClaim("claims client_id and act.sub disagree")
    scope = _str(payload, "scope").split(" ")
    if any(not name for name in scope):
        raise InvalidClaim("claim scope must be space-separated names")
    aud = payload["aud"]
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    if not isinstance(aud, str):
        raise InvalidClaim("claim aud must name one audience")
    return Claims(
        iss=_str(payload, "iss"),
        aud=aud,
        sub=_str(payload, "sub"),
        actor=act["sub"],
        client_id=client_id,
        scope=tuple(scope),
        iat=_int(payload, "iat"),
        nbf=_int(payload, "nbf"),
        exp=_int(payload, "exp"),
        jti=_str(payload, "jti"),
    )
