"""A scope table as the audit log records it (``scopes.loaded``), signed with the audit key.

``data`` of a ``scopes.loaded`` entry is ``{"scopes": ..., "never": ..., "kid": ..., "sig": ...}``:
the table (``ScopeTable.record``) and an Ed25519 signature, by the vault's audit key, over the
canonical JSON of ``{"type": "scopes.loaded", "scopes": ..., "never": ...}``. Verification
believes a recorded table only if one of the audit keys it trusts signed it: someone who can
write the database but holds no audit key cannot record a wider table to cover uses they forge.
(They could copy a table the vault did record, which is one of its own, earlier or later.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.audit.entry import SCOPES_LOADED
from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.crypto.canonical import canonical_json
from vault.crypto.keys import KeyPair
from vault.policy.scopes import ScopeTable, table_from_record

SIGNED_MEMBERS = frozenset({"scopes", "never", "kid", "sig"})


def _signed_bytes(record: dict[str, Any]) -> bytes:
    return canonical_json({"type": SCOPES_LOADED, **record})


def spelling(table: ScopeTable) -> str:
    """What ``recorded_table`` returns beside a record of ``table``: one text per table."""
    return _signed_bytes(table.record()).decode("utf-8")


def signed_record(table: ScopeTable, key: KeyPair) -> dict[str, Any]:
    """The ``data`` of the ``scopes.loaded`` entry recording ``table``, signed with ``key``."""
    record = table.record()
    sig = b64url_encode(key.sign(_signed_bytes(record)))
    return {**record, "kid": key.kid, "sig": sig}


def recorded_table(
    data: object, keys: Callable[[str], Ed25519PublicKey | None]
) -> tuple[str, ScopeTable]:
    """The table a ``scopes.loaded`` entry recorded, if one of ``keys`` signed it, with its
    canonical spelling (to tell tables apart); ``ValueError`` saying why not otherwise."""
    if not isinstance(data, dict) or data.keys() != SIGNED_MEMBERS:
        raise ValueError(f"its data must have exactly the members {sorted(SIGNED_MEMBERS)}")
    kid, sig = data["kid"], data["sig"]
    if not isinstance(kid, str) or not isinstance(sig, str):
        raise ValueError("kid and sig must be strings")
    record = {"scopes": data["scopes"], "never": data["never"]}
    public_key = keys(kid)
    if public_key is None:
        raise ValueError(
            f"it is signed by {kid[:60]!r}, which is not a trusted audit key (a key set saved "
            "before an audit key rotation? fetch /.well-known/audit-keys.json again)"
        )
    try:
        signed = _signed_bytes(record)  # refuses what is not canonical JSON (floats, say)
        public_key.verify(b64url_decode(sig), signed)
    except (ValueError, InvalidSignature):
        raise ValueError("its signature does not verify") from None
    return signed.decode("utf-8"), table_from_record(record)
