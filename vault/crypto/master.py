"""The master key: 32 random bytes, written as base64url, from the environment or a 0600 file."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from vault.config import make_directory
from vault.crypto.b64 import b64url_decode, b64url_encode
from vault.errors import MasterKeyError
from vault.redact import looks_secret

MASTER_KEY_BYTES = 32


def parse_master_key(text: str, *, source: str) -> bytes:
    """Base64url of 32 bytes; its ``=`` padding may be kept (``base64.urlsafe_b64encode``
    writes it). The bytes are what count."""
    stripped = text.strip()
    padding = len(stripped) - len(stripped.rstrip("="))
    unpadded = stripped[:-padding] if 0 < padding <= 2 and len(stripped) % 4 == 0 else stripped
    try:
        raw = b64url_decode(unpadded)
    except ValueError:
        raise MasterKeyError(f"{source}: master key is not base64url") from None
    if len(raw) != MASTER_KEY_BYTES:
        raise MasterKeyError(f"{source}: master key must be 32 bytes, got {len(raw)}")
    return raw


def shown_key_path(path: Path) -> str:
    """``path`` as a message may show it: not at all when it is itself a master key (or a
    credential or token), as when the key was put in ``VAULT_MASTER_KEY_FILE`` by mistake."""
    if looks_secret(str(path)):
        return "(a path that looks like a credential or token, not shown)"
    try:
        parse_master_key(path.name, source="")
    except MasterKeyError:
        return str(path)
    return "(a path that is itself a master key, not shown: the key goes in VAULT_MASTER_KEY)"


def read_master_key_file(path: Path) -> bytes:
    shown = shown_key_path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise MasterKeyError(
            f"master key file {shown} does not exist (run 'dvault init')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise MasterKeyError(f"master key file {shown} cannot be read: {reason}") from None
    if stat.S_IMODE(mode) & 0o077:
        raise MasterKeyError(
            f"master key file {shown} may be read or written by others: chmod 600 it"
        )
    return parse_master_key(text, source=shown)


def generate_master_key() -> bytes:
    return secrets.token_bytes(MASTER_KEY_BYTES)


def write_secret_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, even briefly), in a
    directory of mode 0700 if it makes one, and durably: the file and its name in the directory
    are on disk before anything is sealed with what it holds (a crash must not keep the
    database and lose the key)."""
    make_directory(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_master_key_file(path: Path, key: bytes) -> None:
    write_secret_file(path, b64url_encode(key) + "\n")
