"""Two inits of one database at once: one wins, and the other leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from vault.config import Settings, load_settings
from vault.errors import AlreadyInitialized
from vault.ops import setup
from vault.ops.runtime import open_database


def test_the_loser_of_two_inits_at_once_leaves_no_key_file_behind(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each init has made its own key file (no key configured) when the other commits between
    its first check and its job: the loser is refused and removes its key, which seals nothing
    (left behind, its home would later fail with "the master key does not match")."""

    def home(name: str) -> Settings:
        return load_settings(
            {"VAULT_HOME": str(tmp_path / name), "VAULT_DATABASE_URL": database_url}
        )

    winner, loser = home("winner"), home("loser")
    make_key = setup._master_key

    def then_the_other_init(settings: Settings) -> tuple[bytes, Path | None]:
        made = make_key(settings)
        if settings is loser:
            setup.init_vault(winner)  # commits after the loser's check, before its job
        return made

    monkeypatch.setattr(setup, "_master_key", then_the_other_init)

    with pytest.raises(AlreadyInitialized):
        setup.init_vault(loser)

    assert not loser.master_key_file.exists()
    assert winner.master_key_file.exists()
    open_database(winner).dispose()  # the winner's key is the vault's


def test_the_loser_keeps_a_key_file_the_winner_found_and_used(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two inits in one home: the first makes the key file, the second finds it and, using it,
    wins. The loser must not remove the file: it is the vault's master key now."""
    settings = load_settings(
        {"VAULT_HOME": str(tmp_path / "home"), "VAULT_DATABASE_URL": database_url}
    )
    make_key = setup._master_key
    raced: list[bool] = []

    def then_the_other_init(given: Settings) -> tuple[bytes, Path | None]:
        made = make_key(given)
        if not raced:
            raced.append(True)
            setup.init_vault(given)  # finds the key file just made, and uses it
        return made

    monkeypatch.setattr(setup, "_master_key", then_the_other_init)

    with pytest.raises(AlreadyInitialized):
        setup.init_vault(settings)

    assert settings.master_key_file.exists()
    open_database(settings).dispose()  # still the vault's key
