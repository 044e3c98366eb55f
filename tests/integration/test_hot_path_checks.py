"""The hot paths' shortcuts never outlive the state they stand for.

Token exchange and introspection authenticate their caller from a short-lived in-process cache,
remember verified signatures, and read what they check once per batch. These tests change the
vault's state behind a running server's back — from a second process's worth of vault (another
``open_vault`` on the same database, whose commits the server's caches never hear of) — and
check that the next request is refused all the same, because the check that counts runs under
the chain lock. And within one batch, a state-changing job sees the rows of the read-only jobs
before it, and the read-only jobs after it see its change.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest

from tests.support import Api, add_principal, introspection_job, next_batch
from vault.config import Settings
from vault.domain import DELEGATOR
from vault.errors import Unauthenticated
from vault.ops import principals, revocation, subjects, tokens
from vault.ops.runtime import Vault, open_vault
from vault.storage import audit_repo, principals_repo, tokens_repo
from vault.tokens import jws


@contextmanager
def other_vault(settings: Settings) -> Iterator[Vault]:
    """The same vault opened a second time: its commits clear none of the server's caches."""
    opened = open_vault(settings)
    try:
        yield opened
    finally:
        opened.close()


def introspect(api: Api, verifier: str, token: str) -> Any:
    return api.call(
        "POST",
        "/v1/introspect",
        verifier,
        json={"token": token, "method": "GET", "path": "/api/v1/auths/"},
    )


@pytest.fixture
def parties(api: Api) -> dict[str, str]:
    api.subject("u-1", "u1@example.com")
    delegator_id, delegator = api.principal("bot", "delegator")
    verifier_id, verifier = api.principal("owui", "verifier")
    return {
        "delegator_id": delegator_id,
        "delegator": delegator,
        "verifier_id": verifier_id,
        "verifier": verifier,
    }


def test_a_delegator_disabled_elsewhere_gets_no_more_tokens(
    api: Api, settings: Settings, parties: dict[str, str]
) -> None:
    first = api.token(parties["delegator"], "u-1", scope="chat")
    assert first.status_code == 200, first.text  # the credential is now in the server's cache
    with other_vault(settings) as elsewhere:
        elsewhere.appender.run(principals.disable_job(parties["delegator_id"], actor=None))

    entries = len(api.entries())
    for subject in ("u-1", "nobody"):
        again = api.token(parties["delegator"], subject, scope="chat")
        # as a credential no longer good anywhere: 401, never "forbidden" (which would say
        # that it is real but disabled), and nothing written (SPEC: a 401 is not audited)
        assert again.status_code == 401, again.text
        assert again.json()["error"] == "unauthorized"
        assert "access_token" not in again.text
    assert len(api.entries()) == entries, api.entries()[entries:]
    issued = api.entries(type="token.issued", actor=parties["delegator_id"])
    assert [e["data"]["jti"] for e in issued] == [first.json()["jti"]]


def test_a_verifier_disabled_elsewhere_can_no_longer_introspect(
    api: Api, settings: Settings, parties: dict[str, str]
) -> None:
    token = api.token(parties["delegator"], "u-1", scope="chat").json()["access_token"]
    assert introspect(api, parties["verifier"], token).json()["active"] is True
    with other_vault(settings) as elsewhere:
        elsewhere.appender.run(principals.disable_job(parties["verifier_id"], actor=None))

    refused = introspect(api, parties["verifier"], token)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "unauthorized"
    assert len(api.entries(type="token.used")) == 1  # the refused call recorded nothing


def test_a_revocation_elsewhere_ends_a_token_whose_signature_is_remembered(
    api: Api, settings: Settings, parties: dict[str, str]
) -> None:
    issued = api.token(parties["delegator"], "u-1", scope="chat").json()
    assert introspect(api, parties["verifier"], issued["access_token"]).json()["active"] is True
    owner = _owner(settings)
    with other_vault(settings) as elsewhere:
        elsewhere.appender.run(revocation.revoke_job(owner, {"jti": issued["jti"]}))

    assert introspect(api, parties["verifier"], issued["access_token"]).json() == {"active": False}
    rejected = api.entries(type="token.rejected", jti=issued["jti"])
    assert [e["data"]["reason"] for e in rejected] == ["revoked_token"]


