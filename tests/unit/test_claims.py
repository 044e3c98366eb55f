"""Delegation-token claims (SPEC §5): building them, and shape-checking a verified payload."""

from __future__ import annotations

import dataclasses
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.crypto.b64 import b64url_decode
from vault.errors import InvalidClaim, MissingClaim, SignedTokenError
from vault.tokens.claims import (
    ALGORITHM,
    MAX_TOKEN_BYTES,
    REQUIRED_CLAIMS,
    TOKEN_TYPE,
    Claims,
    build_claims,
    claims_from_payload,
    new_jti,
)


def test_contract_constants_match_the_spec():
    assert ALGORITHM == "EdDSA"
    assert TOKEN_TYPE == "at+jwt"
    assert MAX_TOKEN_BYTES == 8192
    assert set(REQUIRED_CLAIMS) == {
        "iss", "aud", "sub", "act", "client_id", "scope", "iat", "nbf", "exp", "jti",
    }  # fmt: skip


def test_jti_has_at_least_128_random_bits_after_its_time():
    before = time.time_ns() // 1_000_000
    jtis = [new_jti() for _ in range(64)]
    after = time.time_ns() // 1_000_000
    assert len(set(jtis)) == 64
    for jti in jtis:
        assert len(jti) == 36
        assert re.fullmatch(r"[0-9a-f]{12}", jti[:12])
        assert before <= int(jti[:12], 16) <= after
        assert len(b64url_decode(jti[12:])) * 8 >= 128  # the random part alone
    assert len({jti[12:] for jti in jtis}) == 64


def test_later_jtis_sort_after_earlier_ones():
    """What the time prefix is for: a new token's index entry lands at the index's end (hex
    digits, all lowercase, sort the same in every collation)."""
    first = new_jti()
    time.sleep(0.002)
    second = new_jti()
    assert first[:12] < second[:12]
    assert first < second


def test_build_claims():
    claims = build_claims(
        issuer="https://vault.test",
        audience="open-webui",
        subject_id="user-1",
        actor_id="app-1",
        scope=("chat", "models:read"),
        ttl_seconds=300,
        now=1000,
        jti="j",
    )
    assert claims == Claims(
        iss="https://vault.test",
        aud="open-webui",
        sub="user-1",
        actor="app-1",
        client_id="app-1",
        scope=("chat", "models:read"),
        iat=1000,
        nbf=1000,
        exp=1300,
        jti="j",
    )
    assert claims.ttl_seconds == 300
    assert claims.scope_text == "chat models:read"


def test_build_claims_draws_a_fresh_jti_when_none_is_given(kit):
    first, second = kit.claims(jti=None), kit.claims(jti=None)
    assert first.jti != second.jti
    assert len(b64url_decode(first.jti)) >= 16


def test_payload_is_the_pinned_shape(kit):
    assert kit.claims().to_payload() == {
        "iss": kit.issuer,
        "aud": kit.audience,
        "sub": "user-1",
        "act": {"sub": "app-1"},
        "client_id": "app-1",
        "scope": "chat models:read",
        "iat": kit.now,
        "nbf": kit.now,
        "exp": kit.now + 300,
        "jti": kit.jti,
    }


def test_claims_are_frozen(kit):
    with pytest.raises(dataclasses.FrozenInstanceError):
        kit.claims().sub = "admin"  # type: ignore[misc]


_name = st.text(st.characters(exclude_characters=" ", exclude_categories=("Cs",)), min_size=1)


@given(
    sub=_name,
    actor=_name,
    scope=st.lists(_name, min_size=1, max_size=4).map(tuple),
    now=st.integers(0, 2**40),
    ttl=st.integers(1, 3600),
)
def test_payload_round_trip(sub, actor, scope, now, ttl):
    claims = build_claims(
        issuer="i",
        audience="a",
        subject_id=sub,
        actor_id=actor,
        scope=scope,
        ttl_seconds=ttl,
        now=now,
    )
    assert claims_from_payload(claims.to_payload()) == claims


@pytest.mark.parametrize("name", REQUIRED_CLAIMS)
def test_each_missing_claim_is_named(kit, name):
    payload = kit.payload()
    del payload[name]
    with pytest.raises(MissingClaim, match=f"claim {name} is missing"):
        claims_from_payload(payload)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"act": "app-1"}, "claim act"),
        ({"act": {}}, "claim act"),
        ({"act": {"sub": ""}}, "claim act"),
        ({"act": {"sub": 7}}, "claim act"),
        ({"act": {"sub": "app-2"}}, "disagree"),
        ({"client_id": "app-2"}, "disagree"),
        ({"client_id": ""}, "client_id must be a non-empty string"),
        ({"client_id": ["app-1"]}, "client_id must be a non-empty string"),
        ({"scope": ""}, "scope must be a non-empty string"),
        ({"scope": "chat  models:read"}, "scope must be space-separated"),
        ({"scope": " chat"}, "scope must be space-separated"),
        ({"scope": "chat "}, "scope must be space-separated"),
        ({"scope": ["chat"]}, "scope must be a non-empty string"),
        ({"aud": ["open-webui", "other"]}, "one audience"),
        ({"aud": []}, "one audience"),
        ({"aud": 1}, "one audience"),
        ({"aud": [["open-webui"]]}, "one audience"),
        ({"iss": ""}, "iss must be a non-empty string"),
        ({"sub": 42}, "sub must be a non-empty string"),
        ({"sub": None}, "sub must be a non-empty string"),
        ({"jti": ""}, "jti must be a non-empty string"),
        ({"iat": True}, "iat must be an integer"),
        ({"nbf": "1800000000"}, "nbf must be an integer"),
        ({"exp": 1800000300.0}, "exp must be an integer"),
        ({"exp": None}, "exp must be an integer"),
    ],
)
def test_invalid_claims_are_refused(kit, changes, message):
    with pytest.raises(InvalidClaim, match=message) as excinfo:
        claims_from_payload(kit.payload(**changes))
    assert type(excinfo.value) is InvalidClaim


def test_a_single_audience_in_a_list_is_accepted(kit):
    assert claims_from_payload(kit.payload(aud=[kit.audience])).aud == kit.audience


def test_unknown_claims_are_ignored_not_trusted(kit):
    claims = claims_from_payload(kit.payload(role="admin", scope="chat"))
    assert claims == dataclasses.replace(kit.claims(), scope=("chat",))


def test_claim_errors_come_from_a_verified_signature():
    assert issubclass(MissingClaim, SignedTokenError)
    assert issubclass(InvalidClaim, SignedTokenError)
    assert MissingClaim().signature_valid is True
