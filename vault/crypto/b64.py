"""Strict unpadded base64url (RFC 7515 §2), the encoding of JWS parts, JWK members and keys."""

from __future__ import annotations

import base64
import binascii
import re
import string

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_VALUES = {
    c: i for i, c in enumerate(string.ascii_uppercase + string.ascii_lowercase + "0123456789-_")
}
# The low bits of the last character that encode nothing, by the text's length modulo 4.
_UNUSED_BITS = {0: 0, 2: 0x0F, 3: 0x03}


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url; refuse padding, other alphabets, non-canonical trailing bits."""
    rest = len(text) % 4
    if not _ALPHABET.fullmatch(text) or rest == 1:
        raise ValueError("not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not unpadded base64url") from None
    if rest and _VALUES[text[-1]] & _UNUSED_BITS[rest]:  # two spellings of one value
        raise ValueError("non-canonical base64url")
    return raw
