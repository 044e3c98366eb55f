"""Recognizing secrets in text that came from a caller, so they are never echoed or audited.

A ``dv_`` credential, a JWT (two or three base64url parts starting ``eyJ``) or an Open WebUI
``sk-`` key pasted into a reason, a scope, a name or a path must not come back in an error body
nor land in the audit log or the access log — neither as it came nor percent-escaped, once or
more (``eyJ...%2EeyJ...``, ``dv%255F...``): paths and query strings are escaped, and a proxy may
escape them again. Pure; no I/O.
"""

from __future__ import annotations

import bisect
import re
from urllib.parse import unquote

# What looks like a secret, as one regular expression (the reference; see ``_spans``):
#   dv_[A-Za-z0-9_-]{20,}
#   | (?<![A-Za-z0-9])(?i:dv)[_-][A-Za-z0-9_-]{20,}           a credential as retyped: DV_, dv-
#   | eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?:\.[A-Za-z0-9_-]*)?   a JWT, signed or not
#   | sk-[A-Za-z0-9]{16,}                                      an Open WebUI key
# Run by ``re`` its JWT branch is quadratic: from every "eyJ" of a long run without a dot it
# scans to the run's end (a 2 KiB path of "eyJeyJ..." took about a millisecond, a 16 KiB one in
# the access log 55 ms, and each unescaping round pays it again). ``_spans`` finds the same
# matches in linear time: the other branches by ``re`` (a failed attempt stops within 20
# characters, a match consumes what it scans), the JWT branch from the runs of base64url
# characters, found once.
_CREDENTIAL = re.compile(r"dv_[A-Za-z0-9_-]{20,}")
_RETYPED = re.compile(r"(?<![A-Za-z0-9])(?i:dv)[_-][A-Za-z0-9_-]{20,}")
_KEY = re.compile(r"sk-[A-Za-z0-9]{16,}")
_STARTS = re.compile(r"(?i:dv)[_-]|eyJ|sk-")  # where a match can begin (they never overlap)
_RUN = re.compile(r"[A-Za-z0-9_-]+")
PLACEHOLDER = "[redacted]"
# Holds PLACEHOLDER: the semantic checks leave the scope of a path holding it unchecked.
ESCAPED_TOO_OFTEN = f"{PLACEHOLDER} (escaped too often)"
UNESCAPES = 8  # more than any chain of proxies escapes a path again


def _spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds something that looks like a secret: the matches, left to right and
    not overlapping, that ``re.finditer`` of the expression above would give."""
    first = _STARTS.search(text)
    if first is None:
        return []  # most text: one scan by ``re``
    found: list[tuple[int, int]] = []
    runs: list[tuple[int, int]] | None = None  # base64url runs, made at the first "eyJ"
    done = 0  # the end of the last match
    barren = 0  # the end of a run where a JWT failed: none can begin before it either
    for start in _STARTS.finditer(text, first.start()):
        at = start.start()
        if at < done:
            continue
        if text.startswith("eyJ", at):
            if at < barren:
                continue
            if runs is None:
                runs = [m.span() for m in _RUN.finditer(text)]
            end, barren = _jwt_end(text, at, runs)
        else:
            end = _other_end(text, at)
        if end is not None:
            found.append((at, end))
            done = end
    return found


def _other_end(text: str, at: int) -> int | None:
    """The end of a credential or key match at ``at`` (the branches that can begin with what
    is there, in the expression's order), if any."""
    branches = (_KEY,) if text.startswith("sk-", at) else (_CREDENTIAL, _RETYPED)
    for branch in branches:
        match = branch.match(text, at)
        if match is not None:
            return match.end()
    return None


def _jwt_end(text: str, at: int, runs: list[tuple[int, int]]) -> tuple[int | None, int]:
    """The end of the JWT branch's match at ``at`` (where "eyJ" is), if any: the rest of its
    run (8 characters at least after "eyJ"), a dot, a whole run of 8 or more, then, if a dot
    follows, that dot and the run after it (maybe none). Also the end of ``at``'s run: when
    there is no match, no later "eyJ" of the same run has one (each condition only gets harder
    further along the run)."""
    i = bisect.bisect_right(runs, (at, len(text))) - 1  # the run holding ``at``
    first_end = runs[i][1]
    if first_end - (at + 3) < 8 or not text.startswith(".", first_end):
        return None, first_end
    second = _run_at(runs, i + 1, first_end + 1)
    if second is None or second - (first_end + 1) < 8:
        return None, first_end
    if not text.startswith(".", second):
        return second, first_end
    third = _run_at(runs, i + 2, second + 1)
    return (second + 1 if third is None else third), first_end


def _run_at(runs: list[tuple[int, int]], i: int, position: int) -> int | None:
    """The end of run ``i`` if it starts at ``position`` (else there is none there)."""
    return runs[i][1] if i < len(runs) and runs[i][0] == position else None


def _replaced(text: str, spans: list[tuple[int, int]]) -> str:
    parts: list[str] = []
    last = 0
    for start, end in spans:
        parts += (text[last:start], PLACEHOLDER)
        last = end
    parts.append(text[last:])
    return "".join(parts)


def looks_secret(text: str) -> bool:
    return redact_secrets(text) is not text  # the same object back: nothing was found


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
        spans = _spans(current)
        redacted = _replaced(current, spans) if spans else current
        found = found or bool(spans)
        unescaped = unquote(redacted) if "%" in redacted else redacted
        if unescaped == redacted:
            return redacted if found else text
        current = unescaped
    return ESCAPED_TOO_OFTEN
