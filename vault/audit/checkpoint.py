"""Signed checkpoints: Ed25519 (the audit key) over the canonical JSON of {seq, hash, ts}."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.chain import Head
from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.canonical import canonical_json
from vault.crypto.keys import KeyPair
from vault.errors import CheckpointSignatureInvalid

CHECKPOINT_MEMBERS = frozenset({"seq", "hash", "ts", "kid", "sig"})
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    seq: int
    hash: str
    ts: str
    kid: str
    sig: str

    def signed_bytes(self) -> bytes:
        return signed_bytes(self.seq, self.hash, self.ts)

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "ts": self.ts, "kid": self.kid, "sig": self.sig}


def signed_bytes(seq: int, hash: str, ts: str) -> bytes:
    return canonical_json({"seq": seq, "hash": hash, "ts": ts})


def make_checkpoint(head: Head, ts: str, key: KeyPair) -> Checkpoint:
    sig = key.sign(signed_bytes(head.seq, head.hash, ts))
    return Checkpoint(seq=head.seq, hash=head.hash, ts=ts, kid=key.kid, sig=b64url_encode(sig))


def verify_checkpoint(
    checkpoint: Checkpoint, lookup: Callable[[str], Ed25519PublicKey | None]
) -> Checkpoint:
    """Return the checkpoint if an audit key we know signed it; else raise."""
    public_key = lookup(checkpoint.kid)
    if public_key is None:
        raise CheckpointSignatureInvalid(checkpoint.seq, f"unknown audit key {checkpoint.kid!r}")
    try:
        signature = b64url_decode(checkpoint.sig)
        public_key.verify(signature, checkpoint.signed_bytes())
    except (ValueError, InvalidSignature):
        raise CheckpointSignatureInvalid(checkpoint.seq, "signature does not verify") from None
    return checkpoint


def checkpoint_from_dict(obj: Any) -> Checkpoint:
    """Read a checkpoint (API JSON, export line or checkpoint log); ``kind`` is allowed."""
    if not isinstance(obj, dict):
        raise ValueError("checkpoint is not a JSON object")
    members = set(obj) - {"kind"}
    if members != CHECKPOINT_MEMBERS:
        raise ValueError(f"checkpoint members must be {sorted(CHECKPOINT_MEMBERS)}")
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("checkpoint seq must be a non-negative integer")
    for name in ("hash", "ts", "kid", "sig"):
        if not isinstance(obj[name], str):
            raise ValueError(f"checkpoint {name} must be a string")
    if not _HEX64.fullmatch(obj["hash"]):
        raise ValueError("checkpoint hash must be 64 lowercase hex digits")
    return Checkpoint(seq=seq, hash=obj["hash"], ts=obj["ts"], kid=obj["kid"], sig=obj["sig"])
