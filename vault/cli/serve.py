"""``dvault serve``: check the vault opens (migrate, master key, keys), then run uvicorn: in
this process for one worker, else under ``vault.cli.workers`` (a listening socket per worker)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn

from vault.api.access_log import log_config
from vault.cli import workers
from vault.cli.admin import cmd_init
from vault.cli.output import CliError, note
from vault.config import Settings
from vault.errors import LogRewritten, NotInitialized
from vault.ops.runtime import open_vault
from vault.ops.scope_record import record_scopes
from vault.storage import meta_repo, migrate
from vault.storage.engine import Database


def _initialized(settings: Settings) -> bool:
    db = Database(settings.database_url)
    try:
        migrate.upgrade(db)
        with db.read() as session:
            return meta_repo.get_meta(session, meta_repo.INITIALIZED_AT) is not None
    finally:
        db.dispose()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    settings = settings.with_overrides(host=args.host, port=args.port, workers=args.workers)
    if args.init and not _initialized(settings):
        cmd_init(settings, argparse.Namespace(json=False))
    try:  # fail here, with one clear line, not in every worker
        vault = open_vault(settings)
    except NotInitialized as exc:
        raise CliError(f"{exc.description} (or use 'dvault serve --init')") from None
    try:
        if settings.workers < 1 or not 0 < settings.port < 65536:
            raise CliError("--workers must be at least 1 and --port within 1..65535", 2)
        # the workers' first write, done here: a database that refuses writes is one line too
        record_scopes(vault)
    except LogRewritten as exc:  # logged as critical: served for reading, writes refused
        note(f"dvault: warning: {exc.description}; serving reads only (/readyz says not ready)")
    finally:
        vault.close()
    os.environ["VAULT_HOME"] = str(settings.home)
    logging.getLogger("vault").setLevel(logging.INFO)
    forwarded = os.environ.get("VAULT_FORWARDED_ALLOW_IPS", "")
    options: dict[str, Any] = {
        "app": "vault.api.app:app_from_env",
        "factory": True,
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "info",
        # X-Forwarded-For is believed only from the proxies named in VAULT_FORWARDED_ALLOW_IPS
        # (none by default): otherwise any local process could forge the audited client_ip.
        "proxy_headers": bool(forwarded),
        "forwarded_allow_ips": forwarded or None,
        "server_header": False,
        "log_config": log_config(),  # the access log with secrets in paths redacted
    }
    if settings.workers == 1:
        _serve_here(options)
        return 0
    try:
        workers.check_free(settings.host, settings.port)
    except OSError as exc:
        raise CliError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    _serving(settings.host, settings.port, settings.workers)
    if workers.Supervisor(options, settings.workers).run() != 0:
        raise CliError("a worker could not start (its error is above); stopped")
    return 0


def _serve_here(options: dict[str, Any]) -> None:
    """One worker, in this process: bind first, so that a port in use or a host that does not
    resolve is one clear line (uvicorn would log it and exit 3), then uvicorn on that socket."""
    config = uvicorn.Config(**options)
    try:
        sock = workers.listening_socket(config.host, config.port, shared=False)
    except OSError as exc:
        raise CliError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") from None
    _serving(config.host, config.port, 1)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise CliError("the server could not start (its error is above)")


def _serving(host: str, port: int, count: int) -> None:
    note(f"serving on http://{host}:{port} ({count} worker(s))")
