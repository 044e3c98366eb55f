"""``dvault openwebui serve`` and ``dvault subjects sync``."""

from __future__ import annotations

import argparse
import os

import httpx

from vault.cli import workers
from vault.cli.output import CliError, emit_json, note
from vault.config import Settings, redact_url
from vault.errors import ConfigError
from vault.integrations.openwebui import launcher
from vault.integrations.openwebui.sync import fetch_users, sync
from vault.ops.runtime import open_vault


def cmd_openwebui_serve(_settings: Settings, args: argparse.Namespace) -> int:
    try:
        launcher.check_installed()
        launcher.verifier_config(os.environ)
    except ConfigError as exc:
        raise CliError(exc.description) from None
    launcher.prepare_environment(os.environ)
    try:  # before uvicorn: its own failure to bind is several lines and exit code 3
        workers.check_free(args.host, args.port)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CliError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    import uvicorn

    note(f"Open WebUI behind the vault verifier on http://{args.host}:{args.port}")
    uvicorn.run(
        "vault.integrations.openwebui.launcher:create",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        log_level="info",
    )
    return 0


def cmd_subjects_sync(settings: Settings, args: argparse.Namespace) -> int:
    token = os.environ.get("OPENWEBUI_ADMIN_TOKEN")
    if not token:
        raise CliError("set OPENWEBUI_ADMIN_TOKEN to an Open WebUI admin's token or sk- key", 2)
    if not token.isascii() or not token.isprintable():  # it goes into an HTTP header
        raise CliError("OPENWEBUI_ADMIN_TOKEN is not a token (printable ASCII)", 2)
    try:
        httpx.URL(args.openwebui_url)
    except httpx.InvalidURL:
        raise CliError(
            f"--openwebui-url is not a URL: {redact_url(args.openwebui_url)}", 2
        ) from None
    listed = fetch_users(args.openwebui_url, token)
    vault = open_vault(settings)
    try:
        result = sync(vault, listed)
    finally:
        vault.close()
    emit_json(result.to_dict())
    return 0
