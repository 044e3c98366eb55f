"""Recognizing secrets in text that came from a caller, so they are never echoed or audited.

A ``dv_`` credential, a JWT (two or three base64url parts starting ``eyJ``) or an Open WebUI
``sk-`` key pasted into a reason, a scope or a name must not come back in an error body nor
land in the audit log. Pure; no I/O.
"""

from __future__ import annotations

import re

_SECRET_LIKE = re.compile(
    r"dv_[A-Za-z0-9_-]{20,}"
    r"|(?<![A-Za-z0-9])(?i:dv)[_-][A-Za-z0-9_-]{20,}"  # as retyped: "DV_", "dv-"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?"
    r"|sk-[A-Za-z0-9]{16,}"
)
PLACEHOLDER = "[redacted]"


def looks_secret(text: str) -> bool:
    return bool(_SECRET_LIKE.search(text))


def redact_secrets(text: str) -> str:
    """``text`` with whatever looks like a credential or a token replaced."""
    return _SECRET_LIKE.sub(PLACEHOLDER, text)
