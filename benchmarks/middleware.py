"""The verifier middleware's local check, in process (no HTTP): ``DelegationMiddleware._verify``.

Tokens are real: signed by a real initialized vault's token key (``jws.sign``, as issuance
does). The JWKS reaches the middleware through ``httpx.MockTransport`` (in memory) once, before
timing; after that ``_verify`` makes no I/O. Two rows:

- first sight: every token is new to the middleware (a fresh ``SeenTokens`` per round), so each
  call parses, verifies one Ed25519 signature and checks the claims; bound: one raw verify;
- seen before: the same tokens again, each a ``SeenTokens`` hit.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.primitives import Primitives
from benchmarks.report import Row
from benchmarks.timing import fmt_us
from benchmarks.vaults import SUBJECT_ID, make_vault
from vault.middleware.seen import SeenTokens
from vault.middleware.verifier import DelegationMiddleware, VerifierConfig
from vault.ops.runtime import open_vault
from vault.tokens import jws
from vault.tokens.claims import build_claims

FIRST_SIGHT_GOAL = 1.3  # x one raw Ed25519 verify
SEEN_GOAL_S = 10e-6


class _NoUsers:
    def resolved_role(self, state: Any) -> str | None:
        return None  # the middleware then checks the user through native_token

    async def native_token(
        self, user_id: str, *, not_after: int, role: str | None = None, checked: bool = True
    ) -> str:
        raise AssertionError("not reached: only _verify is measured")


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("not reached: only _verify is measured")


def _tokens(home: Path, count: int) -> tuple[list[str], dict[str, object], str, str]:
    bench = make_vault(home)
    vault = open_vault(bench.settings)
    try:
        key = vault.keys.token_signing()
        jwks, _ = vault.keys.published()
        now = int(time.time())
        tokens = [
            jws.sign(
                build_claims(
                    issuer=bench.settings.issuer,
                    audience=bench.settings.audience,
                    subject_id=SUBJECT_ID,
                    actor_id=bench.delegator_id,
                    scope=("chat", "models:read"),
                    ttl_seconds=3600,
                    now=now,
                ),
                key,
            )
            for _ in range(count)
        ]
    finally:
        vault.close()
    return tokens, jwks, bench.settings.issuer, bench.settings.audience


async def _measure(
    tokens: list[str], jwks: dict[str, object], issuer: str, audience: str, rounds: int
) -> tuple[float, float]:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=jwks)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        middleware = DelegationMiddleware(
            _app,
            config=VerifierConfig(
                vault_url="http://127.0.0.1:9",
                credential="dv_unused",
                issuer=issuer,
                audience=audience,
            ),
            mapper=_NoUsers(),
            http=http,
        )
        await middleware._verify(tokens[0])  # loads the JWKS (in memory), warms the path
        first: list[float] = []
        seen: list[float] = []
        deadline = time.perf_counter() + 20
        for _ in range(rounds):
            middleware.seen = SeenTokens(capacity=len(tokens) + 1)
            start = time.perf_counter()
            for token in tokens:
                await middleware._verify(token)
            first.append((time.perf_counter() - start) / len(tokens))
            start = time.perf_counter()
            for token in tokens:
                await middleware._verify(token)
            seen.append((time.perf_counter() - start) / len(tokens))
            if time.perf_counter() > deadline:
                break
    return statistics.median(first), statistics.median(seen)


def run(*, tmp: Path, primitives: Primitives, quick: bool) -> list[Row]:
    tokens, jwks, issuer, audience = _tokens(tmp / "middleware" / "home", 500 if quick else 2000)
    first, seen = asyncio.run(_measure(tokens, jwks, issuer, audience, 3 if quick else 7))
    verify = primitives.verify_s
    return [
        Row(
            path="middleware _verify, first sight of a token",
            measured=f"{fmt_us(first)} per request",
            primitive=f"raw Ed25519 verify {fmt_us(verify)}",
            ratio=f"{first / verify:.2f}x",
            goal=f"≤ {FIRST_SIGHT_GOAL}x raw verify",
            met=first <= FIRST_SIGHT_GOAL * verify,
        ),
        Row(
            path="middleware _verify, token seen before",
            measured=f"{fmt_us(seen)} per request",
            primitive=f"raw Ed25519 verify {fmt_us(verify)}",
            ratio=f"{seen / verify:.3f}x",
            goal=f"≤ {fmt_us(SEEN_GOAL_S)}",
            met=seen <= SEEN_GOAL_S,
        ),
    ]
