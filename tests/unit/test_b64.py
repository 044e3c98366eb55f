"""Strict unpadded base64url (RFC 7515 §2): one spelling per byte string, nothing else accepted."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vault.crypto.b64 import b64url_decode, b64url_encode

# RFC 4648 §10 test vectors, padding stripped as RFC 7515 §2 requires.
RFC4648 = [
    (b"", ""),
    (b"f", "Zg"),
    (b"fo", "Zm8"),
    (b"foo", "Zm9v"),
    (b"foob", "Zm9vYg"),
    (b"fooba", "Zm9vYmE"),
    (b"foobar", "Zm9vYmFy"),
]


@pytest.mark.parametrize(("raw", "text"), RFC4648)
def test_rfc4648_vectors(raw, text):
    assert b64url_encode(raw) == text
    assert b64url_decode(text) == raw


def test_url_safe_alphabet_is_used():
    # 0xfbffbf is 62,63,62,63 in sextets: "+/+/" in standard base64, "-_-_" in base64url.
    assert b64url_encode(b"\xfb\xff\xbf") == "-_-_"
    assert b64url_decode("-_-_") == b"\xfb\xff\xbf"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("Zg==", "padding"),
        ("Zg=", "partial padding"),
        ("Zm9v=", "padding on a full quantum"),
        ("+/+/", "standard alphabet"),
        (" Zg", "leading space"),
        ("Zg\n", "trailing newline"),
        ("Zm 9v", "inner space"),
        ("Z", "length 1 mod 4"),
        ("Zm9vY", "length 1 mod 4 after full quanta"),
        ("Zh", "unused low bits set (canonical is Zg)"),
        ("Zm9=", "padding inside"),
        ("Zm-", "unused low bits set in a 3-character tail"),
        ("\u0663\u0663", "Arabic-Indic digits are not [0-9]"),
        ("\uff3a\uff47", "full-width letters"),
        ("Zg\x00", "NUL"),
    ],
)
def test_refuses_non_canonical_or_foreign_text(text, why):
    with pytest.raises(ValueError, match="base64url"):
        b64url_decode(text)


@given(st.binary(max_size=256))
def test_round_trip(raw):
    text = b64url_encode(raw)
    assert b64url_decode(text) == raw
    assert "=" not in text
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert text == base64.urlsafe_b64encode(raw).decode().rstrip("=")


@given(st.text(alphabet="AZaz09-_+/= .\n\u0663", max_size=16))
def test_every_accepted_text_is_the_one_spelling_of_its_bytes(text):
    try:
        raw = b64url_decode(text)
    except ValueError:
        return
    assert b64url_encode(raw) == text
