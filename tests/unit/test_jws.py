"""Compact JWS for delegation tokens: signing, the fixed verification contract, and pyjwt parity.

The named attack vectors live in test_token_vectors.py; this file covers the API and properties.
"""

from __future__ import annotations

import json
import time

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vault.crypto.b64 import b64url_decode
from vault.errors import (
    BadSignature,
    ExpiredToken,
    MalformedToken,
    SignedTokenError,
    TokenError,
    TokenTooLarge,
    UnknownKey,
    WrongTokenType,
)
from vault.tokens import jws
from vault.tokens.claims import REQUIRED_CLAIMS, claims_from_payload

RFC8037_KID = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
_fuzz = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_sign_then_verify_returns_the_claims(kit):
    token = kit.token()
    assert kit.verify(token) == kit.claims()


def test_header_is_exactly_the_pinned_one(kit):
    token = kit.token()
    assert jws.read_header(token) == {"alg": "EdDSA", "typ": "at+jwt", "kid": RFC8037_KID}
    assert b64url_decode(token.split(".")[0]) == (
        b'{"alg":"EdDSA","kid":"' + RFC8037_KID.encode() + b'","typ":"at+jwt"}'
    )
    assert kit.key.kid == RFC8037_KID  # the kid is the RFC 7638 thumbprint of the key


def test_signing_is_deterministic_and_every_claim_is_signed(kit):
    assert kit.token() == kit.token()  # Ed25519 (RFC 8032) has no per-signature randomness
    assert kit.token(subject_id="user-2") != kit.token()


# --- differential: plain pyjwt agrees with us ----------------------------------------------------


def test_pyjwt_verifies_our_tokens(kit):
    now = int(time.time())  # pyjwt reads the wall clock; the TTL leaves minutes of margin
    claims = kit.claims(now=now, ttl_seconds=600)
    token = jws.sign(claims, kit.key)
    decoded = jwt.decode(
        token, kit.key.public_key, algorithms=["EdDSA"], audience=kit.audience, issuer=kit.issuer
    )
    assert decoded == claims.to_payload()
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "typ": "at+jwt", "kid": kit.key.kid}
    assert kit.verify(token, now=now) == claims


def test_we_verify_tokens_made_by_plain_pyjwt(kit):
    token = jwt.encode(
        kit.payload(),
        kit.key.private_key,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": kit.key.kid},
    )
    assert kit.verify(token) == kit.claims()


def test_pyjwt_refuses_a_token_we_refuse_for_its_signature(kit):
    forged = kit.forge(kit.header(), kit.payload(sub="admin"), kit.theirs)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, kit.key.public_key, algorithms=["EdDSA"], options={"verify_exp": False})


# --- the steps, one by one -----------------------------------------------------------------------


def test_the_key_is_looked_up_by_kid_only_once(kit):
    seen: list[str] = []

    def lookup(kid):
        seen.append(kid)
        return kit.lookup(kid)

    jws.verify(kit.token(), lookup, issuer=kit.issuer, audience=kit.audience, now=kit.now, leeway=0)
    assert seen == [kit.key.kid]


def test_verify_signature_does_not_judge_claims(kit):
    expired = kit.token(now=kit.now - 10_000)
    kid, payload = jws.verify_signature(expired, kit.lookup)
    assert (kid, claims_from_payload(payload)) == (kit.key.kid, kit.claims(now=kit.now - 10_000))
    with pytest.raises(ExpiredToken):
        kit.verify(expired)


def test_read_header_is_for_routing_only(kit):
    forged = kit.forge(kit.header(), kit.payload(), kit.theirs)
    assert jws.read_header(forged) == kit.header()  # read, not verified
    with pytest.raises(TokenTooLarge):
        jws.read_header("a" * (jws.MAX_ROUTED_HEADER_BYTES + 1))
    with pytest.raises(MalformedToken, match="compact JWS"):
        jws.read_header("no-dot-at-all")
    with pytest.raises(MalformedToken, match="header is not a JSON object"):
        jws.read_header(kit.forge(b"[]", b"{}", None))


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+Jwt"])
def test_typ_is_a_case_insensitive_media_type(kit, typ):
    # RFC 7515 §4.1.9: media types are case-insensitive and "application/" may be omitted.
    token = kit.forge(kit.header(typ=typ), kit.payload(), kit.ours)
    assert kit.verify(token) == kit.claims()


@pytest.mark.parametrize("typ", ["jwt", "at+jwt ", "application/at+jwt+jwt", "xapplication/at+jwt"])
def test_near_miss_typ_is_refused(kit, typ):
    with pytest.raises(WrongTokenType):
        kit.verify(kit.forge(kit.header(typ=typ), kit.payload(), kit.ours))


def test_a_lookup_returning_none_is_unknown_key(kit):
    with pytest.raises(UnknownKey):
        jws.verify(
            kit.token(), {}.get, issuer=kit.issuer, audience=kit.audience, now=kit.now, leeway=0
        )


@pytest.mark.parametrize("leeway", [-1, 31, 3600])
def test_check_claims_refuses_leeway_outside_0_to_30(kit, leeway):
    with pytest.raises(ValueError, match="leeway"):
        jws.check_claims(
            kit.payload(), issuer=kit.issuer, audience=kit.audience, now=kit.now, leeway=leeway
        )


@pytest.mark.parametrize("leeway", [0, 30])
def test_leeway_within_bounds_is_accepted(kit, leeway):
    assert kit.verify(kit.token(), leeway=leeway) == kit.claims()


def test_signature_valid_tells_our_refusals_from_forgeries(kit):
    with pytest.raises(TokenError) as forged:
        kit.verify(kit.forge(kit.header(), kit.payload(), kit.theirs))
    with pytest.raises(SignedTokenError) as expired:
        kit.verify(kit.token(now=kit.now - 10_000))
    assert forged.value.signature_valid is False
    assert expired.value.signature_valid is True