def _owner(settings: Settings) -> Any:
    with other_vault(settings) as opened, opened.db.read() as session:
        owners = [p for p in principals_repo.list_principals(session) if p.has("owner")]
    return owners[0]


# --- one batch: read-only jobs and state-changing jobs interleaved ----------------------------


def _delegator_and_subject(vault: Vault) -> Any:
    new = add_principal(vault, "bot", DELEGATOR)
    subject = subjects.parse_subject(
        "u-1", {"email": "u1@example.com", "name": "U", "role": "user"}
    )
    vault.appender.run(subjects.upsert_job(subject, actor=None))
    return new.principal


def _issue(vault: Vault, caller: Any) -> Any:
    body = {"subject": "u-1", "scope": "chat", "reason": "TICKET-1 batch test"}
    job = tokens.issue_job(vault.settings, vault.scopes, vault.keys, caller, body, None)
    return vault.appender.submit(job, read_only=True)


def test_a_revocation_sees_the_tokens_issued_before_it_in_its_batch(vault: Vault) -> None:
    caller = _delegator_and_subject(vault)
    with next_batch(vault):
        issued = _issue(vault, caller)
        revoked = vault.appender.submit(revocation.revoke_job(caller, {"subject": "u-1"}))
    jti = issued.result(30).claims.jti
    assert revoked.result(30) == 1
    with vault.db.read() as session:
        assert tokens_repo.token_state(session, jti).state == tokens_repo.REVOKED


def test_a_read_only_job_sees_a_change_made_before_it_in_its_batch(vault: Vault) -> None:
    caller = _delegator_and_subject(vault)
    with next_batch(vault):
        before = _issue(vault, caller)  # reads (and remembers) the delegator as enabled
        disabled = vault.appender.submit(principals.disable_job(caller.id, actor=None))
        after = _issue(vault, caller)
    jti = before.result(30).claims.jti
    assert disabled.result(30)["revoked"] == 1  # the token issued just before, in the batch
    with pytest.raises(Unauthenticated):  # a disabled principal's credential is no longer good
        after.result(30)
    with vault.db.read() as session:
        assert tokens_repo.token_state(session, jti).state == tokens_repo.REVOKED


def test_introspections_of_one_batch_each_see_their_own_tokens_state(vault: Vault) -> None:
    """A batch of introspections reads its tokens' states in one query (declared reads): each
    answer is still its own token's state, live, revoked or never issued here."""
    caller = _delegator_and_subject(vault)
    live, revoked = (_issue(vault, caller).result(30) for _ in range(2))
    assert vault.appender.run(revocation.revoke_job(caller, {"jti": revoked.claims.jti})) == 1
    verifier = add_principal(vault, "owui", "verifier").principal
    # signed by the vault's key, but never recorded as issued (as if from a lost database)
    claims = replace(live.claims, jti="never-issued-jti-000000")
    unknown = jws.sign(claims, vault.keys.token_signing())
    # signed by the vault's key with an issued jti, but not as issued (a later exp)
    stretched = jws.sign(replace(live.claims, exp=live.claims.exp + 60), vault.keys.token_signing())

    async def introspect_together() -> list[Any]:
        waiters = []
        for token in (
            live.access_token,
            revoked.access_token,
            unknown,
            stretched,
            live.access_token,
        ):
            job, reads = introspection_job(vault, verifier, token, "GET", "/api/v1/chats/")
            assert [(name, key) for name, _load, key in reads] == [("token", token_jti(token))]
            waiters.append(vault.appender.submit_async(job, read_only=True, reads=reads))
        return list(await asyncio.gather(*waiters))

    answers = asyncio.run(introspect_together())  # one turn of the loop: one group, one batch
    assert [answer["active"] for answer in answers] == [True, False, False, False, True]
    rejected = [
        e.data["reason"]
        for e in audit_repo.query_entries(vault.db, audit_repo.EntryFilter(type="token.rejected"))
    ]
    # revoked; never issued here; not as issued
    assert rejected == ["revoked_token", "unknown_token", "unknown_token"]


def token_jti(token: str) -> str:
    part = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["jti"])
