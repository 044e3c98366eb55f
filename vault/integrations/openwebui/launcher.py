"""``dvault openwebui serve``: Open WebUI with the verifier middleware in front of it.

``open-webui serve`` hard-codes ``uvicorn.run("open_webui.main:app")`` and Open WebUI has no
plug-in point for HTTP middleware, so this launcher sets what ``open-webui serve`` sets, imports
``open_webui.main:app`` and serves it wrapped in ``DelegationMiddleware``. Each uvicorn worker
builds its own wrapper through ``create`` (a factory reading the environment).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from vault.config import DEFAULT_ISSUER, env_bool
from vault.errors import ConfigError
from vault.middleware import DelegationMiddleware, VerifierConfig
from vault.policy.scopes import load_table

REQUIRED = ("VAULT_URL", "VAULT_VERIFIER_CREDENTIAL", "WEBUI_SECRET_KEY")


def verifier_config(env: Mapping[str, str]) -> VerifierConfig:
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise ConfigError(f"set {', '.join(missing)} to run Open WebUI behind the vault")
    vault_url = env["VAULT_URL"].rstrip("/")
    return VerifierConfig(
        vault_url=vault_url,
        credential=env["VAULT_VERIFIER_CREDENTIAL"],
        # The vault's own default, whatever address it is reached at (SPEC §2).
        issuer=env.get("VAULT_ISSUER") or DEFAULT_ISSUER,
        audience=env.get("VAULT_AUDIENCE") or "open-webui",
        overlap_safe_methods=env_bool(env, "VAULT_OVERLAP_SAFE_METHODS", False),
    )


def check_installed() -> None:
    if importlib.util.find_spec("open_webui") is None:
        raise ConfigError(
            "open-webui is not installed here: pip install '.[openwebui]' (open-webui==0.12.4)"
        )


def prepare_environment(env: MutableMapping[str, str]) -> None:
    """What ``open-webui serve`` sets before importing the app."""
    env["FROM_INIT_PY"] = "true"


def create() -> Any:
    """The uvicorn factory: Open WebUI's app behind the middleware."""
    config = verifier_config(os.environ)
    from open_webui.main import app as open_webui_app

    from vault.integrations.openwebui.mapper import OpenWebUIMapper

    scopes_file = os.environ.get("VAULT_SCOPES_FILE")
    scopes = load_table(Path(scopes_file) if scopes_file else None)
    return DelegationMiddleware(
        open_webui_app, config=config, mapper=OpenWebUIMapper(), scopes=scopes
    )