@pytest.mark.parametrize("changes", [{"typ": "JWT"}, {"typ": ...}, {"crit": ["exp"]}])
def test_signed_by_us_tells_a_form_we_refuse_but_signed_from_a_forgery(kit, changes):
    header = kit.header(**changes)
    ours = kit.forge(header, kit.payload(), kit.ours)
    with pytest.raises(TokenError) as refused:
        kit.verify(ours)
    assert refused.value.signature_valid is False  # refused before the signature was checked
    assert jws.signed_by_us(ours, kit.lookup) == kit.payload()
    assert jws.signed_by_us(kit.forge(header, kit.payload(), kit.theirs), kit.lookup) is None


def test_signed_by_us_needs_our_algorithm_and_one_of_our_kids(kit):
    for header in (kit.header(kid=...), kit.header(alg="HS256"), kit.header(kid="not-ours")):
        assert jws.signed_by_us(kit.forge(header, kit.payload(), kit.ours), kit.lookup) is None
    assert jws.signed_by_us(kit.forge(kit.header(), b"not json", kit.ours), kit.lookup) == {}
    assert jws.signed_by_us(kit.forge(kit.header(), b"[1]", kit.ours), kit.lookup) == {}
    oversized = kit.forge(kit.header(), kit.payload(pad="x" * 9000), kit.ours)
    assert jws.signed_by_us(oversized, kit.lookup) == kit.payload(pad="x" * 9000)
    for text in ("", "a.b", "a.b.c", "a.b.c.d", kit.token() + "A"):
        assert jws.signed_by_us(text, kit.lookup) is None


# --- properties: nothing but a TokenError ever comes out, and nothing altered gets in ------------

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@_fuzz
@given(data=st.data())
def test_any_single_character_change_is_refused(kit, data):
    token = kit.token()
    index = data.draw(st.integers(0, len(token) - 1), label="index")
    char = data.draw(st.sampled_from(_B64URL + ".=+/ é\x00"), label="char")
    if char == token[index]:
        return
    with pytest.raises(TokenError):
        kit.verify(token[:index] + char + token[index + 1 :])


@_fuzz
@given(st.text(max_size=200) | st.lists(st.text(_B64URL, max_size=40), max_size=5).map(".".join))
def test_arbitrary_text_is_refused_with_a_token_error(kit, text):
    with pytest.raises(TokenError):
        kit.verify(text)
    assert jws.signed_by_us(text, kit.lookup) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@_fuzz
@given(st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "jku", "b64"]), _json))
def test_arbitrary_headers_from_an_attacker_are_refused(kit, header):
    with pytest.raises(TokenError) as excinfo:
        kit.verify(kit.forge(header, kit.payload(), kit.theirs))
    assert excinfo.value.signature_valid is False


@_fuzz
@given(_json)
def test_any_json_payload_we_signed_is_refused_with_a_token_error(kit, payload):
    token = kit.forge(kit.header(), json.dumps(payload).encode(), kit.ours)
    with pytest.raises(TokenError):
        kit.verify(token)


@_fuzz
@given(st.dictionaries(st.sampled_from(REQUIRED_CLAIMS), _json, max_size=4))
def test_claim_values_of_any_json_type_never_crash_the_verifier(kit, changes):
    token = kit.forge(kit.header(), kit.payload(**changes), kit.ours)
    try:
        claims = kit.verify(token)
    except SignedTokenError:
        return
    assert claims == claims_from_payload(kit.payload(**changes))


def test_a_header_already_read_is_reused_and_cannot_stand_in_for_another(kit):
    token = kit.token()
    header = jws.read_header(token)
    assert kit.verify(token) == jws.verify(
        token,
        kit.lookup,
        issuer=kit.issuer,
        audience=kit.audience,
        now=kit.now,
        leeway=kit.leeway,
        header=header,
    )
    # The signature covers the token's own header bytes: a borrowed header changes nothing.
    forged = kit.forge({"alg": "none", "typ": "at+jwt", "kid": kit.key.kid}, kit.payload(), None)
    with pytest.raises(BadSignature):
        jws.verify(
            forged,
            kit.lookup,
            issuer=kit.issuer,
            audience=kit.audience,
            now=kit.now,
            leeway=kit.leeway,
            header=header,
        )


_text = st.text(st.characters(codec="utf-8"), max_size=40)


@_fuzz
@given(
    subject=_text.filter(bool),
    actor=_text.filter(bool),
    issuer=_text,
    scope=st.lists(st.sampled_from(["chat", "models:read", "files", "read"]), min_size=1),
    now=st.integers(0, 2**40),
)
def test_signing_produces_exactly_what_pyjwt_would(kit, subject, actor, issuer, scope, now):
    claims = kit.claims(
        subject_id=subject, actor_id=actor, issuer=issuer, scope=tuple(scope), now=now
    )
    expected = jwt.encode(
        claims.to_payload(),
        kit.key.private_key,
        algorithm="EdDSA",
        headers={"typ": "at+jwt", "kid": kit.key.kid},
    )
    assert jws.sign(claims, kit.key) == expected


def test_a_header_read_twice_is_parsed_once_and_never_shared(kit):
    token = kit.token()
    first = jws.read_header(token)
    first["alg"] = "none"  # a caller changing its copy changes nothing for the next one
    assert jws.read_header(token) == {"alg": "EdDSA", "typ": "at+jwt", "kid": RFC8037_KID}
    with pytest.raises(MalformedToken):
        jws.read_header("e30x." + token.split(".", 1)[1])  # another segment: parsed on its own
