"""``dvault``: the command line (SPEC §10). Thin commands over the operations the server uses."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from sqlalchemy.exc import SQLAlchemyError

from vault import __version__
from vault.cli.output import USAGE, CliError, configure_logging, fail
from vault.config import MAX_WORKERS, Settings, hide_url_password, load_settings
from vault.crypto.canonical import is_utf8_text
from vault.errors import VaultError
from vault.redact import redact_secrets

Command = Callable[[Settings, argparse.Namespace], int]
SUPPRESS = argparse.SUPPRESS
MAX_JOBS = 64


class Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')")
        raise SystemExit(USAGE)


def build_parser() -> Parser:
    parser = Parser(prog="dvault", description="Delegation Vault: audited delegation tokens.")
    parser.add_argument("--version", action="version", version=f"dvault {__version__}")
    parser.add_argument("--home", type=Path, help="VAULT_HOME (default ./.vault)")
    parser.add_argument("--database-url", help="VAULT_DATABASE_URL (default SQLite in VAULT_HOME)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("init", help="create the database, keys and the first owner (once)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run="admin:cmd_init")

    p = sub.add_parser("serve", help="run the HTTP API (migrates first)")
    p.add_argument("--host", type=_host, help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=_port, help="listen port (default 8787)")
    p.add_argument(
        "--workers", type=_workers, help=f"worker processes, 1 to {MAX_WORKERS} (default 1)"
    )
    p.add_argument("--init", action="store_true", help="initialize first if this vault is new")
    p.set_defaults(run="serve:cmd_serve")

    p = sub.add_parser("migrate", help="upgrade the database schema to the latest revision")
    p.set_defaults(run="admin:cmd_migrate")

    principals = sub.add_parser("principals", help="manage principals").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    p = principals.add_parser("create", help="create a principal; prints its credential once")
    p.add_argument("name")
    p.add_argument(
        "--role",
        action="extend",
        nargs="+",
        required=True,
        choices=["owner", "delegator", "auditor", "verifier"],
        help="one or more roles (--role delegator auditor, or repeat --role)",
    )
    p.add_argument("--policy", help='delegation policy as JSON, e.g. \'{"scopes": ["chat"]}\'')
    p.add_argument("--json", action="store_true")
    p.set_defaults(run="admin:cmd_principals_create")
    p = principals.add_parser("list", help="list principals")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run="admin:cmd_principals_list")

    subjects = sub.add_parser("subjects", help="manage subjects").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    p = subjects.add_parser("put", help="create or replace a subject (an Open WebUI user)")
    p.add_argument("id", help="the Open WebUI user id")
    p.add_argument("--email", required=True)
    p.add_argument("--name")
    p.add_argument("--role", default="user", choices=["admin", "user", "pending"])
    p.add_argument("--inactive", action="store_true", help="mark the subject inactive")
    p.set_defaults(run="admin:cmd_subjects_put")

    p = subjects.add_parser("sync", help="import Open WebUI's users (OPENWEBUI_ADMIN_TOKEN)")
    p.add_argument("--openwebui-url", required=True, help="e.g. http://127.0.0.1:8080")
    p.set_defaults(run="openwebui:cmd_subjects_sync")

    token = sub.add_parser("token", help="client commands").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    p = token.add_parser("issue", help="exchange VAULT_CREDENTIAL for a delegation token")
    p.add_argument("--subject", required=True, help="subject id or email")
    p.add_argument("--scope", help='space-separated scopes (default "chat models:read")')
    p.add_argument("--ttl", type=int, help="lifetime in seconds")
    p.add_argument("--reason", help="why (required unless VAULT_REQUIRE_REASON=false)")
    p.add_argument("--url", help="the vault's URL (default VAULT_URL or http://127.0.0.1:8787)")
    p.set_defaults(run="client:cmd_token_issue")

    keys = sub.add_parser("keys", help="signing keys").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    p = keys.add_parser("rotate", help="make a new signing key; the old one stays published")
    p.add_argument("--purpose", default="token", choices=["token", "audit"])
    p.set_defaults(run="admin:cmd_keys_rotate")

    audit_cmds = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    p = audit_cmds.add_parser(
        "verify", help="verify the chain, checkpoints and meaning; exit 1 if bad"
    )
    p.add_argument("--file", type=Path, help="verify this NDJSON export instead of the database")
    p.add_argument(
        "--jwks",
        type=Path,
        help="the audit keys checkpoints must be signed with (the vault's audit-keys.json, "
        "saved where the database's writers cannot change it); needed with --file",
    )
    p.add_argument("--checkpoint", type=Path, help="a checkpoint saved earlier by a reviewer")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--no-semantics",
        action="store_true",
        help="check hashes and checkpoints only, not the log's meaning",
    )
    p.add_argument(
        "--jobs",
        type=_jobs,
        metavar="N",
        help="processes that walk the stored chain side by side (default: one per CPU for a "
        "log of 100,000 entries or more; 1: this process alone)",
    )
    p.set_defaults(run="audit:cmd_verify")
    p = audit_cmds.add_parser("export", help="write the NDJSON export")
    p.add_argument("--out", type=Path, help="file to write (default stdout)")
    p.set_defaults(run="audit:cmd_export")
    p = audit_cmds.add_parser("tail", help="print the latest entries")
    p.add_argument("-n", "--lines", type=_count, default=20, help="how many (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new entries")
    p.add_argument("--interval", type=_seconds, default=1.0, help=argparse.SUPPRESS)
    p.set_defaults(run="audit:cmd_tail")
    owui = sub.add_parser("openwebui", help="Open WebUI integration").add_subparsers(
        dest="action", required=True, parser_class=Parser
    )
    p = owui.add_parser("serve", help="run Open WebUI behind the verifier middleware")
    p.add_argument("--host", type=_host, default="127.0.0.1", help="default 127.0.0.1")
    p.add_argument("--port", type=_port, default=8080, help="default 8080")
    p.add_argument("--workers", type=_workers, default=1, help="default 1")
    p.set_defaults(run="openwebui:cmd_openwebui_serve")
    _globals_anywhere(parser)
    return parser


def _globals_anywhere(parser: argparse.ArgumentParser) -> None:
    """``--home`` and ``--database-url`` after the command too (``dvault audit verify --home
    X``): each subcommand takes them, without a default, so the one given last wins and none
    given leaves the top level's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.add_argument("--home", type=Path, default=argparse.SUPPRESS, help=SUPPRESS)
                sub.add_argument("--database-url", default=argparse.SUPPRESS, help=SUPPRESS)
                _globals_anywhere(sub)


