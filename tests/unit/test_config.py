"""``load_settings``: SPEC §2's defaults, and one clear ``ConfigError`` for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.config import MAX_TTL_LIMIT, hide_url_password, load_settings, redact_url
from vault.errors import ConfigError


def test_the_pinned_defaults() -> None:
    settings = load_settings({})
    assert settings.home == Path(".vault")
    assert settings.database_url == "sqlite:///.vault/vault.db"
    assert settings.issuer == "http://127.0.0.1:8787"
    assert settings.audience == "open-webui"
    assert (settings.default_ttl, settings.max_ttl) == (300, 3600)
    assert settings.require_reason is True
    assert settings.checkpoint_every == 1000
    assert settings.checkpoint_log == Path(".vault/checkpoints.jsonl")
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8787, 1)


@pytest.mark.parametrize(
    ("name", "highest"),
    [
        ("VAULT_MAX_TTL", MAX_TTL_LIMIT),
        ("VAULT_CHECKPOINT_EVERY", 10**9),
        ("VAULT_COMMIT_BATCH_MAX", 100_000),
        ("VAULT_PORT", 65535),
    ],
)
def test_integers_are_bounded_on_both_sides(name: str, highest: int) -> None:
    load_settings({name: str(highest)})  # the bound itself is taken
    for bad in (str(highest + 1), "99999999999999999999", "0", "-1", "1.5", "ten"):
        with pytest.raises(ConfigError) as refused:
            load_settings({name: bad})
        assert name in refused.value.description
        assert "\n" not in refused.value.description


def test_a_default_ttl_above_the_max_is_refused() -> None:
    assert load_settings({"VAULT_DEFAULT_TTL": "600", "VAULT_MAX_TTL": "600"}).default_ttl == 600
    with pytest.raises(ConfigError, match="VAULT_DEFAULT_TTL"):
        load_settings({"VAULT_DEFAULT_TTL": "601", "VAULT_MAX_TTL": "600"})
    with pytest.raises(ConfigError, match="VAULT_DEFAULT_TTL"):
        load_settings({"VAULT_DEFAULT_TTL": str(MAX_TTL_LIMIT + 1)})  # above the default max


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:pw@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
        ("postgresql+psycopg://u@db/x", "postgresql+psycopg://u@db/x"),
        ("postgresql+psycopg://u:Top@Secret@db/x", "postgresql+psycopg://u:***@db/x"),
        ("postgresql+psycopg//u:TopSecretPw@db/x", "***@db/x"),  # not a URL: a ":" missing
        ("sqlite:///home/vault.db", "sqlite:///home/vault.db"),
        ("not a url", "not a url"),
        (
            "postgresql+psycopg://u@db/x?password=hunter22",
            "postgresql+psycopg://u@db/x?password=***",
        ),
        (
            "postgresql://db/x?sslmode=disable&PASSWORD=pw9&a=1",
            "postgresql://db/x?sslmode=disable&PASSWORD=***&a=1",
        ),
    ],
)
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_hide_url_password_takes_the_password_and_its_pieces_from_a_message() -> None:
    url = "postgresql+psycopg://u:Top@Secret9@db/x"
    said = "failed to resolve host 'Secret9@db'; password 'Top@Secret9' refused"
    assert hide_url_password(said, url) == "failed to resolve host '***@db'; password '***' refused"
    assert hide_url_password("no password here", "sqlite:///v.db") == "no password here"
    assert hide_url_password("ab at ab", "postgresql://u:ab@db/x") == "ab at ab"  # too short
    in_query = "postgresql+psycopg://u@db/x?password=hunter22"
    assert hide_url_password("password 'hunter22' refused", in_query) == "password '***' refused"


@pytest.mark.parametrize("raw", ["\u0663\u0660\u0660", "3_00", "+300", "300.0", "0x12c"])
def test_integers_are_plain_decimal_digits(raw: str) -> None:
    """int() takes other scripts' digits and underscores; a setting is written in ASCII."""
    with pytest.raises(ConfigError, match="VAULT_DEFAULT_TTL must be an integer"):
        load_settings({"VAULT_DEFAULT_TTL": raw})
    assert load_settings({"VAULT_DEFAULT_TTL": " 300 "}).default_ttl == 300


@pytest.mark.parametrize(("name", "longest"), [("VAULT_ISSUER", 1024), ("VAULT_AUDIENCE", 256)])
def test_issuer_and_audience_are_one_printable_word_of_bounded_length(
    name: str, longest: int
) -> None:
    assert getattr(load_settings({name: "x" * longest}), name.removeprefix("VAULT_").lower())
    for bad in ("x" * (longest + 1), " ", "https://vault.example\n", "a b", "\x1b[2J"):
        with pytest.raises(ConfigError) as refused:
            load_settings({name: bad})
        assert name in refused.value.description
        assert "\n" not in refused.value.description
