"""Ed25519 key pairs, their public JWKs and RFC 7638 thumbprints (the ``kid``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vault.crypto import envelope
from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.canonical import canonical_json
from vault.errors import MasterKeyError

TOKEN = "token"  # signs delegation tokens; published in /.well-known/jwks.json
AUDIT = "audit"  # signs audit checkpoints; published in /.well-known/audit-keys.json
PURPOSES = (TOKEN, AUDIT)


def raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def thumbprint(public_key: Ed25519PublicKey) -> str:
    """RFC 7638: SHA-256 over the required members of the JWK, canonically ordered."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(raw_public(public_key))}
    return b64url_encode(hashlib.sha256(canonical_json(members)).digest())


def public_jwk(public_key: Ed25519PublicKey, kid: str) -> dict[str, str]:
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(raw_public(public_key)),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


def public_key_from_jwk(jwk: Any) -> tuple[str, Ed25519PublicKey]:
    """Parse an Ed25519 public JWK; the ``kid`` must be its thumbprint (no borrowed kids)."""
    if not isinstance(jwk, dict):
        raise ValueError("a JWK must be an object")
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("only Ed25519 (kty OKP) keys are accepted")
    if "d" in jwk:
        raise ValueError("a public key set must not hold private key material")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise ValueError("JWK has no x")
    raw = b64url_decode(x)
    if len(raw) != 32:
        raise ValueError("Ed25519 public key must be 32 bytes")
    public_key = Ed25519PublicKey.from_public_bytes(raw)
    kid = thumbprint(public_key)
    if jwk.get("kid", kid) != kid:
        raise ValueError(f"JWK kid {jwk.get('kid')!r} is not the key's RFC 7638 thumbprint")
    return kid, public_key


def public_keys_from_jwks(document: Any) -> dict[str, Ed25519PublicKey]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a JWKS must be an object with a "keys" list')
    return dict(public_key_from_jwk(jwk) for jwk in document["keys"])


@dataclass(frozen=True, slots=True)
class KeyPair:
    kid: str
    purpose: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def __repr__(self) -> str:
        return f"KeyPair(kid={self.kid!r}, purpose={self.purpose!r})"


def generate(purpose: str) -> KeyPair:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")
    private_key = Ed25519PrivateKey.generate()
    return KeyPair(
        kid=thumbprint(private_key.public_key()), purpose=purpose, private_key=private_key
    )


def seal_private(master_key: bytes, pair: KeyPair) -> str:
    raw = pair.private_key.private_bytes_raw()
    return envelope.seal(master_key, raw, purpose=pair.purpose, kid=pair.kid)


def open_private(master_key: bytes, *, kid: str, purpose: str, sealed: str) -> KeyPair:
    raw = envelope.open_sealed(master_key, sealed, purpose=purpose, kid=kid)
    if len(raw) != 32:  # from_private_bytes would raise a bare ValueError
        raise MasterKeyError(f"stored key {kid} is not a 32-byte Ed25519 private key")
    private_key = Ed25519PrivateKey.from_private_bytes(raw)
    if thumbprint(private_key.public_key()) != kid:
        raise MasterKeyError(f"stored key {kid} does not match its thumbprint: it was altered")
    return KeyPair(kid=kid, purpose=purpose, private_key=private_key)
