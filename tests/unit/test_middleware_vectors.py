"""Every named token attack vector, sent through the verifier middleware as an ASGI request.

The vault's introspection and the middleware share one verifier (``vault.tokens.jws``); this runs
the same vectors through the middleware itself: a vector that is recognizably ours (``typ:
at+jwt`` naming this vault's issuer, or no readable one) is refused with 401 and the exact leaf's
code, before any introspection; one that is not (another ``typ``, an unreadable header, another
``iss``) is handed to the app untouched, whose own authentication refuses it (SPEC §8: only
delegation tokens are the middleware's business).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.unit.test_token_vectors import VECTORS
from vault.crypto.keys import public_jwk
from vault.middleware import DelegationMiddleware, VerifierConfig
from vault.middleware.verifier import delegation_header, names_another_issuer

VAULT = "http://vault.test"


class NoMapper:
    def resolved_role(self, state: Any) -> str | None:
        return None  # the middleware then checks the user through native_token

    async def native_token(
        self, user_id: str, *, not_after: int, role: str | None = None, checked: bool = True
    ) -> str:
        raise AssertionError("a refused token must never be mapped to a user")


def run(kit: Any, token: str) -> tuple[int, dict[str, Any] | None, bool, list[str]]:
    """Send one request; returns (status, JSON body, reached the app, vault paths called)."""
    called: list[str] = []

    def vault(request: httpx.Request) -> httpx.Response:
        called.append(request.url.path)
        if request.url.path == "/.well-known/jwks.json":
            return httpx.Response(200, json={"keys": [public_jwk(kit.key.public_key, kit.key.kid)]})
        return httpx.Response(500)  # introspection must not be reached by a refused token

    reached: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def go() -> tuple[int, bytes]:
        http = httpx.AsyncClient(transport=httpx.MockTransport(vault))
        middleware = DelegationMiddleware(
            app,
            config=VerifierConfig(
                vault_url=VAULT, credential="dv_x", issuer=kit.issuer, audience=kit.audience
            ),
            mapper=NoMapper(),
            http=http,
            now=lambda: kit.now,
        )
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/api/models",
            "headers": [(b"authorization", f"Bearer {token}".encode("latin-1"))],
            "client": ("127.0.0.1", 1),
        }
        await middleware(scope, receive, send)
        await http.aclose()
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], body

    status, body = asyncio.run(go())
    parsed = json.loads(body) if body and body != b"{}" else None
    return status, parsed, bool(reached), called


# Whitespace around a header value is HTTP framing (RFC 9110 §5.5), not part of the credential:
# " <token>" in a header is the token itself. The vector stays a refusal for jws.verify.
HTTP_TRIMMED = {"leading-space"}


@pytest.mark.parametrize("name", [n for n in VECTORS if n not in HTTP_TRIMMED])
def test_vector_is_refused_by_the_middleware(kit, name):
    build, error = VECTORS[name]
    token = build(kit)
    status, body, reached_app, called = run(kit, token)
    assert "/v1/introspect" not in called  # forgeries never reach the vault's use records
    header = delegation_header(token)
    # Ours to judge: naming this issuer, or naming one of the vault's keys whatever its iss
    # (a mismatched VAULT_ISSUER shows as wrong_issuer, never as tokens passed on unchecked).
    ours = header is not None and (
        not names_another_issuer(token, kit.issuer) or header.get("kid") == kit.key.kid
    )
    if ours:
        assert (status, reached_app) == (401, False)
        assert body is not None
        assert body["error"] == error.code, f"{name}: {body}"
    else:
        assert reached_app  # not ours: Open WebUI's own authentication decides (and refuses)
        assert status == 401
