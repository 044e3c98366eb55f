"""``dvault token issue``: a client of a running vault (credential from ``VAULT_CREDENTIAL``)."""

from __future__ import annotations

import argparse
import os

import httpx

from vault.audit.semantics import shown
from vault.cli.output import CliError, emit_json
from vault.config import Settings, redact_url


def cmd_token_issue(_settings: Settings, args: argparse.Namespace) -> int:
    credential = os.environ.get("VAULT_CREDENTIAL")
    if not credential:
        raise CliError("set VAULT_CREDENTIAL to the delegator's credential", 2)
    if not credential.isascii() or not credential.isprintable():
        raise CliError("VAULT_CREDENTIAL is not a credential (dv_ and printable ASCII)", 2)
    body: dict[str, object] = {"subject": args.subject}
    if args.scope is not None:
        body["scope"] = args.scope
    if args.ttl is not None:
        body["ttl_seconds"] = args.ttl
    if args.reason is not None:
        body["reason"] = args.reason
    url = (args.url or os.environ.get("VAULT_URL") or "http://127.0.0.1:8787").rstrip("/")
    try:
        response = httpx.post(
            f"{url}/v1/token",
            json=body,
            headers={"Authorization": f"Bearer {credential}"},
            timeout=30,
        )
    except httpx.InvalidURL:  # its text may quote a password in the URL: not shown
        raise CliError(f"--url (or VAULT_URL) is not a URL: {redact_url(url)}", 2) from None
    except httpx.HTTPError as exc:
        where = redact_url(url)
        raise CliError(f"cannot reach the vault at {where}: {type(exc).__name__}") from None
    try:
        payload = response.json()
    except (ValueError, RecursionError):
        raise CliError(f"the vault answered HTTP {response.status_code} without JSON") from None
    if response.status_code != 200:
        code = payload.get("error") if isinstance(payload, dict) else None
        text = payload.get("error_description") if isinstance(payload, dict) else None
        if not isinstance(code, str) or not isinstance(text, str):
            raise CliError(f"refused (HTTP {response.status_code}), with no error body")
        shown_code, shown_text = shown(code[:300]), shown(text[:300])
        raise CliError(f"refused (HTTP {response.status_code} {shown_code}): {shown_text}")
    if not isinstance(payload, dict) or not isinstance(payload.get("access_token"), str):
        raise CliError("the vault answered HTTP 200 without a token: is --url (VAULT_URL) a vault?")
    emit_json(payload)
    return 0
