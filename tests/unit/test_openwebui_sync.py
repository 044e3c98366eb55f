"""``subjects sync``: how an Open WebUI user becomes a subject, or is skipped (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from vault.errors import InvalidRequest
from vault.integrations.openwebui.sync import _named, to_subject

USER = {"id": "u-1", "email": "Ann@Example.com", "name": "Ann", "role": "user"}


def test_a_user_becomes_a_subject() -> None:
    subject = to_subject(USER)
    assert (subject.id, subject.email, subject.name, subject.role, subject.active) == (
        "u-1",
        "ann@example.com",
        "Ann",
        "user",
        True,
    )
    assert to_subject({**USER, "role": "pending"}).active is False


@pytest.mark.parametrize("user_id", [None, 7, ["x"], {"id": "u"}, True])
def test_an_id_that_is_not_a_string_is_skipped_not_stringified(user_id: Any) -> None:
    with pytest.raises(InvalidRequest, match="not a string"):
        to_subject({**USER, "id": user_id})


def test_a_user_without_an_id_is_skipped() -> None:
    with pytest.raises(InvalidRequest):
        to_subject({k: v for k, v in USER.items() if k != "id"})


def test_a_skipped_user_is_named_without_secrets_or_control_characters() -> None:
    credential = "dv_" + "A" * 43
    named = _named({"id": f"x{credential}\x1b[2J"})
    assert credential not in named
    assert "\x1b" not in named
    assert len(_named({"id": "u" * 500})) <= 80


def test_a_secret_cut_by_the_shortening_is_still_redacted() -> None:
    credential = "dv_" + "Q" * 43
    named = _named({"id": "x" * 62 + credential})  # the cut at 80 falls inside the credential
    assert "dv_" not in named
    assert "QQQQ" not in named


def test_control_characters_in_a_display_name_become_spaces_not_a_skip() -> None:
    assert to_subject({**USER, "name": "Ann\tLee\x85"}).name == "Ann Lee"
    assert to_subject({**USER, "name": "\x1b"}).name == "Ann@Example.com"  # as given
