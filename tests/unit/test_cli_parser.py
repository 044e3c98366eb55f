"""The pinned CLI forms parse (SPEC §10), without running anything."""

from __future__ import annotations

import pytest

from vault.cli import main as cli
from vault.cli.main import build_parser
from vault.ops.credentials import new_credential


@pytest.mark.parametrize(
    "argv",
    [
        ["principals", "create", "bot", "--role", "delegator", "auditor"],
        ["principals", "create", "bot", "--role", "delegator", "--role", "auditor"],
    ],
)
def test_several_roles_in_either_form(argv):
    assert build_parser().parse_args(argv).role == ["delegator", "auditor"]


def test_an_unknown_role_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["principals", "create", "bot", "--role", "root"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("dvault: error:")


def test_an_unexpected_error_is_one_line_without_a_traceback_or_a_secret(
    capsys, monkeypatch, tmp_path
):
    credential = new_credential()

    def broken(_settings, _args):
        raise RuntimeError(f"something broke near {credential}\nsecond line")

    monkeypatch.setenv("VAULT_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "_command", lambda _target: broken)
    assert cli.main(["principals", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("dvault: error: unexpected error (RuntimeError): something broke near")
    assert credential not in err
    assert "Traceback" not in err
