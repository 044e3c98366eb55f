"""The Open WebUI mapper's own checks that need no Open WebUI (its reads of users are tested
end to end against the real one, ``tests/e2e``)."""

from __future__ import annotations

import asyncio

import pytest

from vault.errors import ExpiredToken
from vault.integrations.openwebui.mapper import OpenWebUIMapper
from vault.middleware import DelegationExpired, UnknownUser

NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("not_after", "now"), [(NOW, NOW), (NOW - 1, NOW), (NOW - 3600, NOW), (NOW, NOW - 0.5)]
)
@pytest.mark.parametrize("checked", [True, False])
def test_a_delegation_at_or_past_its_exp_is_refused_as_expired(
    not_after: int, now: float, checked: bool
) -> None:
    """Before anything of Open WebUI is read (none is installed here): at or past ``exp``, or
    less than the shortest token Open WebUI mints (a second) before it, the refusal says the
    token expired (401 ``expired_token`` from the middleware), not that the user is unknown;
    and no token outliving the delegation is minted."""
    mapper = OpenWebUIMapper(now=lambda: float(now))

    with pytest.raises(DelegationExpired) as refused:
        asyncio.run(mapper.native_token("u-1", not_after=not_after, checked=checked))

    assert refused.value.code == ExpiredToken.code == "expired_token"
    assert isinstance(refused.value, UnknownUser)  # the mapper's protocol: what it may raise
