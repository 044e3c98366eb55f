"""CLI output: results to stdout, one-line errors to stderr, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging() -> None:
    """The vault's own log lines (warnings and errors) on stderr, each with its level and
    logger: in the CLI's process and in each worker ``serve --workers N`` spawns, which starts
    with no logging configured (its lines would lose both)."""
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)


OK = 0
REFUSED = 1  # verification failed, or the operation was refused
USAGE = 2


class CliError(Exception):
    """An error to report as one line, with its exit code."""

    def __init__(self, message: str, code: int = REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def emit(text: str) -> None:
    """Write a result line to stdout (this is where a credential is shown, once)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit_json(value: Any) -> None:
    emit(json.dumps(value, indent=2, sort_keys=True))


def note(text: str) -> None:
    """Human commentary to stderr, so stdout stays parseable."""
    sys.stderr.write(text + "\n")


def fail(message: str) -> None:
    sys.stderr.write(f"dvault: error: {message}\n")
