"""``VerifiedSignatures``: a remembered signature never outlives its token or its key."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.crypto import keys
from vault.errors import BadSignature, UnknownKey
from vault.ops.tokens import VerifiedSignatures
from vault.tokens import jws
from vault.tokens.claims import build_claims

NOW = 1_800_000_000


def signed(pair: keys.KeyPair, ttl: int = 300) -> str:
    claims = build_claims(
        issuer="https://vault.test",
        audience="open-webui",
        subject_id="u-1",
        actor_id="p-1",
        scope=("chat",),
        ttl_seconds=ttl,
        now=NOW,
    )
    return jws.sign(claims, pair)


class Lookup:
    """A key set that can stop publishing a key, and counts the lookups."""

    def __init__(self, pair: keys.KeyPair) -> None:
        self.published: dict[str, Ed25519PublicKey] = {pair.kid: pair.public_key}
        self.calls = 0

    def __call__(self, kid: str) -> Ed25519PublicKey | None:
        self.calls += 1
        return self.published.get(kid)


def test_a_remembered_signature_is_not_checked_again() -> None:
    pair = keys.generate(keys.TOKEN)
    token, lookup, seen = signed(pair), Lookup(pair), VerifiedSignatures()
    first = seen.verify(token, lookup, NOW)
    assert first["sub"] == "u-1"
    assert seen.verify(token, lookup, NOW + 1) is first  # the same payload, no new verify


def test_a_key_no_longer_published_ends_the_remembered_signature() -> None:
    pair = keys.generate(keys.TOKEN)
    token, lookup, seen = signed(pair), Lookup(pair), VerifiedSignatures()
    seen.verify(token, lookup, NOW)
    lookup.published.clear()
    with pytest.raises(UnknownKey):
        seen.verify(token, lookup, NOW + 1)


def test_an_expired_token_is_verified_again_and_then_refused_by_its_claims() -> None:
    pair = keys.generate(keys.TOKEN)
    token, lookup, seen = signed(pair, ttl=60), Lookup(pair), VerifiedSignatures()
    payload = seen.verify(token, lookup, NOW)
    later = seen.verify(token, lookup, NOW + 61)  # past exp: not served from memory
    assert later is not payload
    assert later == payload


def test_a_forged_token_is_never_remembered() -> None:
    pair, other = keys.generate(keys.TOKEN), keys.generate(keys.TOKEN)
    forged = signed(other)
    header, payload, _signature = forged.split(".")
    token = f"{header}.{payload}.{signed(pair).split('.')[2]}"
    lookup = Lookup(other)
    seen = VerifiedSignatures()
    for _ in range(2):
        with pytest.raises(BadSignature):
            seen.verify(token, lookup, NOW)


def test_capacity_bounds_what_is_remembered() -> None:
    pair = keys.generate(keys.TOKEN)
    lookup, seen = Lookup(pair), VerifiedSignatures(capacity=2)
    tokens = [signed(pair) for _ in range(3)]
    payloads = [seen.verify(t, lookup, NOW) for t in tokens]
    assert seen.verify(tokens[2], lookup, NOW) is payloads[2]
    assert seen.verify(tokens[0], lookup, NOW) is not payloads[0]  # the oldest was dropped
