"""Settings: one frozen object, read from ``VAULT_*`` environment variables, overridden by flags.

Nothing is read at import time. ``load_settings()`` builds the object; everything else receives it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vault.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
# More worker processes than this is a mistake on any machine the vault runs on (each holds a
# database connection pool and the chain lock is one): refused before any is started.
MAX_WORKERS = 64
# Delegation tokens are short-lived: no vault grants one for more than a week (and no policy or
# setting reaches integers a database column cannot hold).
MAX_TTL_LIMIT = 7 * 24 * 3600
DEFAULT_ISSUER = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"  # SPEC §2: it does not follow --port


@dataclass(frozen=True, kw_only=True)
class Settings:
    home: Path
    database_url: str
    master_key: str | None  # base64url text; never logged
    master_key_file: Path
    issuer: str
    audience: str
    default_ttl: int
    max_ttl: int
    require_reason: bool
    checkpoint_every: int
    checkpoint_log: Path
    scopes_file: Path | None
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    leeway_seconds: int = 30
    max_body_bytes: int = 64 * 1024
    # Group commit: at most this many audit entries share one durable transaction.
    commit_batch_max: int = 256
    # How long a process trusts its cached key set before looking for rotations.
    key_refresh_seconds: float = 5.0

    def with_overrides(self, **changes: Any) -> Settings:
        """Flags win over the environment; ``None`` means "flag not given"."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def __repr__(self) -> str:  # keep the master key out of every repr and traceback
        return f"Settings(home={str(self.home)!r}, database={redact_url(self.database_url)!r})"


def make_directory(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for what it makes; ``ConfigError`` in one line when a file
    stands where a directory must be (``VAULT_HOME`` naming a file, say)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{path} is not a directory (VAULT_HOME?)") from None


_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Hide the password of a URL (a database's, the vault's, Open WebUI's) in logs and
    messages. Of a text with ``@`` that is not a URL (``postgresql//u:pw@host``, a ``:``
    missing), only what follows the last ``@`` is shown."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)  # libpq's ?password=... too
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***@" + url.rsplit("@", 1)[1]
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def hide_url_password(text: str, url: str) -> str:
    """``text`` (a driver's message, say) without the password of ``url`` in it, whole or in
    the pieces a parser may have split it into at an unescaped ``@`` (``u:Top@Secret@host``
    read as host ``Secret@host``). Pieces shorter than 4 characters are left: replacing them
    would garble the message and hide little."""
    pieces = {m.group(2) for m in _QUERY_PASSWORD.finditer(url)}
    rest = url.partition("://")[2] or url
    if "@" in rest:
        _, colon, password = rest.rsplit("@", 1)[0].partition(":")
        if colon:
            pieces |= {password, *password.split("@")}
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) >= 4:
            text = text.replace(piece, "***")
    return text


_INTEGER = re.compile(r"-?[0-9]{1,19}")


def _int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int = 1, maximum: int | None = None
) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not _INTEGER.fullmatch(raw.strip()):  # not int()'s "3_00" or other scripts' digits
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    value = int(raw)
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


MAX_ISSUER_CHARS = 1024
MAX_AUDIENCE_CHARS = 256


def _claim(env: Mapping[str, str], name: str, default: str, longest: int) -> str:
    """A value every token carries (``iss``, ``aud``) and every verifier compares: one word of
    printable characters, short enough that a token stays far below the 8 KiB verifiers take."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if len(raw) > longest:
        raise ConfigError(f"{name} must be at most {longest} characters, got {len(raw)}")
    if not raw.isprintable() or any(ch.isspace() for ch in raw):
        raise ConfigError(f"{name} must be printable, without spaces, got {raw!r}")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the ``VAULT_*`` variables; raise ``ConfigError`` with one clear line on bad input."""
    env = os.environ if env is None else env
    home = Path(env.get("VAULT_HOME") or ".vault").expanduser()
    database_url = env.get("VAULT_DATABASE_URL") or f"sqlite:///{(home / 'vault.db').as_posix()}"
    master_key_file = Path(env.get("VAULT_MASTER_KEY_FILE") or home / "master.key").expanduser()
    default_ttl = _int(env, "VAULT_DEFAULT_TTL", 300)
    max_ttl = _int(env, "VAULT_MAX_TTL", 3600, maximum=MAX_TTL_LIMIT)
    if default_ttl > max_ttl:
        raise ConfigError(f"VAULT_DEFAULT_TTL ({default_ttl}) exceeds VAULT_MAX_TTL ({max_ttl})")
    scopes_file = env.get("VAULT_SCOPES_FILE")
    return Settings(
        home=home,
        database_url=database_url,
        master_key=env.get("VAULT_MASTER_KEY") or None,
        master_key_file=master_key_file,
        issuer=_claim(env, "VAULT_ISSUER", DEFAULT_ISSUER, MAX_ISSUER_CHARS),
        audience=_claim(env, "VAULT_AUDIENCE", "open-webui", MAX_AUDIENCE_CHARS),
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        require_reason=env_bool(env, "VAULT_REQUIRE_REASON", True),
        checkpoint_every=_int(env, "VAULT_CHECKPOINT_EVERY", 1000, maximum=10**9),
        checkpoint_log=Path(
            env.get("VAULT_CHECKPOINT_LOG") or home / "checkpoints.jsonl"
        ).expanduser(),
        scopes_file=Path(scopes_file).expanduser() if scopes_file else None,
        host=env.get("VAULT_HOST") or DEFAULT_HOST,
        port=_int(env, "VAULT_PORT", DEFAULT_PORT, maximum=65535),
        workers=_int(env, "VAULT_WORKERS", 1, maximum=MAX_WORKERS),
        commit_batch_max=_int(env, "VAULT_COMMIT_BATCH_MAX", 256, maximum=100_000),
    )
