"""Time as a parameter: code that needs "now" takes a ``Clock``, so tests never sleep."""

from __future__ import annotations

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


def parse_ts(text: str) -> datetime:
    """Parse the audit spelling back (strictly); raises ``ValueError`` on anything else."""
    moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    if format_ts(moment) != text:
        raise ValueError(f"timestamp {text!r} is not in the canonical form")
    return moment
