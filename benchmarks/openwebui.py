"""Latency on a real Open WebUI: a delegation token against Open WebUI's own credentials.

A real vault (``dvault serve``) and a real Open WebUI 0.12.4 behind ``dvault openwebui serve``
(the venv of ``scripts/install-openwebui``; ``OWUI_VENV``), seeded through its REST API. Then
``GET /api/v1/chats/`` with keep-alive, one request at a time, with the user's session JWT, the
user's ``sk-`` key and a delegation token for the same user, in interleaved rounds so that
drift on a noisy machine hits all three alike. The primitive is the native session token's own
latency, measured in the same rounds: the goal is at most 15 % over it. The delegation token is
measured as the middleware ships (the vault decides before Open WebUI starts on the request) and,
on a second Open WebUI, with ``VAULT_OVERLAP_SAFE_METHODS=true`` (Open WebUI prepares a GET's
answer while the vault decides).
"""

from __future__ import annotations

import secrets
import statistics
import time
from pathlib import Path

import httpx

from benchmarks.report import Row
from benchmarks.timing import fmt_us
from benchmarks.vaults import BenchVault, Server, make_vault
from tests.e2e.conftest import OpenWebUIProcess, owui_env, owui_venv_path
from tests.e2e.seed import Seeded, seed
from vault.ops import principals, subjects
from vault.ops.runtime import open_vault

PATH = "/api/v1/chats/"
GOAL = 1.15


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _time(http: httpx.Client, token: str, count: int) -> list[float]:
    found = []
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(count):
        began = time.perf_counter()
        response = http.get(PATH, headers=headers)
        found.append(time.perf_counter() - began)
        if response.status_code != 200:
            raise RuntimeError(f"GET {PATH}: HTTP {response.status_code} {response.text[:200]}")
    return found


def run(*, tmp: Path, quick: bool) -> list[Row]:
    """The three credentials with the middleware as shipped (the vault decides before Open
    WebUI starts on a request), then, on an Open WebUI started again with
    ``VAULT_OVERLAP_SAFE_METHODS=true``, the session JWT and the delegation token again."""
    venv = owui_venv_path()
    if not (venv / "bin" / "dvault").exists():
        return [Row("Open WebUI latency", f"skipped: no Open WebUI venv at {venv}")]
    bench = make_vault(tmp / "owui-vault" / "home")
    rows: list[Row] = []
    with Server(bench, workers=1) as vault_server:
        data_dir = tmp / "owui-data"
        data_dir.mkdir()
        secret_key = secrets.token_urlsafe(32)  # the same for both: the seeded sessions hold
        accounts: Seeded | None = None
        for overlap in (False, True):
            env = owui_env(
                VAULT_URL=vault_server.url,
                VAULT_ISSUER=bench.settings.issuer,
                VAULT_VERIFIER_CREDENTIAL=bench.verifier,
                VAULT_OVERLAP_SAFE_METHODS=str(overlap).lower(),
                WEBUI_SECRET_KEY=secret_key,
                DATA_DIR=str(data_dir),
            )
            owui = OpenWebUIProcess(venv, env, data_dir)
            owui.start()
            try:
                owui.wait_ready()
                accounts = accounts or seed(owui.url)
                rows += _measure(
                    bench,
                    accounts,
                    vault_server.url,
                    owui.url,
                    rounds=5 if quick else 30,
                    overlap=overlap,
                )
            finally:
                owui.stop()
    return rows


def _measure(
    bench: BenchVault,
    accounts: Seeded,
    vault_url: str,
    owui_url: str,
    *,
    rounds: int,
    overlap: bool,
) -> list[Row]:
    user = accounts.user
    if not (user.session_token and user.api_key):
        raise RuntimeError("seeding gave the user no session token or sk- key")
    vault = open_vault(bench.settings)
    try:
        subject = subjects.parse_subject(user.id, {"email": user.email, "role": "user"})
        vault.appender.run(subjects.upsert_job(subject, actor=None))
        vault.appender.run(
            principals.set_policy_job(
                bench.delegator_id,
                {"scopes": ["chats:read"], "max_ttl_seconds": 3600},
                actor=None,
                known_scopes=vault.scopes.names,
                max_ttl=bench.settings.max_ttl,
            )
        )
    finally:
        vault.close()
    issued = httpx.post(
        f"{vault_url}/v1/token",
        headers={"Authorization": f"Bearer {bench.delegator}"},
        json={"subject": user.id, "scope": "chats:read", "ttl_seconds": 3600, "reason": "bench"},
        timeout=30,
    )
    issued.raise_for_status()
    delegation = "delegation token" + (", VAULT_OVERLAP_SAFE_METHODS=true" if overlap else "")
    credentials = {"session JWT": user.session_token}
    if not overlap:
        credentials["sk- key"] = user.api_key
    credentials[delegation] = issued.json()["access_token"]
    samples: dict[str, list[float]] = {name: [] for name in credentials}
    per_round = 20
    with httpx.Client(base_url=owui_url, timeout=30) as http:
        for token in credentials.values():
            _time(http, token, per_round)  # warm up each path (keys, caches, connections)
        for _ in range(rounds):
            for name, token in credentials.items():
                samples[name].extend(_time(http, token, per_round))
    native = statistics.median(samples["session JWT"])
    rows = []
    for name, found in samples.items():
        median = statistics.median(found)
        ratio = median / native
        is_goal = name == delegation
        if overlap and name == "session JWT":
            continue  # the baseline of the overlap row, measured again in its own rounds
        rows.append(
            Row(
                f"GET {PATH} on Open WebUI, {name}",
                f"median {fmt_us(median)}, p99 {fmt_us(_p99(found))} ({len(found)} requests)",
                f"session JWT median {fmt_us(native)}",
                f"{ratio:.2f}x",
                f"≤ {GOAL:.2f}x" if is_goal else "—",
                ratio <= GOAL if is_goal else None,
            )
        )
    return rows
