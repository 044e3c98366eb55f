"""End to end: a real vault, a real Open WebUI 0.12.4 behind ``dvault openwebui serve``, real HTTP.

Open WebUI lives in its own venv (``scripts/install-openwebui``; ``OWUI_VENV``, default
``~/.cache/dvault/openwebui-0.12.4``). Without it these tests are skipped, unless
``DVAULT_REQUIRE_E2E=1`` (CI), where a missing venv is a failure.

One stack per session (Open WebUI takes ~20 s to start): the vault (``LiveServer`` on SQLite),
its verifier and delegator principals, Open WebUI as a subprocess in its own session with a fresh
``DATA_DIR``, seeded through its REST API, and its users imported by ``dvault subjects sync``.
The vault can be stopped by a test (``Stack.stop_vault``); that test runs last.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.seed import Seeded, SeedError, seed
from tests.support import Api, LiveServer, cli_env, dvault, free_port, make_settings
from vault.config import Settings
from vault.ops.setup import init_vault

DEFAULT_VENV = Path.home() / ".cache" / "dvault" / "openwebui-0.12.4"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0

# What start.sh (and `open-webui serve`) sets for a fully offline Open WebUI on 127.0.0.1.
OFFLINE_ENV = {
    "ENV": "prod",
    "ENABLE_OLLAMA_API": "False",
    "ENABLE_OPENAI_API": "False",
    "OFFLINE_MODE": "True",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
    "RAG_RERANKING_MODEL_AUTO_UPDATE": "False",
    "WHISPER_MODEL_AUTO_UPDATE": "False",
    "ENABLE_VERSION_UPDATE_CHECK": "False",
    "RAG_EMBEDDING_ENGINE": "openai",
    "ANONYMIZED_TELEMETRY": "False",
    "DO_NOT_TRACK": "true",
    "SCARF_NO_ANALYTICS": "true",
    "ENABLE_API_KEYS": "True",
    "ENABLE_SIGNUP": "True",
    "AUDIT_LOG_LEVEL": "NONE",
    "PYTHONUNBUFFERED": "1",
}


def required() -> bool:
    return os.environ.get("DVAULT_REQUIRE_E2E") == "1"


def owui_venv_path() -> Path:
    return Path(os.environ.get("OWUI_VENV") or DEFAULT_VENV).expanduser()


@pytest.fixture(scope="session")
def owui_venv() -> Path:
    """The Open WebUI venv; skip without it, or fail when CI requires the end-to-end tests."""
    venv = owui_venv_path()
    if not os.access(venv / "bin" / "dvault", os.X_OK):
        reason = (
            f"no Open WebUI venv with dvault at {venv}: run scripts/install-openwebui "
            "(or set OWUI_VENV)"
        )
        if required():
            pytest.fail(f"DVAULT_REQUIRE_E2E=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return venv


def owui_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A clean environment for Open WebUI: no VAULT_* or venv leaking in from outside."""
    source = os.environ if base is None else base
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    env = {k: v for k, v in source.items() if not k.startswith("VAULT_") and k not in drop}
    env.update(OFFLINE_ENV)
    env.update(extra)
    return env


class OpenWebUIProcess:
    """``<venv>/bin/dvault openwebui serve`` in its own session; log to a file."""

    def __init__(self, venv: Path, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "openwebui.log"
        self.workdir = workdir
        self.args = [
            str(venv / "bin" / "dvault"),
            "openwebui",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.env = {**env, "WEBUI_URL": self.url}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        assert self.proc is not None
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Open WebUI exited with {self.proc.returncode} during start; log tail:\n"
                    + self.log_tail()
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.25)
        raise RuntimeError(
            f"Open WebUI not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM to its process group, SIGKILL after a deadline; only our own process."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT)


@dataclass
class Stack:
    settings: Settings
    vault: LiveServer
    api: Api  # the vault's owner
    verifier_id: str
    delegator_id: str
    delegator: str  # the delegator's credential
    owui: OpenWebUIProcess
    http: httpx.Client  # to Open WebUI
    accounts: Seeded
    cli: dict[str, str]  # environment of a `dvault` process on this vault
    first_sync: dict[str, Any]
    vault_up: bool = field(default=True)

    @property
    def owui_url(self) -> str:
        return self.owui.url

    def issue(self, subject: str, scope: str, **extra: Any) -> dict[str, Any]:
        assert self.vault_up, "the vault was stopped: the vault-down test must run last"
        response = self.api.token(self.delegator, subject, scope=scope, **extra)
        assert response.status_code == 200, response.text
        issued: dict[str, Any] = response.json()
        return issued

    def as_bearer(self, method: str, path: str, token: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        return self.http.request(method, path, headers=headers, **kw)

    def head_seq(self) -> int:
        response = self.api.call("GET", "/v1/audit/verify", self.api.owner)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["ok"] is True, report
        seq: int = report["head_seq"]
        return seq

    def sync(self) -> subprocess.CompletedProcess[str]:
        return dvault(self.cli, "subjects", "sync", "--openwebui-url", self.owui_url)

    def stop_vault(self) -> None:
        if self.vault_up:
            self.vault.__exit__(None, None, None)
            self.vault_up = False


@pytest.fixture(scope="session")
def stack(owui_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("e2e")
    home = base / "vault-home"  # not "vault": `python -m vault` runs in its parent
    settings = make_settings(home, f"sqlite:///{home / 'vault.db'}")
    initialized = init_vault(settings)
    assert settings.master_key is not None

    with contextlib.ExitStack() as cleanup:
        vault = cleanup.enter_context(LiveServer(settings))
        api = Api(vault.url, initialized.credential)
        cleanup.callback(api.close)
        verifier_id, verifier = api.principal("open-webui", "verifier")
        delegator_id, delegator = api.principal("support-bot", "delegator")

        data_dir = base / "openwebui-data"
        data_dir.mkdir()
        owui = OpenWebUIProcess(
            owui_venv,
            owui_env(
                VAULT_URL=vault.url,
                VAULT_VERIFIER_CREDENTIAL=verifier,
                VAULT_ISSUER=settings.issuer,
                VAULT_AUDIENCE=settings.audience,
                WEBUI_SECRET_KEY=secrets.token_urlsafe(32),
                DATA_DIR=str(data_dir),
            ),
            base,
        )
        cleanup.callback(owui.stop)
        owui.start()
        try:
            ready_after = owui.wait_ready()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        print(f"Open WebUI ready in {ready_after:.1f} s on {owui.url}")

        http = httpx.Client(base_url=owui.url, timeout=30)
        cleanup.callback(http.close)
        try:
            accounts = seed(owui.url)
        except SeedError as exc:
            pytest.fail(f"seeding Open WebUI failed: {exc}; log tail:\n{owui.log_tail()}")

        cli = cli_env(
            home,
            VAULT_DATABASE_URL=settings.database_url,
            VAULT_MASTER_KEY=settings.master_key,
            OPENWEBUI_ADMIN_TOKEN=accounts.admin.session_token or "",
        )
        synced = dvault(cli, "subjects", "sync", "--openwebui-url", owui.url)
        assert synced.returncode == 0, synced.stderr
        s = Stack(
            settings=settings,
            vault=vault,
            api=api,
            verifier_id=verifier_id,
            delegator_id=delegator_id,
            delegator=delegator,
            owui=owui,
            http=http,
            accounts=accounts,
            cli=cli,
            first_sync=json.loads(synced.stdout),
        )
        # Teardown, in reverse: the client, Open WebUI, the owner's client, the vault (stopping a
        # vault that a test already stopped is harmless).
        yield s
