"""The shortest path through the product: init, a delegator, a subject, a token, its use."""

from __future__ import annotations

from tests.support import Api


def test_issue_introspect_and_audit(api: Api) -> None:
    api.subject("u-1", "user2@example.com")
    _, delegator = api.principal("support-bot", "delegator")
    _, verifier = api.principal("owui", "verifier")

    issued = api.token(delegator, "user2@example.com", scope="chat")
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]

    used = api.call(
        "POST",
        "/v1/introspect",
        verifier,
        json={
            "token": token,
            "method": "POST",
            "path": "/api/chat/completions",
            "client_ip": "10.0.0.7",
        },
    )
    assert used.json()["active"] is True
    assert used.json()["sub"] == "u-1"

    kinds = [e["type"] for e in api.entries()]
    assert kinds.count("token.issued") == 1
    assert kinds[-1] == "token.used"
    verify = api.call("GET", "/v1/audit/verify", api.owner).json()
    assert verify["ok"] is True
    assert verify["head_seq"] == len(kinds)
