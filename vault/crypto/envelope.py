"""Private keys at rest: AES-256-GCM under the master key, versioned, bound to kid and purpose.

An envelope is the text ``dv1.<base64url(nonce || ciphertext || tag)>``. The associated data binds
the version, the key's purpose and its kid, so an envelope moved to another row (another kid, or
an audit key passed off as a token key) does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.errors import MasterKeyError

VERSION = "dv1"
_NONCE_BYTES = 12
_KEY_BYTES = 32  # AES-256


def _aad(purpose: str, kid: str) -> bytes:
    return b"\x00".join([b"dvault-envelope", VERSION.encode(), purpose.encode(), kid.encode()])


def _cipher(master_key: bytes) -> AESGCM:
    # AESGCM also takes 16- and 24-byte keys: refuse them rather than silently use AES-128/192.
    if len(master_key) != _KEY_BYTES:
        raise MasterKeyError(f"master key must be {_KEY_BYTES} bytes, got {len(master_key)}")
    return AESGCM(master_key)


def seal(master_key: bytes, plaintext: bytes, *, purpose: str, kid: str) -> str:
    cipher = _cipher(master_key)
    nonce = os.urandom(_NONCE_BYTES)
    sealed = cipher.encrypt(nonce, plaintext, _aad(purpose, kid))
    return f"{VERSION}.{b64url_encode(nonce + sealed)}"


def open_sealed(master_key: bytes, envelope: str, *, purpose: str, kid: str) -> bytes:
    """Decrypt, or raise ``MasterKeyError``: a wrong master key must never pass silently."""
    cipher = _cipher(master_key)
    version, _, body = envelope.partition(".")
    if version != VERSION:
        raise MasterKeyError(f"key {kid}: unsupported envelope version {version!r}")
    try:
        raw = b64url_decode(body)
    except ValueError:
        raise MasterKeyError(f"key {kid}: envelope is not base64url") from None
    if len(raw) < _NONCE_BYTES + 16:
        raise MasterKeyError(f"key {kid}: envelope is truncated")
    try:
        return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(purpose, kid))
    except InvalidTag:
        raise MasterKeyError(
            f"the master key does not open key {kid} ({purpose}): wrong VAULT_MASTER_KEY "
            "or key file, or the stored key was altered"
        ) from None