def _jobs(text: str) -> int:
    """``--jobs``: a positive number of processes."""
    value = _count(text)
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"--jobs is 1 to {MAX_JOBS}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.01 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"seconds are 0.01 to 3600, not {text}")
    return value


def _host(text: str) -> str:
    """A listen address: never empty (an empty host is every interface to a server, which an
    unset variable in ``--host "$BIND"`` must not become), nor spaces or controls."""
    if not text or not text.isprintable() or any(ch.isspace() for ch in text):
        raise argparse.ArgumentTypeError(f"not a host name or address: {text!r}")
    return text


def _port(text: str) -> int:
    value = _count(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, not {value}")
    return value


def _workers(text: str) -> int:
    value = _count(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"--workers is 1 to {MAX_WORKERS}, not {value}")
    return value


def _count(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"not 0 or more: {value}")
    return value


def _command(target: str) -> Command:
    """Import a command's module only when it runs: ``dvault`` starts fast."""
    module, _, name = target.partition(":")
    command: Command = getattr(importlib.import_module(f"vault.cli.{module}"), name)
    return command


def _not_utf8(args: argparse.Namespace) -> str | None:
    """What names an argument or a ``VAULT_`` variable that is not valid UTF-8 (Python holds
    such bytes as lone surrogates, which nothing downstream can encode), or ``None``. File
    paths (``Path`` options) may be any bytes, as the file system allows."""
    for option, value in vars(args).items():
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(text, str) and not is_utf8_text(text) for text in texts):
            return f"the argument {option.replace('_', '-')}"
    for name, value in os.environ.items():
        if name.startswith("VAULT_") and not (is_utf8_text(name) and is_utf8_text(value)):
            return f"the environment variable {name.encode('utf-8', 'replace').decode()}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wrong = _not_utf8(args)
    if wrong is not None:
        fail(f"{wrong} is not valid UTF-8")
        return USAGE
    # Flags win over the environment; they are put there so that serve's workers see them too.
    if args.home is not None:
        os.environ["VAULT_HOME"] = str(args.home)
    if args.database_url is not None:
        os.environ["VAULT_DATABASE_URL"] = args.database_url
    if args.run == "serve:cmd_serve":  # serve's own flags win too, even over a bad variable
        for name, value in (("HOST", args.host), ("PORT", args.port), ("WORKERS", args.workers)):
            if value is not None:
                os.environ[f"VAULT_{name}"] = str(value)
    configure_logging()
    prints = args.run != "serve:cmd_serve" or args.init  # a server alone logs to stderr
    if sys.stdout is None and prints:  # started with its standard output closed (">&-")
        fail("standard output is closed: nothing could be printed")
        return 1
    try:
        settings = load_settings()
        return _command(args.run)(settings, args)
    except CliError as exc:
        fail(exc.message)
        return exc.code
    except VaultError as exc:
        fail(exc.description)
        return 1
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0][:200]
        shown = hide_url_password(first, os.environ.get("VAULT_DATABASE_URL", ""))
        fail(f"database error: {type(exc).__name__}: {shown}")
        return 1
    except OSError as exc:
        fail(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug of ours: one line all the same, never a traceback
        logging.getLogger("vault").debug("unexpected error", exc_info=True)
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        fail(f"unexpected error ({type(exc).__name__}): {redact_secrets(first)}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
