"""Shared fixtures for the pure-module tests: fixed, test-only keys and a token forge.

Every key here is TEST-ONLY. The token key is the Ed25519 key published in RFC 8037 Appendix A.1,
so its kid is the RFC's own thumbprint; the "attacker" key is derived from a fixed seed, so every
run forges byte-identical tokens. Neither protects anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.keys import TOKEN, KeyPair, thumbprint
from vault.tokens import jws
from vault.tokens.claims import Claims, build_claims

# RFC 8037 Appendix A.1 (private d, public x) and A.3 (thumbprint of the public JWK).
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
ATTACKER_SEED = hashlib.sha256(b"delegation-vault TEST-ONLY attacker key").digest()

Segment = dict[str, Any] | bytes | str  # a dict is JSON-encoded, bytes are encoded, str is as-is
Signer = Callable[[bytes], bytes]


def _pair(seed: bytes) -> KeyPair:
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    return KeyPair(kid=thumbprint(private_key.public_key()), purpose=TOKEN, private_key=private_key)


@dataclass(frozen=True)
class TokenKit:
    """One place for the contract under test: keys, a key set, claims, a forge and verify."""

    key: KeyPair = field(default_factory=lambda: _pair(b64url_decode(RFC8037_D)))
    attacker: KeyPair = field(default_factory=lambda: _pair(ATTACKER_SEED))
    issuer: str = "https://vault.test"
    audience: str = "open-webui"
    now: int = 1_800_000_000
    leeway: int = 30
    jti: str = "test-jti-0123456789abcdefghijklmnop"

    @property
    def keyset(self) -> dict[str, Ed25519PublicKey]:
        return {self.key.kid: self.key.public_key}

    def lookup(self, kid: str) -> Ed25519PublicKey | None:
        return self.keyset.get(kid)

    def claims(self, **changes: Any) -> Claims:
        values: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "subject_id": "user-1",
            "actor_id": "app-1",
            "scope": ("chat", "models:read"),
            "ttl_seconds": 300,
            "now": self.now,
            "jti": self.jti,
        }
        values.update(changes)
        return build_claims(**values)

    def payload(self, **changes: Any) -> dict[str, Any]:
        """A valid payload at ``now``; members replaced, added, or removed (given as ``...``)."""
        result = self.claims().to_payload()
        for name, value in changes.items():
            if value is ...:
                del result[name]
            else:
                result[name] = value
        return result

    def header(self, **changes: Any) -> dict[str, Any]:
        """Our pinned header; members replaced, added, or removed (given as ``...``)."""
        result: dict[str, Any] = {"alg": "EdDSA", "typ": "at+jwt", "kid": self.key.kid}
        for name, value in changes.items():
            if value is ...:
                del result[name]
            else:
                result[name] = value
        return result

    def forge(
        self, header: Segment, payload: Segment, signer: Signer | None, *, sig: str | None = None
    ) -> str:
        """A compact JWS from raw parts; ``signer`` None leaves the signature empty."""
        head, body = _segment(header), _segment(payload)
        if sig is None:
            sig = b64url_encode(signer(f"{head}.{body}".encode())) if signer else ""
        return f"{head}.{body}.{sig}"

    def ours(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def theirs(self, message: bytes) -> bytes:
        return self.attacker.sign(message)

    def token(self, **changes: Any) -> str:
        """A valid token signed by our key (through the real ``jws.sign``)."""
        return jws.sign(self.claims(**changes), self.key)

    def verify(self, token: str, *, now: int | None = None, leeway: int | None = None) -> Claims:
        return jws.verify(
            token,
            self.lookup,
            issuer=self.issuer,
            audience=self.audience,
            now=self.now if now is None else now,
            leeway=self.leeway if leeway is None else leeway,
        )


def _segment(part: Segment) -> str:
    if isinstance(part, str):
        return part
    if isinstance(part, dict):
        part = json.dumps(part, separators=(",", ":")).encode()
    return b64url_encode(part)


@pytest.fixture(scope="session")
def kit() -> TokenKit:
    return TokenKit()
