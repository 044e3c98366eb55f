"""Time as a parameter: code that needs "now" takes a ``Clock``, so tests never sleep."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """``2026-11-27T17:00:00.123456Z``: the audit log's one timestamp spelling."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_CANONICAL_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


def parse_ts(text: str) -> datetime:
    """Parse the audit spelling back (strictly); raises ``ValueError`` on anything else.

    The pattern fixes the spelling; ``fromisoformat`` then checks the ranges (month 13, hour 24,
    February 30 are refused). Both are fast: verification calls this once per entry.
    """
    if not _CANONICAL_TS.fullmatch(text):
        raise ValueError(f"timestamp {text!r} is not in the canonical form")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
