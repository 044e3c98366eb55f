"""The server stacks tried, by measurement: uvicorn's loop and HTTP implementations, the access
log, and the number of workers. Each variant serves a fresh SQLite vault; ``/healthz`` and
``POST /v1/token`` are loaded with the same connections and duration as the main rows.

``dvault serve`` runs uvicorn with uvloop + httptools and the access log on; the other variants
run ``uvicorn vault.api.app:app_from_env --factory`` directly with the flags shown, or the same
application factory under granian (Rust HTTP server, ASGI interface) and hypercorn. Those two are
not dependencies of the project: their rows say "skipped" unless they are installed in the
benchmark's environment (``pip install granian hypercorn``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from benchmarks import http_load
from benchmarks.report import Row
from benchmarks.vaults import Server, make_vault

CONNECTIONS = 16


def _factory(workers: int) -> list[str]:
    """The application factory on 127.0.0.1 (the port filled in by ``Server``), as uvicorn and
    granian both take it."""
    factory = ["vault.api.app:app_from_env", "--factory", "--host", "127.0.0.1"]
    return [*factory, "--port", "{port}", "--workers", str(workers)]


def _uvicorn(workers: int, loop: str, http: str, *, access_log: bool) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        *_factory(workers),
        "--loop",
        loop,
        "--http",
        http,
        "--log-level",
        "info",
        "--no-server-header",
        "--proxy-headers",
    ]
    return command if access_log else [*command, "--no-access-log"]


def _script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _granian(workers: int) -> list[str]:
    return [
        _script("granian"),
        "--interface",
        "asgi",
        *_factory(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--access-log",
    ]


def _hypercorn(workers: int) -> list[str]:
    return [
        _script("hypercorn"),
        "--worker-class",
        "uvloop",
        "--bind",
        "127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--access-logfile",
        "-",
        "vault.api.app:app_from_env()",
    ]


VARIANTS: list[tuple[str, int, list[str] | None]] = [
    ("dvault serve (uvloop + httptools, access log), 1 worker", 1, None),
    ("dvault serve (uvloop + httptools, access log), 2 workers", 2, None),
    (
        "uvicorn asyncio + h11, access log, 1 worker",
        1,
        _uvicorn(1, "asyncio", "h11", access_log=True),
    ),
    (
        "uvicorn asyncio + h11, access log, 2 workers",
        2,
        _uvicorn(2, "asyncio", "h11", access_log=True),
    ),
    (
        "uvicorn uvloop + httptools, no access log, 1 worker",
        1,
        _uvicorn(1, "uvloop", "httptools", access_log=False),
    ),
    (
        "uvicorn uvloop + httptools, no access log, 2 workers",
        2,
        _uvicorn(2, "uvloop", "httptools", access_log=False),
    ),
    ("granian (ASGI, uvloop, HTTP/1, access log), 1 worker", 1, _granian(1)),
    ("granian (ASGI, uvloop, HTTP/1, access log), 2 workers", 2, _granian(2)),
    ("hypercorn (uvloop, access log), 1 worker", 1, _hypercorn(1)),
]
OPTIONAL = {"granian": "granian", "hypercorn": "hypercorn"}  # label prefix -> module


def run(*, tmp: Path, seconds: float, quick: bool) -> list[Row]:
    http_load.wrk_path()
    rows: list[Row] = []
    reference: float | None = None
    for number, (label, workers, command) in enumerate(VARIANTS):
        module = next((m for prefix, m in OPTIONAL.items() if label.startswith(prefix)), None)
        if module is not None and importlib.util.find_spec(module) is None:
            rows.append(Row(f"stack: {label}", f"skipped: {module} is not installed"))
            continue
        folder = tmp / f"stack-{number}"
        folder.mkdir(parents=True, exist_ok=True)
        vault = make_vault(folder / "home")
        with Server(vault, workers=workers, command=command) as server:
            scripts = http_load.write_scripts(vault, [], folder)
            http_load.run_wrk(server.url + "/healthz", scripts.healthz, connections=4, seconds=1)
            healthz = http_load.run_wrk(
                server.url + "/healthz", scripts.healthz, connections=CONNECTIONS, seconds=seconds
            )
            token = http_load.run_wrk(
                server.url + "/v1/token", scripts.token, connections=CONNECTIONS, seconds=seconds
            )
        if reference is None:
            reference = healthz.rate
        rows.append(
            Row(
                path=f"stack: {label}",
                note=f"{CONNECTIONS} conns",
                measured=f"/healthz {healthz.text('req')}; /v1/token {token.text('tokens')}",
                primitive=f"/healthz of the first variant {reference:,.0f} req/s",
                ratio=f"{healthz.rate / reference:.0%} / token {token.rate / healthz.rate:.0%} "
                "of its /healthz",
            )
        )
    return rows
