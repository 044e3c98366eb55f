"""Rows of the table, the machine they ran on, and the markdown that prints them."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata

LIBRARIES = (
    "cryptography",
    "PyJWT",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "SQLAlchemy",
    "psycopg",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table. ``met`` is None where there is no goal (a raw primitive)."""

    path: str
    measured: str
    primitive: str = "—"
    ratio: str = "—"
    goal: str = "—"
    met: bool | None = None
    note: str = ""


def met_text(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "**no**")


def markdown(rows: list[Row]) -> str:
    head = "| path | measured | primitive (measured now) | ratio | goal | met? |"
    lines = [head, "|---|---|---|---|---|---|"]
    for row in rows:
        path = row.path + (f" ({row.note})" if row.note else "")
        cells = (path, row.measured, row.primitive, row.ratio, row.goal, met_text(row.met))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def versions() -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def machine(started: datetime, load_before: str, extra: list[str]) -> str:
    """A few lines that say where and when the table was measured."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    lines = [
        f"- date: {started.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({sys.implementation.name}), "
        f"SQLite {sqlite_version()}",
        f"- libraries: {versions()}",
        f"- load average (1/5/15 min) before: {load_before}; after: {load_text()}",
        *(f"- {line}" for line in extra),
    ]
    return "\n".join(lines)


def now() -> datetime:
    return datetime.now(UTC)
