"""The Open WebUI launcher's verifier settings (SPEC §2, §8), from its environment."""

from __future__ import annotations

import pytest

from vault.config import load_settings
from vault.errors import ConfigError
from vault.integrations.openwebui.launcher import verifier_config

BASE = {"VAULT_VERIFIER_CREDENTIAL": "dv_" + "x" * 43, "WEBUI_SECRET_KEY": "owui-secret"}


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787", "http://localhost:8787", "http://vault:9000/"]
)
def test_the_issuer_defaults_to_the_vaults_own_default_wherever_it_is_reached(url: str) -> None:
    """A vault on its defaults signs with ``iss`` http://127.0.0.1:8787 whatever address Open
    WebUI reaches it at; the verifier must expect the same, or every token is refused."""
    config = verifier_config({**BASE, "VAULT_URL": url})
    assert config.issuer == load_settings({}).issuer == "http://127.0.0.1:8787"
    assert config.vault_url == url.rstrip("/")
    assert config.audience == load_settings({}).audience == "open-webui"


def test_issuer_and_audience_follow_the_environment() -> None:
    env = {
        **BASE,
        "VAULT_URL": "http://vault:9000",
        "VAULT_ISSUER": "https://vault.example.com",
        "VAULT_AUDIENCE": "owui-prod",
    }
    config = verifier_config(env)
    assert (config.issuer, config.audience) == ("https://vault.example.com", "owui-prod")
    settings = load_settings(
        {k: v for k, v in env.items() if k in ("VAULT_ISSUER", "VAULT_AUDIENCE")}
    )
    assert (settings.issuer, settings.audience) == (config.issuer, config.audience)


@pytest.mark.parametrize("missing", ["VAULT_URL", "VAULT_VERIFIER_CREDENTIAL", "WEBUI_SECRET_KEY"])
def test_a_missing_setting_is_named(missing: str) -> None:
    env = {**BASE, "VAULT_URL": "http://127.0.0.1:8787"}
    env.pop(missing, None)
    with pytest.raises(ConfigError, match=missing):
        verifier_config(env)
