"""Key envelopes: AES-256-GCM under the master key, versioned, bound to kid and purpose."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.envelope import VERSION, open_sealed, seal
from vault.errors import MasterKeyError

MASTER = bytes(range(32))  # TEST-ONLY master key
OTHER_MASTER = bytes(range(1, 33))
SECRET = b"an ed25519 private key, 32 byte"
KID, PURPOSE = "kid-A", "token"


@pytest.fixture(scope="module")
def sealed() -> str:
    return seal(MASTER, SECRET, purpose=PURPOSE, kid=KID)


def _body(envelope: str) -> bytes:
    return b64url_decode(envelope.removeprefix(VERSION + "."))


def test_round_trip_and_layout(sealed):
    assert open_sealed(MASTER, sealed, purpose=PURPOSE, kid=KID) == SECRET
    assert sealed.startswith("dv1.")
    assert len(_body(sealed)) == 12 + len(SECRET) + 16  # nonce || ciphertext || tag
    assert SECRET not in _body(sealed)


def test_each_seal_uses_a_fresh_nonce():
    first, second = (seal(MASTER, SECRET, purpose=PURPOSE, kid=KID) for _ in range(2))
    assert first != second
    assert _body(first)[:12] != _body(second)[:12]


@settings(deadline=None)
@given(st.binary(max_size=128), st.sampled_from(["token", "audit"]), st.text(max_size=43))
def test_round_trip_property(plaintext, purpose, kid):
    envelope = seal(MASTER, plaintext, purpose=purpose, kid=kid)
    assert open_sealed(MASTER, envelope, purpose=purpose, kid=kid) == plaintext


@pytest.mark.parametrize(
    ("master", "purpose", "kid"),
    [
        (OTHER_MASTER, PURPOSE, KID),
        (MASTER, PURPOSE, "kid-B"),
        (MASTER, "audit", KID),
        (MASTER, PURPOSE, KID + "\x00"),
        (MASTER, "", ""),
    ],
    ids=["wrong-master-key", "wrong-kid", "wrong-purpose", "kid-with-nul", "empty-binding"],
)
def test_wrong_key_or_binding_does_not_open(sealed, master, purpose, kid):
    with pytest.raises(MasterKeyError, match="does not open key"):
        open_sealed(master, sealed, purpose=purpose, kid=kid)


_CT_END, _TAG_END = 8 * (12 + len(SECRET)), 8 * (12 + len(SECRET) + 16)


@pytest.mark.parametrize("bit", [0, 95, 96, _CT_END - 1, _CT_END, _TAG_END - 1])
def test_any_flipped_bit_is_refused(sealed, bit):
    # First and last bit of each region: nonce, ciphertext, tag.
    body = bytearray(_body(sealed))
    body[bit // 8] ^= 0x80 >> (bit % 8)
    with pytest.raises(MasterKeyError, match="does not open key"):
        open_sealed(MASTER, f"dv1.{b64url_encode(bytes(body))}", purpose=PURPOSE, kid=KID)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda body: body[:-1], "does not open"),
        (lambda body: body + b"\x00", "does not open"),
        (lambda body: body[:27], "truncated"),
        (lambda body: b"", "truncated"),
    ],
    ids=["truncated-tag", "trailing-garbage", "shorter-than-nonce-and-tag", "empty"],
)
def test_truncated_or_extended_body_is_refused(sealed, mangle, message):
    envelope = f"dv1.{b64url_encode(mangle(_body(sealed)))}"
    with pytest.raises(MasterKeyError, match=message):
        open_sealed(MASTER, envelope, purpose=PURPOSE, kid=KID)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("dv2.", "unsupported envelope version 'dv2'"),
        ("DV1.", "unsupported envelope version 'DV1'"),
        ("dv0.", "unsupported envelope version 'dv0'"),
        ("", "unsupported envelope version"),
        ("dv1.dv1.", "not base64url"),
        ("dv1.=", "not base64url"),
    ],
)
def test_wrong_version_or_encoding_is_refused(sealed, prefix, message):
    envelope = prefix + sealed.removeprefix("dv1.")
    with pytest.raises(MasterKeyError, match=message):
        open_sealed(MASTER, envelope, purpose=PURPOSE, kid=KID)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33, 64])
def test_master_key_must_be_32_bytes(sealed, size):
    # AESGCM itself would take 16 and 24 bytes (AES-128/192): the vault pins AES-256.
    with pytest.raises(MasterKeyError, match="32 bytes"):
        seal(bytes(size), SECRET, purpose=PURPOSE, kid=KID)
    with pytest.raises(MasterKeyError, match="32 bytes"):
        open_sealed(bytes(size), sealed, purpose=PURPOSE, kid=KID)


def test_errors_name_the_kid_but_never_the_secret(sealed):
    with pytest.raises(MasterKeyError) as excinfo:
        open_sealed(OTHER_MASTER, sealed, purpose=PURPOSE, kid=KID)
    text = str(excinfo.value)
    assert KID in text
    assert b64url_encode(MASTER) not in text
    assert b64url_encode(OTHER_MASTER) not in text
