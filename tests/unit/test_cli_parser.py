"""The pinned CLI forms parse (SPEC §10), without running anything."""

from __future__ import annotations

import pytest

from vault.cli.main import build_parser


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
