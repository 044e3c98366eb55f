"""Shared fixtures: every storage-touching test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support import Api, LiveServer, MovableClock, make_settings, postgres_database
from vault.config import Settings
from vault.ops.runtime import Vault, open_vault
from vault.ops.setup import InitResult, init_vault

# No test asserts on time: Hypothesis's default 200 ms deadline per example would be one, and it
# fails at random on a loaded 2-core machine (CI runs the suite beside a real Open WebUI).
hypothesis_settings.register_profile("vault", deadline=None)
hypothesis_settings.load_profile("vault")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'vault.db'}"
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path / "home", database_url)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def initialized(settings: Settings) -> InitResult:
    return init_vault(settings)


@pytest.fixture
def api(settings: Settings, clock: MovableClock, initialized: InitResult) -> Iterator[Api]:
    with LiveServer(settings, clock) as server:
        client = Api(server.url, initialized.credential)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
def vault(settings: Settings, initialized: InitResult) -> Iterator[Vault]:
    """An initialized vault opened in this process, its appender thread running."""
    opened = open_vault(settings, background=True)
    try:
        yield opened
    finally:
        opened.close()
