"""The master key: 32 bytes as base64url, from the environment or a file only its owner can read."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from vault.crypto.b64 import b64url_encode
from vault.crypto.master import (
    MASTER_KEY_BYTES,
    generate_master_key,
    parse_master_key,
    read_master_key_file,
    write_master_key_file,
    write_secret_file,
)
from vault.errors import MasterKeyError

KEY = b"\xfb\xff\xbf" * 10 + b"\x01\x02"  # TEST-ONLY; its base64url holds "-" and "_"
KEY_TEXT = b64url_encode(KEY)


@pytest.fixture
def open_umask():
    """Umask 0, so a mode we observe comes from the code and not from the environment."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_generated_keys_are_32_random_bytes():
    keys = {generate_master_key() for _ in range(4)}
    assert len(keys) == 4
    assert all(len(k) == MASTER_KEY_BYTES == 32 for k in keys)


def test_written_file_is_0600_and_reads_back(tmp_path, open_umask):
    path = tmp_path / "nested" / "dir" / "master.key"
    write_master_key_file(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700  # the directory it made, too
    assert path.read_text(encoding="ascii") == KEY_TEXT + "\n"
    assert read_master_key_file(path) == KEY


def test_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "master.key"
    write_master_key_file(path, KEY)
    with pytest.raises(FileExistsError):
        write_secret_file(path, "replacement")
    assert read_master_key_file(path) == KEY


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o620, 0o602, 0o660, 0o666, 0o610])
def test_file_readable_or_writable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "master.key"
    write_master_key_file(path, KEY)
    path.chmod(mode)
    with pytest.raises(MasterKeyError, match="read or written by others: chmod 600"):
        read_master_key_file(path)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_modes_are_accepted(tmp_path, mode):
    path = tmp_path / "master.key"
    write_master_key_file(path, KEY)
    path.chmod(mode)
    assert read_master_key_file(path) == KEY


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(MasterKeyError, match="does not exist \\(run 'dvault init'\\)"):
        read_master_key_file(tmp_path / "absent.key")


def test_directory_or_non_ascii_file_cannot_be_read(tmp_path):
    with pytest.raises(MasterKeyError, match="cannot be read"):
        read_master_key_file(tmp_path)
    path = tmp_path / "master.key"
    write_secret_file(path, "x")
    path.write_bytes("é".encode())
    with pytest.raises(MasterKeyError, match="cannot be read"):
        read_master_key_file(path)


@pytest.mark.parametrize("text", [KEY_TEXT, f"  {KEY_TEXT}\n", f"{KEY_TEXT}\r\n"])
def test_parse_accepts_surrounding_whitespace(text):
    assert parse_master_key(text, source="VAULT_MASTER_KEY") == KEY


def test_parse_accepts_the_padding_standard_tools_write():
    """RFC 4648 base64url keeps its ``=`` padding unless told otherwise: the key written by
    ``base64.urlsafe_b64encode`` is the same key."""
    padded = base64.urlsafe_b64encode(KEY).decode()
    assert padded == KEY_TEXT + "="
    assert parse_master_key(padded, source="VAULT_MASTER_KEY") == KEY
    assert parse_master_key(f" {padded}\n", source="VAULT_MASTER_KEY") == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (KEY_TEXT + "==", "not base64url"),
        (KEY_TEXT[:-1] + "=", "not base64url"),
        (KEY_TEXT.replace("-", "+").replace("_", "/"), "not base64url"),
        (KEY.hex(), "must be 32 bytes, got 48"),
        (b64url_encode(KEY[:31]), "must be 32 bytes, got 31"),
        (b64url_encode(KEY + b"\x00"), "must be 32 bytes, got 33"),
        (base64.urlsafe_b64encode(KEY[:16]).decode(), "must be 32 bytes, got 16"),
        ("", "must be 32 bytes, got 0"),
        (KEY_TEXT[:21] + " " + KEY_TEXT[21:], "not base64url"),
    ],
    ids=[
        "over-padded",
        "pad-for-a-digit",
        "standard-alphabet",
        "hex",
        "short",
        "long",
        "short-padded",
        "empty",
        "inner-space",
    ],
)
def test_parse_refuses_malformed_keys_naming_the_source(text, message):
    assert "-" in KEY_TEXT  # so the standard-alphabet case really differs
    with pytest.raises(MasterKeyError, match=message) as excinfo:
        parse_master_key(text, source="VAULT_MASTER_KEY")
    assert str(excinfo.value).startswith("VAULT_MASTER_KEY: ")
    if text:
        assert text.strip() not in str(excinfo.value)  # never echo the key


def test_refused_file_names_its_path(tmp_path):
    path = tmp_path / "master.key"
    write_secret_file(path, "bm90IGEga2V5")
    with pytest.raises(MasterKeyError, match="got 9") as excinfo:
        read_master_key_file(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("named", ["key", "credential"])
def test_a_key_put_where_its_file_is_named_is_never_shown(tmp_path, monkeypatch, named):
    """VAULT_MASTER_KEY_FILE set to the key itself (or a credential) by mistake: the error
    says what is wrong without printing it."""
    secret = b64url_encode(KEY) if named == "key" else "dv_" + "A1b2C3d4" * 6
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MasterKeyError) as missing:
        read_master_key_file(Path(secret))
    assert secret not in str(missing.value)
    assert "not shown" in str(missing.value)
    Path(secret).write_text("not a key", encoding="ascii")
    Path(secret).chmod(0o600)
    with pytest.raises(MasterKeyError) as wrong:
        read_master_key_file(Path(secret))
    assert secret not in str(wrong.value)
