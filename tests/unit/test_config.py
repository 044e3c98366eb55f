"""``load_settings``: SPEC §2's defaults, and one clear ``ConfigError`` for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.config import MAX_TTL_LIMIT, load_settings
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
