"""Named token attack vectors, generated at test time from fixed test keys.

Each vector is described, with its provenance, in tests/vectors/tokens/README.md; a test below keeps
the README and this table in step. Every vector must raise exactly the leaf named here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.keys import public_jwk, raw_public
from vault.errors import (
    BadSignature,
    DisallowedAlgorithm,
    ExpiredToken,
    InvalidClaim,
    MalformedToken,
    MissingClaim,
    TokenError,
    TokenNotYetValid,
    TokenTooLarge,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
    WrongTokenType,
)
from vault.tokens import jws
from vault.tokens.claims import MAX_TOKEN_BYTES, REQUIRED_CLAIMS

README = Path(__file__).parents[1] / "vectors" / "tokens" / "README.md"
RFC8037_A4 = (
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
ELSEWHERE = "https://attacker.example/.well-known/jwks.json"
_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}

Build = Callable[..., str]
VECTORS: dict[str, tuple[Build, type[TokenError]]] = {}


def vector(name: str, error: type[TokenError]) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        assert name not in VECTORS, name
        VECTORS[name] = (build, error)
        return build

    return register


def _parts(token: str) -> list[str]:
    return token.split(".")


def _with_sig(token: str, sig: str) -> str:
    head, body, _ = _parts(token)
    return f"{head}.{body}.{sig}"


def _hmac_signer(alg: str, secret: bytes) -> Callable[[bytes], bytes]:
    return lambda message: hmac.new(secret, message, _HASHES[alg]).digest()


def _resign(token: str, change: Callable[[bytes], bytes]) -> str:
    return _with_sig(token, b64url_encode(change(b64url_decode(_parts(token)[2]))))


def _noncanonical(raw: bytes) -> str:
    """``raw`` spelled with unused low bits set in the last character (RFC 4648 §3.5).

    JSON may end in whitespace, so spaces are added until the length leaves unused bits."""
    while len(raw) % 3 == 0:
        raw += b" "
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    canonical = b64url_encode(raw)
    spelled = canonical[:-1] + alphabet[alphabet.index(canonical[-1]) | 1]
    assert spelled != canonical
    assert base64.urlsafe_b64decode(spelled + "=" * (-len(spelled) % 4)) == raw  # lenient: same
    return spelled


# --- algorithm ----------------------------------------------------------------------------------

vector("alg-none", DisallowedAlgorithm)(
    lambda kit: kit.forge(kit.header(alg="none"), kit.payload(sub="admin"), None)
)
for _spelling in ("None", "NONE", "nOnE"):
    vector(f"alg-none-spelled-{_spelling}", DisallowedAlgorithm)(
        lambda kit, alg=_spelling: kit.forge(kit.header(alg=alg), kit.payload(), None)
    )
vector("alg-none-with-valid-signature", DisallowedAlgorithm)(
    lambda kit: kit.forge(kit.header(alg="none"), kit.payload(), kit.ours)
)
for _name, _alg in [
    ("missing", ...),
    ("null", None),
    ("list", ["EdDSA"]),
    ("lowercase", "eddsa"),
    ("ed25519", "Ed25519"),
    ("es256", "ES256"),
    ("rs256", "RS256"),
    ("ps256", "PS256"),
]:
    vector(f"alg-{_name}", DisallowedAlgorithm)(
        lambda kit, alg=_alg: kit.forge(kit.header(alg=alg), kit.payload(), kit.ours)
    )

_SECRETS: dict[str, Callable[..., bytes]] = {
    "public-raw": lambda kit: raw_public(kit.key.public_key),
    "public-x": lambda kit: b64url_encode(raw_public(kit.key.public_key)).encode(),
    "public-pem": lambda kit: kit.key.public_key.public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
    ),
    "public-jwks": lambda kit: json.dumps(
        {"keys": [public_jwk(kit.key.public_key, kit.key.kid)]}
    ).encode(),
}
for _alg in _HASHES:
    for _form, _secret in _SECRETS.items():
        vector(f"{_alg.lower()}-secret-{_form}", DisallowedAlgorithm)(
            lambda kit, alg=_alg, secret=_secret: kit.forge(
                kit.header(alg=alg), kit.payload(sub="admin"), _hmac_signer(alg, secret(kit))
            )
        )

# --- keys and signatures ------------------------------------------------------------------------

vector("foreign-key-our-kid", BadSignature)(
    lambda kit: kit.forge(kit.header(), kit.payload(sub="admin"), kit.theirs)
)
vector("foreign-key-own-kid", UnknownKey)(
    lambda kit: kit.forge(kit.header(kid=kit.attacker.kid), kit.payload(), kit.theirs)
)
vector("payload-swap", BadSignature)(
    lambda kit: _with_sig(kit.token(subject_id="admin"), _parts(kit.token())[2])
)
vector("payload-modified", BadSignature)(
    lambda kit: kit.forge(kit.header(), kit.payload(scope="all"), None, sig=_parts(kit.token())[2])
)
vector("header-modified", BadSignature)(
    lambda kit: kit.forge(
        kit.header(typ="application/at+jwt"), kit.payload(), None, sig=_parts(kit.token())[2]
    )
)
vector("signature-bit-flip", BadSignature)(
    lambda kit: _resign(kit.token(), lambda sig: bytes([sig[0] ^ 1]) + sig[1:])
)
vector("signature-truncated", BadSignature)(lambda kit: _resign(kit.token(), lambda sig: sig[:63]))
vector("signature-empty", BadSignature)(lambda kit: _with_sig(kit.token(), ""))
vector("signature-noncanonical-bits", MalformedToken)(
    lambda kit: _with_sig(kit.token(), _noncanonical(b64url_decode(_parts(kit.token())[2])))
)
vector("signature-padded", MalformedToken)(
    lambda kit: _with_sig(kit.token(), _parts(kit.token())[2] + "==")
)
vector("signature-standard-base64", MalformedToken)(
    lambda kit: _with_sig(
        kit.token(), base64.b64encode(b64url_decode(_parts(kit.token())[2])).decode()
    )
)

# --- key sources named by the token: ignored -----------------------------------------------------

vector("jku-attacker-signed-our-kid", BadSignature)(
    lambda kit: kit.forge(kit.header(jku=ELSEWHERE), kit.payload(), kit.theirs)
)
vector("jku-attacker-signed-attacker-kid", UnknownKey)(
    lambda kit: kit.forge(
        kit.header(jku=ELSEWHERE, kid=kit.attacker.kid), kit.payload(), kit.theirs
    )
)
vector("x5u-attacker-signed-our-kid", BadSignature)(
    lambda kit: kit.forge(kit.header(x5u=ELSEWHERE), kit.payload(), kit.theirs)
)
vector("x5c-attacker-signed-our-kid", BadSignature)(
    lambda kit: kit.forge(
        kit.header(x5c=[base64.b64encode(b"not a certificate").decode()]),
        kit.payload(),
        kit.theirs,
    )
)
vector("jwk-embedded-attacker-key", UnknownKey)(
    lambda kit: kit.forge(
        kit.header(jwk=public_jwk(kit.attacker.public_key, kit.attacker.kid), kid=kit.attacker.kid),
        kit.payload(),
        kit.theirs,
    )
)
vector("jwk-embedded-attacker-key-our-kid", BadSignature)(
    lambda kit: kit.forge(
        kit.header(jwk=public_jwk(kit.attacker.public_key, kit.key.kid)),
        kit.payload(),
        kit.theirs,
    )
)

# --- kid ----------------------------------------------------------------------------------------

for _name, _kid in [
    ("missing", ...),
    ("empty", ""),
    ("null", None),
    ("number", 1),
    ("unknown", b64url_encode(hashlib.sha256(b"no such key").digest())),
    ("path-traversal", "../../../../../../dev/null"),
    ("sql-injection", "x' UNION SELECT 'AAAA"),
    ("lone-surrogate", "\ud800"),
]:
    vector(f"kid-{_name}", UnknownKey)(
        lambda kit, kid=_kid: kit.forge(kit.header(kid=kid), kit.payload(), kit.theirs)
    )

# --- typ ----------------------------------------------------------------------------------------

for _name, _typ in [
    ("missing", ...),
    ("jwt", "JWT"),
    ("application-jwt", "application/jwt"),
    ("dpop", "dpop+jwt"),
    ("id-token", "id_token+jwt"),
    ("number", 1),
]:
    vector(f"typ-{_name}", WrongTokenType)(
        lambda kit, typ=_typ: kit.forge(kit.header(typ=typ), kit.payload(), kit.ours)
    )
vector("rfc8037-a4-example", WrongTokenType)(lambda kit: RFC8037_A4)

# --- structure and encoding ---------------------------------------------------------------------

_HEADER = '{{"alg":"EdDSA","typ":"at+jwt","kid":"{kid}"{extra}}}'


def _raw_header(kit, extra: str = "", encoding: str = "utf-8") -> bytes:
    return _HEADER.format(kid=kit.key.kid, extra=extra).encode(encoding)


for _name, _build in [
    ("empty-string", lambda kit: ""),
    ("two-segments", lambda kit: kit.token().rpartition(".")[0]),
    ("trailing-dot", lambda kit: kit.token() + "."),
    ("trailing-garbage", lambda kit: kit.token() + ".AAAA"),
    ("jwe-five-segments", lambda kit: kit.token() + ".AAAA.AAAA"),
    ("leading-space", lambda kit: " " + kit.token()),
    ("header-not-base64url", lambda kit: kit.forge("e!J9", kit.payload(), kit.ours)),
    ("header-padded", lambda kit: kit.forge(_parts(kit.token())[0] + "=", kit.payload(), kit.ours)),
    (
        "header-noncanonical-bits",
        lambda kit: kit.forge(_noncanonical(_raw_header(kit)), kit.payload(), kit.ours),
    ),
    ("header-not-json", lambda kit: kit.forge(b"alg=EdDSA", kit.payload(), kit.ours)),
    ("header-json-array", lambda kit: kit.forge(b'["EdDSA"]', kit.payload(), kit.ours)),
    ("header-not-utf8", lambda kit: kit.forge(b'{"alg":"\xff"}', kit.payload(), kit.ours)),
    (
        "header-utf16",
        lambda kit: kit.forge(_raw_header(kit, encoding="utf-16"), kit.payload(), kit.ours),
    ),
    (
        "header-utf8-bom",
        lambda kit: kit.forge(b"\xef\xbb\xbf" + _raw_header(kit), kit.payload(), kit.ours),
    ),
    (
        "header-nan",
        lambda kit: kit.forge(_raw_header(kit, ',"x":NaN'), kit.payload(), kit.ours),
    ),
    ("header-deep-nesting", lambda kit: kit.forge(b"[" * 4000, kit.payload(), kit.ours)),
    (
        "header-duplicate-alg",
        lambda kit: kit.forge(_raw_header(kit, ',"alg":"none"'), kit.payload(), None),
    ),
    (
        "header-duplicate-kid",
        lambda kit: kit.forge(
            _raw_header(kit, f',"kid":"{kit.attacker.kid}"'), kit.payload(), kit.theirs
        ),
    ),
    (
        "crit-header",
        lambda kit: kit.forge(kit.header(crit=["exp"], exp=0), kit.payload(), kit.ours),
    ),
    ("crit-empty", lambda kit: kit.forge(kit.header(crit=[]), kit.payload(), kit.ours)),
    (
        "payload-duplicate-sub",
        lambda kit: kit.forge(
            kit.header(), json.dumps(kit.payload())[:-1].encode() + b',"sub":"admin"}', kit.ours
        ),
    ),
    (
        "payload-duplicate-nested",
        lambda kit: kit.forge(
            kit.header(),
            json.dumps(kit.payload()).replace('"act": {', '"act": {"sub": "root", ').encode(),
            kit.ours,
        ),
    ),
    (
        "payload-noncanonical-bits",
        lambda kit: kit.forge(
            kit.header(), _noncanonical(json.dumps(kit.payload()).encode()), kit.ours
        ),
    ),
    ("payload-json-array", lambda kit: kit.forge(kit.header(), b"[]", kit.ours)),
    ("payload-not-json", lambda kit: kit.forge(kit.header(), b"sub=admin", kit.ours)),
    (
        "payload-nan",
        lambda kit: kit.forge(
            kit.header(), json.dumps(kit.payload(exp=float("nan"))).encode(), kit.ours
        ),
    ),
    (
        "payload-utf16",
        lambda kit: kit.forge(kit.header(), json.dumps(kit.payload()).encode("utf-16"), kit.ours),
    ),
]:
    vector(_name, MalformedToken)(_build)

# --- size ---------------------------------------------------------------------------------------

vector("oversized", TokenTooLarge)(
    lambda kit: kit.token(scope=tuple(f"scope{i}" for i in range(1000)))
)
vector("oversized-garbage", TokenTooLarge)(lambda kit: "." * (MAX_TOKEN_BYTES + 1))

# --- claims (all signed by our key) -------------------------------------------------------------

for _name, _error, _changes in [
    ("expired", ExpiredToken, {"now": -600}),
    ("not-yet-valid", TokenNotYetValid, {"now": 600}),
]:
    vector(_name, _error)(lambda kit, changes=_changes: kit.token(now=kit.now + changes["now"]))
vector("iat-in-future", TokenNotYetValid)(
    lambda kit: kit.forge(kit.header(), kit.payload(iat=kit.now + 600), kit.ours)
)
for _name, _error, _payload in [
    ("wrong-aud", WrongAudience, {"aud": "other-service"}),
    ("aud-case-changed", WrongAudience, {"aud": "Open-WebUI"}),
    ("aud-list-of-two", InvalidClaim, {"aud": ["open-webui", "other-service"]}),
    ("wrong-iss", WrongIssuer, {"iss": "https://attacker.example"}),
    ("iss-trailing-slash", WrongIssuer, {"iss": "https://vault.test/"}),
    ("exp-float", InvalidClaim, {"exp": 1e12}),
    ("exp-string", InvalidClaim, {"exp": "9999999999"}),
]:
    vector(_name, _error)(
        lambda kit, payload=_payload: kit.forge(kit.header(), kit.payload(**payload), kit.ours)
    )
for _claim in REQUIRED_CLAIMS:
    vector(f"missing-{_claim}", MissingClaim)(
        lambda kit, claim=_claim: kit.forge(kit.header(), kit.payload(**{claim: ...}), kit.ours)
    )


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VECTORS))
def test_vector_raises_its_exact_leaf(kit, name):
    build, error = VECTORS[name]
    with pytest.raises(TokenError) as excinfo:
        kit.verify(build(kit))
    assert type(excinfo.value) is error, f"{name}: {excinfo.value!r}"


def test_readme_describes_exactly_these_vectors():
    described = set(re.findall(r"^\| `([^`]+)` \|", README.read_text(encoding="utf-8"), re.M))
    assert described == set(VECTORS)


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_key_source_headers_on_our_own_token_are_ignored(kit, header):
    # A token we signed still verifies, and only against the key our key set holds for its kid.
    values = {
        "jku": ELSEWHERE,
        "x5u": ELSEWHERE,
        "jwk": public_jwk(kit.attacker.public_key, kit.attacker.kid),
        "x5c": ["AAAA"],
    }
    token = kit.forge(kit.header(**{header: values[header]}), kit.payload(), kit.ours)
    seen: list[str] = []

    def lookup(kid):
        seen.append(kid)
        return kit.lookup(kid)

    claims = jws.verify(
        token, lookup, issuer=kit.issuer, audience=kit.audience, now=kit.now, leeway=0
    )
    assert claims == kit.claims()
    assert seen == [kit.key.kid]


def test_size_limit_is_inclusive_at_8_kib(kit):
    def token(pad: int) -> str:
        return kit.forge(kit.header(), kit.payload(pad="x" * pad), kit.ours)

    pad = (MAX_TOKEN_BYTES - len(token(0))) * 3 // 4 - 3
    while len(token(pad)) < MAX_TOKEN_BYTES:
        pad += 1
    assert len(token(pad)) == MAX_TOKEN_BYTES
    assert kit.verify(token(pad)) == kit.claims()
    with pytest.raises(TokenTooLarge):
        kit.verify(token(pad + 1))


# exp/nbf/iat relative to now; RFC 7519 §4.1.4: valid while now < exp; §4.1.5: once now >= nbf.
@pytest.mark.parametrize(
    ("leeway", "exp", "nbf", "iat", "error"),
    [
        (30, -30, -300, -300, ExpiredToken),  # exp exactly at now - leeway
        (30, -29, -300, -300, None),
        (30, 300, 30, 0, None),  # nbf exactly at now + leeway
        (30, 300, 31, 0, TokenNotYetValid),
        (30, 300, 0, 30, None),  # iat exactly at now + leeway
        (30, 300, 0, 31, TokenNotYetValid),
        (0, 0, -300, -300, ExpiredToken),  # exp == now is already expired
        (0, 1, -300, -300, None),
        (0, 300, 0, 0, None),  # nbf == now is valid
        (0, 300, 1, 0, TokenNotYetValid),
        (0, 300, 0, 1, TokenNotYetValid),
    ],
)
def test_leeway_boundaries(kit, leeway, exp, nbf, iat, error):
    payload = kit.payload(exp=kit.now + exp, nbf=kit.now + nbf, iat=kit.now + iat)
    token = kit.forge(kit.header(), payload, kit.ours)
    if error is None:
        assert kit.verify(token, leeway=leeway).exp == kit.now + exp
    else:
        with pytest.raises(error):
            kit.verify(token, leeway=leeway)


@pytest.mark.parametrize("leeway", [31, -1])
def test_leeway_outside_the_contract_is_refused(kit, leeway):
    with pytest.raises(ValueError, match=r"leeway must be within 0\.\.30"):
        kit.verify(kit.token(), leeway=leeway)
