"""Recognizing secrets in text that came from a caller, so they are never echoed or audited.

A ``dv_`` credential, a JWT (two or three base64url parts starting ``eyJ``) or an Open WebUI
``sk-`` key pasted into a reason, a scope, a name or a path must not come back in an error body
nor land in the audit log or the access log — neither as it came nor percent-escaped, once or
more (``eyJ...%2EeyJ...``, ``dv%255F...``): paths and query strings are escaped, and a proxy may
escape them again. Pure; no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_SECRET_LIKE = re.compile(
    r"dv_[A-Za-z0-9_-]{20,}"
    r"|(?<![A-Za-z0-9])(?i:dv)[_-][A-Za-z0-9_-]{20,}"  # as retyped: "DV_", "dv-"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?"
    r"|sk-[A-Za-z0-9]{16,}"
)
PLACEHOLDER = "[redacted]"
ESCAPED_TOO_OFTEN = "[redacted: escaped too often]"
UNESCAPES = 8  # more than any chain of proxies escapes a path again


def looks_secret(text: str) -> bool:
    if _SECRET_LIKE.search(text):
        return True
    return "%" in text and redact_secrets(text) is not text


def redact_secrets(text: str) -> str:
    """``text`` with whatever looks like a credential or a token replaced, and ``text`` itself
    (the same object) when nothing does.

    A secret may hide behind percent-escapes: the text is redacted, unescaped, redacted again,
    and so on until unescaping changes nothing. If any round found a secret, the result is that
    last text (unescaped to the end, every secret replaced); redacting before each unescaping
    also takes a secret that came plain and that unescaping would have broken up
    (``%2eyJ...``). A text still changing after ``UNESCAPES`` rounds is replaced whole."""
    current, found = text, False
    for _ in range(UNESCAPES):
        redacted = _SECRET_LIKE.sub(PLACEHOLDER, current)
        found = found or redacted != current
        unescaped = unquote(redacted) if "%" in redacted else redacted
        if unescaped == redacted:
            return redacted if found else text
        current = unescaped
    return ESCAPED_TOO_OFTEN
