"""Ed25519 key pairs, public JWKs, RFC 7638 thumbprints, and private keys sealed at rest."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vault.crypto import envelope
from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.keys import (
    AUDIT,
    TOKEN,
    KeyPair,
    generate,
    open_private,
    public_jwk,
    public_key_from_jwk,
    public_keys_from_jwks,
    raw_public,
    seal_private,
    thumbprint,
)
from vault.errors import MasterKeyError

# RFC 8037 Appendix A.1 (TEST-ONLY key published in the RFC), A.3 (its JWK thumbprint) and A.4.
RFC_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
RFC_A4_INPUT = b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"
RFC_A4_SIG = (
    "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
MASTER = bytes(32)  # TEST-ONLY


@pytest.fixture(scope="module")
def rfc_pair() -> KeyPair:
    private_key = Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC_D))
    return KeyPair(kid=RFC_THUMBPRINT, purpose=TOKEN, private_key=private_key)


# --- RFC 8037 / RFC 7638 known answers ------------------------------------------------------------


def test_rfc8037_a3_thumbprint():
    public_key = Ed25519PublicKey.from_public_bytes(b64url_decode(RFC_X))
    assert thumbprint(public_key) == RFC_THUMBPRINT


def test_rfc8037_a1_a4_key_and_signature(rfc_pair):
    assert b64url_encode(raw_public(rfc_pair.public_key)) == RFC_X
    assert thumbprint(rfc_pair.public_key) == rfc_pair.kid
    assert b64url_encode(rfc_pair.sign(RFC_A4_INPUT)) == RFC_A4_SIG  # Ed25519 is deterministic


def test_thumbprint_hashes_only_the_required_members_in_order(rfc_pair):
    # RFC 7638 §3.2: {"crv","kty","x"}, lexicographic, no whitespace; kid/alg/use do not count.
    text = f'{{"crv":"Ed25519","kty":"OKP","x":"{RFC_X}"}}'.encode()
    assert b64url_encode(hashlib.sha256(text).digest()) == RFC_THUMBPRINT
    jwk = public_jwk(rfc_pair.public_key, "anything")
    assert public_key_from_jwk({k: v for k, v in jwk.items() if k != "kid"})[0] == RFC_THUMBPRINT


# --- public JWKs ----------------------------------------------------------------------------------


def test_public_jwk_members(rfc_pair):
    assert public_jwk(rfc_pair.public_key, rfc_pair.kid) == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": RFC_X,
        "kid": RFC_THUMBPRINT,
        "alg": "EdDSA",
        "use": "sig",
    }


def test_jwk_round_trip(rfc_pair):
    kid, public_key = public_key_from_jwk(public_jwk(rfc_pair.public_key, rfc_pair.kid))
    assert kid == RFC_THUMBPRINT
    assert raw_public(public_key) == b64url_decode(RFC_X)


_GOOD = {"kty": "OKP", "crv": "Ed25519", "x": RFC_X, "kid": RFC_THUMBPRINT}


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ([_GOOD], "must be an object"),
        ({**_GOOD, "kty": "RSA"}, "only Ed25519"),
        ({**_GOOD, "kty": "oct"}, "only Ed25519"),
        ({**_GOOD, "crv": "X25519"}, "only Ed25519"),
        ({**_GOOD, "crv": "Ed448"}, "only Ed25519"),
        ({k: v for k, v in _GOOD.items() if k != "crv"}, "only Ed25519"),
        ({**_GOOD, "d": RFC_D}, "private key material"),
        ({k: v for k, v in _GOOD.items() if k != "x"}, "no x"),
        ({**_GOOD, "x": list(b64url_decode(RFC_X))}, "no x"),
        ({**_GOOD, "x": RFC_X + "="}, "base64url"),
        ({**_GOOD, "x": b64url_encode(b64url_decode(RFC_X)[:31])}, "32 bytes"),
        ({**_GOOD, "x": b64url_encode(b64url_decode(RFC_X) + b"\x00")}, "32 bytes"),
        ({**_GOOD, "kid": "my-friendly-name"}, "not the key's RFC 7638 thumbprint"),
        ({**_GOOD, "kid": None}, "not the key's RFC 7638 thumbprint"),
    ],
    ids=[
        "not-object",
        "rsa",
        "oct",
        "x25519",
        "ed448",
        "no-crv",
        "private",
        "no-x",
        "x-not-string",
        "x-padded",
        "x-short",
        "x-long",
        "borrowed-kid",
        "null-kid",
    ],
)
def test_bad_jwks_are_refused(jwk, message):
    with pytest.raises(ValueError, match=message):
        public_key_from_jwk(jwk)


def test_a_foreign_key_cannot_borrow_our_kid():
    foreign = generate(TOKEN)
    with pytest.raises(ValueError, match="thumbprint"):
        public_key_from_jwk(public_jwk(foreign.public_key, RFC_THUMBPRINT))


def test_jwks_document_maps_kid_to_key(rfc_pair):
    other = generate(TOKEN)
    document = {
        "keys": [
            public_jwk(rfc_pair.public_key, rfc_pair.kid),
            public_jwk(other.public_key, other.kid),
        ]
    }
    keys = public_keys_from_jwks(document)
    assert set(keys) == {rfc_pair.kid, other.kid}
    assert raw_public(keys[other.kid]) == raw_public(other.public_key)
    assert public_keys_from_jwks({"keys": []}) == {}


@pytest.mark.parametrize("document", [[], {}, {"keys": {}}, {"keys": None}, "keys"])
def test_jwks_document_shape_is_checked(document):
    with pytest.raises(ValueError, match="JWKS"):
        public_keys_from_jwks(document)


# --- key pairs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [TOKEN, AUDIT])
def test_generate(purpose):
    first, second = generate(purpose), generate(purpose)
    assert first.purpose == purpose
    assert first.kid == thumbprint(first.public_key)
    assert len(b64url_decode(first.kid)) == 32
    assert first.kid != second.kid
    signature = first.sign(b"message")
    first.public_key.verify(signature, b"message")
    with pytest.raises(InvalidSignature):
        second.public_key.verify(signature, b"message")


@pytest.mark.parametrize("purpose", ["", "Token", "signing", "tokens"])
def test_generate_refuses_unknown_purposes(purpose):
    with pytest.raises(ValueError, match="unknown key purpose"):
        generate(purpose)


def test_repr_shows_no_key_material(rfc_pair):
    text = repr(rfc_pair)
    assert text == f"KeyPair(kid={RFC_THUMBPRINT!r}, purpose='token')"
    assert RFC_D not in text


# --- sealed private keys --------------------------------------------------------------------------


def test_seal_and_open_private(rfc_pair):
    sealed = seal_private(MASTER, rfc_pair)
    assert RFC_D not in sealed
    opened = open_private(MASTER, kid=rfc_pair.kid, purpose=TOKEN, sealed=sealed)
    assert opened.kid == rfc_pair.kid
    assert opened.purpose == TOKEN
    assert b64url_encode(opened.private_key.private_bytes_raw()) == RFC_D


@pytest.mark.parametrize(
    ("master", "kid", "purpose"),
    [(bytes([1]) + bytes(31), None, TOKEN), (MASTER, None, AUDIT), (MASTER, "other-kid", TOKEN)],
    ids=["wrong-master-key", "token-key-as-audit-key", "moved-to-another-kid"],
)
def test_open_private_refuses_wrong_key_or_binding(rfc_pair, master, kid, purpose):
    sealed = seal_private(MASTER, rfc_pair)
    with pytest.raises(MasterKeyError):
        open_private(master, kid=kid or rfc_pair.kid, purpose=purpose, sealed=sealed)


def test_open_private_refuses_a_key_that_is_not_its_kid(rfc_pair):
    # Someone holding the master key seals another private key under our kid: caught by thumbprint.
    other = generate(TOKEN).private_key.private_bytes_raw()
    sealed = envelope.seal(MASTER, other, purpose=TOKEN, kid=rfc_pair.kid)
    with pytest.raises(MasterKeyError, match="does not match its thumbprint"):
        open_private(MASTER, kid=rfc_pair.kid, purpose=TOKEN, sealed=sealed)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_open_private_refuses_a_plaintext_of_the_wrong_size(rfc_pair, size):
    sealed = envelope.seal(MASTER, bytes(size), purpose=TOKEN, kid=rfc_pair.kid)
    with pytest.raises(MasterKeyError, match="32-byte"):
        open_private(MASTER, kid=rfc_pair.kid, purpose=TOKEN, sealed=sealed)
